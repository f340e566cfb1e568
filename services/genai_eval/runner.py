"""Run every case's calls against a server with bounded concurrency, and judge the answers."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import grpc

from genai_core.grpc_runtime.status import retry_delay_s
from genai_eval.datasets import load_cases
from genai_eval.features import FEATURES, Call, Outcome, to_dict


# A call the server turns away for load (RESOURCE_EXHAUSTED with RetryInfo) is sent again
# after the delay it asks for, as a well-behaved client would: the eval's own calls in
# flight are what fill the queue, and the answer's quality is what is measured. Retried
# calls are counted (`<feature>.retried_calls`).
MAX_ATTEMPTS = 4


async def _run_calls(
    address: str, feature: str, calls: Sequence[Call], concurrency: int, deadline_s: float
) -> list[Outcome]:
    limit = asyncio.Semaphore(concurrency)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = FEATURES[feature].stub(channel)

        async def one(call: Call) -> Outcome:
            async with limit:
                for attempt in range(MAX_ATTEMPTS):
                    started = time.perf_counter()
                    try:
                        response = await getattr(stub, call.method)(call.request, timeout=deadline_s)
                    except grpc.aio.AioRpcError as e:
                        busy = e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                        delay = retry_delay_s(e) if busy else None
                        if delay is not None and attempt + 1 < MAX_ATTEMPTS:
                            await asyncio.sleep(delay)
                            continue
                        latency = time.perf_counter() - started
                        return Outcome(call, latency, e.code().name, e.details() or "", retries=attempt)
                    latency = time.perf_counter() - started
                    return Outcome(call, latency, "OK", response=to_dict(response), retries=attempt)
            raise AssertionError("unreachable: the last attempt returns")

        return list(await asyncio.gather(*(one(c) for c in calls)))


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def evaluate(
    address: str,
    features: Sequence[str],
    splits: Sequence[str],
    concurrency: int = 4,
    deadline_s: float = 300.0,
    case_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the data sets and return the results (what report.write takes).

    Args:
        address: host:port of a `genai serve` with the features' services.
        features: Names from genai_eval.datasets.FEATURES.
        splits: `dev`, `test` or both; each is summarized on its own.
        concurrency: Calls in flight at once.
        deadline_s: gRPC deadline of each call.
        case_ids: Only these cases (e.g. `search-01`); all when empty.

    Returns:
        {"splits": {split: {"metrics": {"feature.metric": value}, "errors_by_code": {...}}},
         "outcomes": [Outcome, ...], "wall_s": {feature: seconds}}
    """
    outcomes: list[Outcome] = []
    wall: dict[str, float] = {}
    for feature in features:
        spec = FEATURES[feature]
        cases = [
            c for c in load_cases(feature, tuple(splits)) if not case_ids or c["id"] in case_ids
        ]
        calls = [call for case in cases for call in spec.calls(case)]
        started = time.perf_counter()
        done = asyncio.run(_run_calls(address, feature, calls, concurrency, deadline_s))
        wall[feature] = time.perf_counter() - started
        for o in done:
            o.judgement = spec.judge(o)
        outcomes.extend(done)
    return {"splits": summarize(outcomes, features, splits), "outcomes": outcomes, "wall_s": wall}


def summarize(
    outcomes: Sequence[Outcome], features: Sequence[str], splits: Sequence[str]
) -> dict[str, Any]:
    """Each split's metrics and error counts from judged outcomes.

    Returns:
        {split: {"metrics": {"feature.metric": value}, "errors_by_code": {"feature:CODE": n}}}
    """
    results: dict[str, Any] = {}
    for split in splits:
        metrics: dict[str, float] = {}
        errors: Counter[str] = Counter()
        for feature in features:
            mine = [
                o for o in outcomes if o.call.case["split"] == split and o.call.feature == feature
            ]
            metrics.update(
                {f"{feature}.{k}": v for k, v in FEATURES[feature].summarize(mine).items()}
            )
            latencies = sorted(o.latency_s for o in mine if o.ok)
            metrics[f"{feature}.latency_p50_s"] = _percentile(latencies, 50)
            metrics[f"{feature}.latency_p95_s"] = _percentile(latencies, 95)
            metrics[f"{feature}.calls"] = len(mine)
            metrics[f"{feature}.retried_calls"] = sum(1 for o in mine if o.retries)
            errors.update(f"{feature}:{o.code}" for o in mine if not o.ok)
        metrics["all.error_calls"] = sum(errors.values())
        results[split] = {"metrics": metrics, "errors_by_code": dict(errors)}
    return results


def rejudge(results_json: dict[str, Any]) -> dict[str, Any]:
    """Judge a stored run (results.json) again with today's checks, without a server.

    For working on the checks themselves: the answers stay, the verdicts are recomputed.
    """
    cases = {(f, c["id"]): c for f in FEATURES for c in load_cases(f)}
    outcomes = []
    for record in results_json["cases"]:
        spec = FEATURES[record["feature"]]
        call = next(
            c
            for c in spec.calls(cases[(record["feature"], record["id"])])
            if c.variant == record["variant"]
        )
        o = Outcome(call, record["latency_s"], record["code"], record["error"], record["response"])
        o.retries = record.get("retries", 0)
        o.judgement = spec.judge(o)
        outcomes.append(o)
    meta = results_json["meta"]
    splits = list(results_json["splits"])
    return {
        "splits": summarize(outcomes, meta["features"], splits),
        "outcomes": outcomes,
        "wall_s": results_json["wall_s"],
    }
