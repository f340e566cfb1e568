"""Metrics, logs and traces move as they should for known traffic (engine double)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import json

import grpc
import pytest
from doubles import FakeEngine, search_answer
from genai.messaging.v1 import messaging_service_pb2 as msg_pb
from genai.messaging.v1 import messaging_service_pb2_grpc as msg_grpc
from genai.search.v1 import search_service_pb2 as search_pb
from genai.search.v1 import search_service_pb2_grpc as search_grpc
from prometheus_client import REGISTRY, CollectorRegistry
from servers import in_process_server

from genai_core.engine.types import EngineStats
from genai_services.messaging import prompts as msg_prompts
from genai_core.observability import tracing
from genai_core.observability.metrics import EngineCollector, GpuCollector

MSG = "genai.messaging.v1.MessagingService"
SEARCH = "genai.search.v1.SearchService"
TEN_WORDS = "one two three four five six seven eight nine ten"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_streamed_call_records_one_ttft_and_n_minus_1_gaps() -> None:
    labels = {"service": MSG, "method": "StreamRewriteDraft"}
    before = {n: value(n, **labels) for n in (
        "genai_time_to_first_token_seconds_count", "genai_inter_token_latency_seconds_count",
        "genai_output_tokens_total")}
    before["genai_requests_total"] = value("genai_requests_total", **labels, code="OK")
    fake = FakeEngine(lambda r: TEN_WORDS, delay_s=0.01)  # ten 1-token chunks
    with in_process_server(fake) as (channel, _):
        parts = list(msg_grpc.MessagingServiceStub(channel).StreamRewriteDraft(
            msg_pb.StreamRewriteDraftRequest(draft="x", tone=msg_pb.TONE_CASUAL, max_length_chars=500)))
    assert "".join(p.text_delta for p in parts) == TEN_WORDS
    assert value("genai_time_to_first_token_seconds_count", **labels) - before["genai_time_to_first_token_seconds_count"] == 1
    assert value("genai_inter_token_latency_seconds_count", **labels) - before["genai_inter_token_latency_seconds_count"] == 9
    assert value("genai_output_tokens_total", **labels) - before["genai_output_tokens_total"] == 10
    assert value("genai_requests_total", **labels, code="OK") - before["genai_requests_total"] == 1
    # The gaps are the double's 10 ms delays, not zeros or totals.
    assert value("genai_inter_token_latency_seconds_bucket", **labels, le="0.005") < value(
        "genai_inter_token_latency_seconds_count", **labels)


def test_requests_counted_by_status_and_latency_observed() -> None:
    labels = {"service": SEARCH, "method": "UnderstandQuery"}
    ok0 = value("genai_requests_total", **labels, code="OK")
    bad0 = value("genai_requests_total", **labels, code="INVALID_ARGUMENT")
    lat0 = value("genai_request_duration_seconds_count", **labels)
    with in_process_server(FakeEngine(search_answer)) as (channel, _):
        stub = search_grpc.SearchServiceStub(channel)
        for _ in range(3):
            stub.UnderstandQuery(search_pb.UnderstandQueryRequest(query="data jobs"))
        for _ in range(2):
            with pytest.raises(grpc.RpcError):
                stub.UnderstandQuery(search_pb.UnderstandQueryRequest(query=""))
    assert value("genai_requests_total", **labels, code="OK") - ok0 == 3
    assert value("genai_requests_total", **labels, code="INVALID_ARGUMENT") - bad0 == 2
    assert value("genai_request_duration_seconds_count", **labels) - lat0 == 5


def test_engine_collector_reports_queue_depth_and_cache_use() -> None:
    registry = CollectorRegistry()
    stats = EngineStats(waiting_requests=7, running_requests=3, kv_cache_usage=0.25,
                        prefix_cache_queries_tokens=200, prefix_cache_hits_tokens=150,
                        spec_draft_tokens=10, spec_accepted_tokens=4)
    registry.register(EngineCollector(lambda: stats, lambda: 5, "m"))
    get = lambda n: registry.get_sample_value(n, {"model": "m"})  # noqa: E731
    assert get("genai_engine_waiting_requests") == 7
    assert get("genai_engine_running_requests") == 3
    assert get("genai_admission_waiting_requests") == 5
    assert get("genai_kv_cache_usage_ratio") == 0.25
    assert get("genai_prefix_cache_hit_ratio") == 0.75
    assert get("genai_spec_decode_acceptance_ratio") == 0.4


def test_gpu_collector_is_silent_without_a_gpu() -> None:
    registry = CollectorRegistry()
    registry.register(GpuCollector())
    names = {m.name for m in registry.collect()}
    assert not any(n.startswith("genai_gpu") for n in names)


class FakeNvml:
    """pynvml's calls the collector makes, for a host with four GPUs."""

    NVML_GPU_UTILIZATION_SAMPLES = 1

    def __init__(self, samples: dict[int, list[tuple[int, int]]], current: dict[int, int]) -> None:
        self.samples, self.current = samples, current

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 4

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        return int(uuid.rsplit("-", 1)[1])

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(used=handle * 1e9, total=141e9)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=self.current[handle])

    def nvmlDeviceGetSamples(self, handle: int, kind: int, last_seen: int) -> tuple[int, list[SimpleNamespace]]:
        assert kind == self.NVML_GPU_UTILIZATION_SAMPLES
        fresh = [(t, v) for t, v in self.samples.get(handle, []) if t > last_seen]
        if not fresh and handle not in self.samples:
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return 1, [SimpleNamespace(timeStamp=t, sampleValue=SimpleNamespace(uiVal=v)) for t, v in fresh]


