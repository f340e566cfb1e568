"""Closed-loop and open-loop load, and the numbers each run yields.

Closed loop: `concurrency` workers, each sending its next request when the previous
one is answered (throughput at a fixed number of requests in flight).
Open loop: requests arrive by a Poisson process at `rate` per second whatever the
answers do (latency at an offered load, queueing included); the arrival times come
from a seeded generator, so every target sees the same schedule.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genai_bench.targets import FRONTEND_CPU_KEY, Sample, Target
from genai_bench.workload import FEATURES, WorkItem


@dataclass(frozen=True)
class Load:
    mode: str  # "closed" or "open"
    value: float  # concurrency or requests/s

    @property
    def label(self) -> str:
        return f"c={int(self.value)}" if self.mode == "closed" else f"{self.value:g} req/s"

    def as_dict(self) -> dict[str, Any]:
        key = "concurrency" if self.mode == "closed" else "rate"
        return {"mode": self.mode, key: int(self.value) if self.mode == "closed" else self.value}


@dataclass
class RunResult:
    load: Load
    samples: list[Sample]
    wall_s: float
    server_before: dict[str, float] | None = None
    server_after: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _loadavg() -> float | None:
    """The machine's 1-minute load average: other work on the machine shows here."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


async def closed_loop(target: Target, items: Sequence[WorkItem], concurrency: int) -> RunResult:
    pending = list(reversed(items))
    samples: list[Sample] = []

    async def worker() -> None:
        while pending:
            samples.append(await target.call(pending.pop()))

    before = await target.snapshot()
    load_before = _loadavg()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    wall = time.perf_counter() - t0
    return RunResult(
        Load("closed", concurrency),
        samples,
        wall,
        before,
        await target.snapshot(),
        {"loadavg_1m_before_after": [load_before, _loadavg()]},
    )


