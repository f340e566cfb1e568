"""The ORCA load report: formula, sliding-window rate, trailer encoding, and the trailer
as a non-C-core client (grpcurl, like Envoy) sees it from a Python grpc.aio server."""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from xds.data.orca.v3 import orca_load_report_pb2

from genai_core.engine.types import EngineStats
from genai_core.grpc_runtime.interceptor import MethodSpec, ServiceInterceptor
from genai_core.grpc_runtime.orca import (
    ORCA_TRAILER_KEY,
    UTILIZATION_FLOOR,
    OrcaLoadReporter,
    application_utilization,
)

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@dataclass
class FakeStats:
    value: EngineStats = field(default_factory=EngineStats)

    def stats(self) -> EngineStats:
        return self.value


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def decode(trailers: list[tuple[str, str | bytes]]) -> orca_load_report_pb2.OrcaLoadReport:
    ((key, value),) = trailers
    assert key == ORCA_TRAILER_KEY
    assert isinstance(value, bytes)
    return orca_load_report_pb2.OrcaLoadReport.FromString(value)


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (EngineStats(), UTILIZATION_FLOOR),  # idle: positive floor, never 0
        (EngineStats(running_requests=2), 0.5),  # half the batch
        (EngineStats(running_requests=1, kv_cache_usage=0.9), 0.9),  # KV cache is the tighter limit
        (EngineStats(running_requests=4, kv_cache_usage=0.3), 1.0),  # full batch, nothing waiting
        (
            EngineStats(running_requests=4, waiting_requests=8, kv_cache_usage=0.5),
            3.0,
        ),  # 2 batches queued
        (EngineStats(running_requests=-1, waiting_requests=-3, kv_cache_usage=7.0), 1.0),  # clamped
    ],
)
def test_application_utilization_formula(stats: EngineStats, expected: float) -> None:
    assert application_utilization(stats, max_num_seqs=4) == pytest.approx(expected)


def test_deep_queue_weighs_much_less_than_idle_at_equal_rate() -> None:
    # Envoy's weight is rps / utilization: equal rates, a deep queue -> a far smaller weight.
    idle = application_utilization(EngineStats(running_requests=1), 16)
    loaded = application_utilization(
        EngineStats(running_requests=16, waiting_requests=48, kv_cache_usage=0.8), 16
    )
    assert loaded / idle >= 50


def test_trailer_carries_report_with_named_metrics() -> None:
    stats = FakeStats(EngineStats(waiting_requests=6, running_requests=4, kv_cache_usage=0.25))
    clock = FakeClock()
    reporter = OrcaLoadReporter(stats, max_num_seqs=4, clock=clock)
    clock.now += 20
    report = decode(reporter())
    assert report.application_utilization == pytest.approx(1.0 + 6 / 4)
    assert dict(report.named_metrics) == {"waiting": 6.0, "running": 4.0, "kv_cache_usage": 0.25}
    assert report.rps_fractional > 0  # the request being answered counts
    # The report follows the engine's latest snapshot.
    stats.value = EngineStats()
    assert decode(reporter()).application_utilization == pytest.approx(UTILIZATION_FLOOR)


def test_rps_over_sliding_window() -> None:
    clock = FakeClock()
    reporter = OrcaLoadReporter(FakeStats(), max_num_seqs=4, window_s=10, clock=clock)
    clock.now += 60  # an old process
    for _ in range(50):  # 5 requests/s for 10 s
        clock.now += 0.2
        reporter.record_request()
    assert reporter.requests_per_second() == pytest.approx(5.0, rel=0.1)
    clock.now += 5  # half the window later: about half the requests are still in it
    assert reporter.requests_per_second() == pytest.approx(2.5, rel=0.25)
    clock.now += 11  # all of them slid out
    assert reporter.requests_per_second() == 0.0
    assert decode(reporter()).rps_fractional == pytest.approx(1 / 10, rel=0.1)