def gpu_values(monkeypatch: pytest.MonkeyPatch, nvml: FakeNvml, visible: str | None) -> list[dict[str, float]]:
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    collector = GpuCollector(visible=visible)
    registry = CollectorRegistry()
    registry.register(collector)
    scrapes = []
    for _ in range(2):
        scrapes.append({
            f"{s.name}{{{s.labels['gpu']}}}": s.value
            for m in registry.collect() for s in m.samples if s.name.startswith("genai_gpu")
        })
    return scrapes


def test_gpu_labels_follow_the_processes_own_device_order(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml(samples={}, current={0: 0, 1: 0, 2: 50, 3: 100})
    first, _ = gpu_values(monkeypatch, nvml, "3,GPU-uuid-2")
    # CUDA's device 0 is the host's GPU 3, device 1 its GPU 2; GPUs 0 and 1 are not ours.
    assert first["genai_gpu_utilization_ratio{0}"] == 1.0
    assert first["genai_gpu_utilization_ratio{1}"] == 0.5
    assert first["genai_gpu_memory_used_bytes{0}"] == 3e9
    assert "genai_gpu_utilization_ratio{2}" not in first


def test_gpu_utilization_averages_the_samples_since_the_last_scrape(monkeypatch: pytest.MonkeyPatch) -> None:
    # GPU 1 was busy for the whole burst and idle only at its very last sample: the
    # current rate (9 %) would hide the burst, the samples' mean does not.
    nvml = FakeNvml(samples={0: [(10, 100), (20, 100)], 1: [(10, 100), (20, 100), (30, 100), (40, 9)]},
                    current={0: 100, 1: 9, 2: 0, 3: 0})
    first, second = gpu_values(monkeypatch, nvml, None)
    assert first["genai_gpu_utilization_ratio{1}"] == pytest.approx((300 + 9) / 400)
    assert first["genai_gpu_utilization_ratio{0}"] == 1.0
    # Nothing new since: the current rate.
    assert second["genai_gpu_utilization_ratio{1}"] == 0.09
    assert len([k for k in first if k.startswith("genai_gpu_utilization_ratio")]) == 4


def test_traces_join_the_callers_trace() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracing.configure_tracing("test", None, 1.0, exporter=exporter)
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        with in_process_server(FakeEngine(search_answer)) as (channel, _):
            search_grpc.SearchServiceStub(channel).UnderstandQuery(
                search_pb.UnderstandQueryRequest(query="sre"),
                metadata=(("traceparent", f"00-{caller_trace}-00f067aa0ba902b7-01"),),
            )
    finally:
        tracing.disable_tracing()
    (span,) = exporter.get_finished_spans()
    assert span.name == f"{SEARCH}/UnderstandQuery"
    assert format(span.context.trace_id, "032x") == caller_trace
    assert span.parent is not None and format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert span.attributes["rpc.grpc.status_code"] == 0
    assert span.attributes["genai.output_tokens"] > 0


def test_one_log_line_per_request_with_usage() -> None:
    import io
    import logging

    import structlog

    from genai_core.observability.logging import configure_logging

    handlers = logging.getLogger().handlers[:]
    out = io.StringIO()
    configure_logging("info", json=True, stream=out)
    try:
        with in_process_server(FakeEngine(lambda r: TEN_WORDS)) as (channel, _):
            msg_grpc.MessagingServiceStub(channel).RewriteDraft(
                msg_pb.RewriteDraftRequest(draft="x", tone=msg_pb.TONE_CASUAL, max_length_chars=500),
                metadata=(("x-request-id", "abc-1"),),
            )
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = handlers
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    (finished,) = [line for line in lines if line["event"] == "rpc_finished"]
    assert finished["request_id"] == "abc-1"
    assert finished["method"] == "RewriteDraft" and finished["code"] == "OK"
    assert finished["prompt_version"] == msg_prompts.PROMPT_VERSION
    assert finished["output_tokens"] == 10 and finished["prompt_tokens"] > 0
    assert finished["ttft_ms"] is not None and finished["duration_ms"] >= finished["ttft_ms"]
    assert "x" not in {finished.get("prompt"), finished.get("output")}  # no text logged by default


def test_stdlib_errors_keep_their_stack_trace() -> None:
    import io
    import logging

    import structlog

    from genai_core.observability.logging import configure_logging

    handlers = logging.getLogger().handlers[:]
    out = io.StringIO()
    configure_logging("info", json=True, stream=out)
    try:
        try:
            raise ZeroDivisionError("from asyncio")
        except ZeroDivisionError:
            logging.getLogger("asyncio").exception("task_failed")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = handlers
    (line,) = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    # Before: "exc_info" held a repr of the tuple ("<traceback object at ...>").
    assert "Traceback (most recent call last)" in line["exception"]
    assert "ZeroDivisionError: from asyncio" in line["exception"]