def arrival_offsets(count: int, rate: float, seed: int) -> list[float]:
    """Seconds after the start at which each of `count` requests arrives (Poisson)."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        out.append(t)
        t += rng.expovariate(rate)
    return out


async def open_loop(target: Target, items: Sequence[WorkItem], rate: float, seed: int) -> RunResult:
    offsets = arrival_offsets(len(items), rate, seed)
    before = await target.snapshot()
    t0 = time.perf_counter()

    async def one(item: WorkItem, at: float) -> Sample:
        await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
        return await target.call(item)

    load_before = _loadavg()
    samples = list(await asyncio.gather(*(one(i, at) for i, at in zip(items, offsets))))
    wall = time.perf_counter() - t0
    return RunResult(
        Load("open", rate),
        samples,
        wall,
        before,
        await target.snapshot(),
        {
            "offered_rate": rate,
            "arrival_span_s": offsets[-1] if offsets else 0.0,
            "loadavg_1m_before_after": [load_before, _loadavg()],
        },
    )


# --- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _dist(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "mean": sum(values) / len(values) if values else None,
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
    }


def tpot(s: Sample) -> float | None:
    """Time per output token after the first visible text (streaming samples)."""
    if s.ttft is None or s.output_tokens < 2:
        return None
    return max(0.0, s.e2e - s.ttft) / (s.output_tokens - 1)


def _delta(
    before: dict[str, float] | None, after: dict[str, float] | None, name: str
) -> float | None:
    if before is None or after is None or name not in after:
        return None
    return after[name] - before.get(name, 0.0)


def summarize(run: RunResult) -> dict[str, Any]:
    """Throughput, latency distributions, queue time, cache hits and errors of a run."""
    samples = run.samples
    ok = [s for s in samples if s.ok]
    streaming = [s for s in ok if s.ttft is not None]
    gaps = [b - a for s in streaming for a, b in zip(s.chunk_times, s.chunk_times[1:])]
    tpots = [t for t in (tpot(s) for s in streaming) if t is not None]
    out_tokens = sum(s.output_tokens for s in ok)
    prompt_tokens = sum(s.prompt_tokens for s in ok)
    cached = sum(s.cached_tokens for s in ok)
    queue = [s.queue_s for s in ok if s.queue_s is not None]
    summary: dict[str, Any] = {
        "load": run.load.as_dict(),
        "requests": len(samples),
        "completed": len(ok),
        "errors": len(samples) - len(ok),
        "error_kinds": sorted({(s.error or "")[:120] for s in samples if not s.ok}),
        "wall_s": run.wall_s,
        "req_per_s": len(ok) / run.wall_s if run.wall_s > 0 else None,
        "output_tok_per_s": out_tokens / run.wall_s if run.wall_s > 0 else None,
        "output_tokens": out_tokens,
        "prompt_tokens": prompt_tokens,
        "cached_prompt_fraction": cached / prompt_tokens if prompt_tokens else None,
        "e2e_s": _dist([s.e2e for s in ok]),
        # Streaming requests only: first visible text, per-token pace, gaps between pieces.
        "ttft_s": _dist([s.ttft for s in streaming if s.ttft is not None]),
        "tpot_s": _dist(tpots),
        "itl_s": _dist(gaps),
        # Unary requests: end-to-end latency per output token (TTFT = latency there).
        "latency_per_token_s": _dist(
            [s.e2e / s.output_tokens for s in ok if s.ttft is None and s.output_tokens]
        ),
        "first_token_s": _dist([s.first_token for s in ok if s.first_token is not None]),
        "queue_s": _dist(queue) if queue else None,
        **run.extra,
    }
    for name in ("genai_queue_time_seconds", "vllm:request_queue_time_seconds"):
        q_sum = _delta(run.server_before, run.server_after, f"{name}_sum")
        q_count = _delta(run.server_before, run.server_after, f"{name}_count")
        if summary["queue_s"] is None and q_sum is not None and q_count:
            summary["queue_s"] = {
                "mean": q_sum / q_count,
                "p50": None,
                "p90": None,
                "p99": None,
                "source": f"server {name} (mean over the run)",
            }
    cpu = _delta(run.server_before, run.server_after, FRONTEND_CPU_KEY)
    if cpu is not None:
        summary["frontend_cpu_s"] = cpu
        summary["frontend_cpu_per_output_token_s"] = cpu / out_tokens if out_tokens else None
    pauses = _delta(run.server_before, run.server_after, "genai_gc_pause_seconds_count")
    short = _delta(run.server_before, run.server_after, 'genai_gc_pause_seconds_bucket{le="0.02"}')
    if pauses is not None and short is not None:
        summary["gc_pauses"] = pauses
        summary["gc_pauses_over_20ms"] = pauses - short
    hits = _delta(run.server_before, run.server_after, "vllm:prefix_cache_hits_total")
    queries = _delta(run.server_before, run.server_after, "vllm:prefix_cache_queries_total")
    if hits is not None and queries:
        summary["server_prefix_cache_hit_rate"] = hits / queries
    accepted = _delta(
        run.server_before, run.server_after, "vllm:spec_decode_num_accepted_tokens_total"
    )
    drafted = _delta(run.server_before, run.server_after, "vllm:spec_decode_num_draft_tokens_total")
    if accepted is not None and drafted:
        summary["spec_acceptance_rate"] = accepted / drafted
    elif run.server_after and "genai_spec_decode_acceptance_ratio" in run.server_after:
        summary["spec_acceptance_rate"] = run.server_after["genai_spec_decode_acceptance_ratio"]
    per_feature: dict[str, Any] = {}
    for f in FEATURES:
        chosen = [s for s in ok if s.feature == f]
        if not chosen:
            continue
        per_feature[f] = {
            "completed": len(chosen),
            "errors": sum(1 for s in samples if s.feature == f and not s.ok),
            "e2e_s": _dist([s.e2e for s in chosen]),
            "ttft_s": _dist([s.ttft for s in chosen if s.ttft is not None]),
            "first_token_s": _dist([s.first_token for s in chosen if s.first_token is not None]),
            "output_tokens_mean": sum(s.output_tokens for s in chosen) / len(chosen),
            "prompt_tokens_mean": sum(s.prompt_tokens for s in chosen) / len(chosen),
            "cached_prompt_tokens_mean": sum(s.cached_tokens for s in chosen) / len(chosen),
            "latency_per_token_s": _dist(
                [s.e2e / s.output_tokens for s in chosen if s.output_tokens]
            ),
        }
    summary["per_feature"] = per_feature
    # Compact per-request rows, for checking that targets produced the same outputs.
    summary["samples"] = {
        "columns": [
            "index",
            "feature",
            "ok",
            "e2e_s",
            "ttft_s",
            "output_tokens",
            "prompt_tokens",
            "cached_tokens",
        ],
        "rows": [
            [
                s.index,
                s.feature,
                s.ok,
                round(s.e2e, 4),
                None if s.ttft is None else round(s.ttft, 4),
                s.output_tokens,
                s.prompt_tokens,
                s.cached_tokens,
            ]
            for s in sorted(samples, key=lambda s: s.index)
        ],
    }
    return summary