def test_a_scoring_call_counts_as_its_items() -> None:
    clock = FakeClock()
    stats = FakeStats()
    reporter = OrcaLoadReporter(stats, max_num_seqs=4, window_s=10, clock=clock)
    clock.now += 60
    reporter()  # a RankPosts call arrives: 1 so far
    stats.value = EngineStats(score_calls=1, scored_items=100)  # ... and scored 100 candidates
    clock.now += 1
    reporter()  # the next call: 1 + the 99 items beyond the first call's one
    stats.value = EngineStats(score_calls=1, scored_items=100)
    reporter()  # nothing new was scored: 1
    assert reporter.requests_per_second() == pytest.approx(102 / 10, rel=0.1)


def test_rps_of_a_young_process_uses_its_age() -> None:
    clock = FakeClock()
    reporter = OrcaLoadReporter(FakeStats(), max_num_seqs=4, window_s=10, clock=clock)
    clock.now += 2
    for _ in range(4):
        reporter.record_request()
    assert reporter.requests_per_second() == pytest.approx(2.0)


def test_memory_is_bounded_under_many_requests() -> None:
    clock = FakeClock()
    reporter = OrcaLoadReporter(FakeStats(), max_num_seqs=4, window_s=10, clock=clock)
    for _ in range(20_000):
        clock.now += 0.01
        reporter.record_request()
    assert len(reporter._window._counts) <= reporter._window.BUCKETS
    assert reporter.requests_per_second() == pytest.approx(100.0, rel=0.06)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        OrcaLoadReporter(FakeStats(), max_num_seqs=0)
    with pytest.raises(ValueError):
        OrcaLoadReporter(FakeStats(), max_num_seqs=4, window_s=0)


# --- on the wire: a grpc.aio server with our interceptor, read by grpcurl (Go gRPC) ---

PROBE_PROTO = """
syntax = "proto3";
package genai.probe.v1;
message Empty {}
service Probe { rpc Ping(Empty) returns (Empty); }
"""


@pytest.fixture()
def probe_server() -> Iterator[int]:
    """An in-process grpc.aio server with one method our interceptor is told to wrap."""
    reporter = OrcaLoadReporter(
        FakeStats(EngineStats(waiting_requests=3, running_requests=2, kv_cache_usage=0.5)),
        max_num_seqs=2,
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def ping(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b""

    async def start() -> tuple[grpc.aio.Server, int]:
        interceptor = ServiceInterceptor({"genai.probe.v1.Probe/Ping": MethodSpec()}, trailers=[reporter])
        server = grpc.aio.server(interceptors=[interceptor])
        handler = grpc.unary_unary_rpc_method_handler(ping)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("genai.probe.v1.Probe", {"Ping": handler})]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def test_trailer_reaches_a_go_grpc_client(probe_server: int, tmp_path: Path) -> None:
    (tmp_path / "probe.proto").write_text(PROBE_PROTO)
    result = subprocess.run(
        [
            GRPCURL,
            "-v",
            "-plaintext",
            "-import-path",
            str(tmp_path),
            "-proto",
            "probe.proto",
            "-d",
            "{}",
            f"127.0.0.1:{probe_server}",
            "genai.probe.v1.Probe/Ping",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    trailers = result.stdout.split("Response trailers received:", 1)[1]
    match = re.search(rf"^{ORCA_TRAILER_KEY}: (\S+)$", trailers, re.MULTILINE)
    assert match, result.stdout
    raw = match.group(1)
    report = orca_load_report_pb2.OrcaLoadReport.FromString(
        base64.b64decode(raw + "=" * (-len(raw) % 4))
    )
    assert report.application_utilization == pytest.approx(1.0 + 3 / 2)
    assert report.named_metrics["waiting"] == 3.0
    assert report.rps_fractional > 0
    assert re.search(r"^x-request-id: \S+$", trailers, re.MULTILINE)
