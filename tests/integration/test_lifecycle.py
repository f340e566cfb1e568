"""Process lifecycle as an orchestrator drives it: SIGTERM under load, a dying engine.

Each test owns its server process, since each ends it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from genai_testing.procs import TINY_ENGINE
from genai.messaging.v1 import messaging_service_pb2 as msg_pb
from genai.messaging.v1 import messaging_service_pb2_grpc as msg_grpc
from genai.search.v1 import search_service_pb2 as search_pb
from genai.search.v1 import search_service_pb2_grpc as search_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from genai_testing.procs import SERVE_COMMAND, ServerProcess, engine_core_pid, start_server
from metrics_scrape import scrape

pytestmark = pytest.mark.engine


def watch_health(server: ServerProcess, seen: list[int], stop: threading.Event) -> threading.Thread:
    """Record every status the server's Health.Watch stream reports (one connection, kept open)."""

    def run() -> None:
        with grpc.insecure_channel(server.address) as channel:
            try:
                for response in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=120):
                    seen.append(response.status)
                    if stop.is_set():
                        return
            except grpc.RpcError:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# Two sequences at a time, so the work each test starts lasts seconds. No timing makes
# sure work is still in flight when a test acts: on 2 busy CI cores this process was
# starved long enough for 48 queued calls (30 s of work) to end before it read the first
# piece of one. So tests that need unfinished work freeze the engine core (SIGSTOP) and
# wait until the server holds a call that the frozen engine has not started.
MAX_NUM_SEQS = 2
GRACE_S = 60
LONG_REWRITE = msg_pb.RewriteDraftRequest(draft="word " * 300, tone=msg_pb.TONE_FRIENDLY, max_length_chars=2000)


@contextlib.contextmanager
def engine_frozen(server: ServerProcess, core: int, stub: msg_grpc.MessagingServiceStub) -> Iterator[list[grpc.Future]]:
    """The engine core stopped, and calls admitted that cannot finish until it runs again.

    Yields the calls started while frozen. `core` is looked up before any load (under it,
    walking /proc took 6 s). The core is resumed on leaving, unless it was killed.
    """
    os.kill(core, signal.SIGSTOP)
    try:
        late = [stub.RewriteDraft.future(LONG_REWRITE, timeout=120) for _ in range(2)]
        deadline = time.monotonic() + 60
        while scrape(server.metrics_port).get("genai_admission_waiting_requests", 0) < 1:
            assert time.monotonic() < deadline, "no call reached the server while the engine was frozen"
            time.sleep(0.1)
        yield late
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(core, signal.SIGCONT)


@pytest.fixture()
def own_server(tmp_path: Path, tiny_model: Path):  # type: ignore[no-untyped-def]
    engine = {**TINY_ENGINE, "max_num_seqs": MAX_NUM_SEQS}
    # Niced: with the engine busy on both cores, this process (the client) was starved for
    # seconds at a time, long enough for the work it started to end before it acted on it.
    server = start_server(
        tmp_path,
        {"model": str(tiny_model), **engine, "stall_timeout_s": 30},
        shutdown_grace_s=GRACE_S,
        command=["nice", "-n", "10", *SERVE_COMMAND],
    )
    server.wait_serving(timeout_s=300)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def test_sigterm_under_load_finishes_in_flight_calls(own_server: ServerProcess) -> None:
    seen: list[int] = []
    stop = threading.Event()
    watcher = watch_health(own_server, seen, stop)
    core = engine_core_pid(own_server.process.pid)
    channel = grpc.insecure_channel(own_server.address)
    stub = msg_grpc.MessagingServiceStub(channel)
    request = msg_pb.RewriteDraftRequest(draft="word " * 100, tone=msg_pb.TONE_FRIENDLY, max_length_chars=1500)
    # Twelve waves of MAX_NUM_SEQS.
    probe = long_stream(stub)
    in_flight = [stub.RewriteDraft.future(request, timeout=120) for _ in range(24)]
    next(probe)
    with engine_frozen(own_server, core, stub) as late:
        own_server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        wait_draining(own_server)
    results = [f.exception() for f in in_flight + late]
    for _ in probe:  # finishes; were it cut off, this would raise
        pass
    code = own_server.process.wait(timeout=60)
    log = own_server.log()
    drained = log[log.index('"shutting_down"') :].count('"rpc_finished"') if '"shutting_down"' in log else 0
    print(f"SIGTERM under load: {results.count(None)}/{len(results)} calls completed ({drained} after the signal), "
          f"exit {code} after {time.monotonic() - signalled:.1f}s, health seen: {seen}")
    stop.set()
    watcher.join(timeout=5)
    channel.close()
    assert results == [None] * len(results), [r.code() for r in results if r]  # zero failed in-flight calls
    assert drained >= len(late), "the calls the frozen engine held were not drained"
    assert code == 0, own_server.log()[-3000:]
    assert health_pb2.HealthCheckResponse.NOT_SERVING in seen, seen  # seen before exit
    assert seen[0] == health_pb2.HealthCheckResponse.SERVING


def wait_draining(server: ServerProcess) -> None:
    """Block until the server has taken SIGTERM: its health check says NOT_SERVING."""
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while health.Check(health_pb2.HealthCheckRequest(), timeout=10).status != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "the server did not start draining"
            time.sleep(0.05)


def long_stream(stub: msg_grpc.MessagingServiceStub) -> Iterator[msg_pb.StreamRewriteDraftResponse]:
    """A long rewrite stream, started: `next()` on it returns once it is generating."""
    return stub.StreamRewriteDraft(
        msg_pb.StreamRewriteDraftRequest(draft="word " * 300, tone=msg_pb.TONE_CASUAL, max_length_chars=2000),
        timeout=120,
    )


def _error_reason(error: grpc.RpcError) -> str | None:
    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    for detail in status.details if status else ():
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
            return info.reason
    return None


def test_new_calls_refused_while_draining(own_server: ServerProcess) -> None:
    core = engine_core_pid(own_server.process.pid)
    channel = grpc.insecure_channel(own_server.address)
    stub = msg_grpc.MessagingServiceStub(channel)
    probe = long_stream(stub)
    in_flight = [stub.RewriteDraft.future(LONG_REWRITE, timeout=120) for _ in range(16)]
    next(probe)
    # Frozen, the engine holds calls the drain must wait for: the server is certainly
    # still draining when the new call comes.
    with engine_frozen(own_server, core, stub) as late:
        own_server.process.send_signal(signal.SIGTERM)
        wait_draining(own_server)
        with pytest.raises(grpc.RpcError) as info:
            search_grpc.SearchServiceStub(channel).UnderstandQuery(search_pb.UnderstandQueryRequest(query="x"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
    assert _error_reason(info.value) == "SERVER_DRAINING"
    assert [f.exception() for f in in_flight + late] == [None] * (len(in_flight) + len(late))
    for _ in probe:  # finishes; were it cut off, this would raise
        pass
    assert own_server.process.wait(timeout=60) == 0
    channel.close()


def test_killed_engine_fails_calls_and_exits_nonzero(own_server: ServerProcess) -> None:
    core = engine_core_pid(own_server.process.pid)
    channel = grpc.insecure_channel(own_server.address)
    stub = msg_grpc.MessagingServiceStub(channel)
    request = msg_pb.StreamRewriteDraftRequest(draft="word " * 300, tone=msg_pb.TONE_CASUAL, max_length_chars=2000)
    running = [long_stream(stub)] + [stub.StreamRewriteDraft(request, timeout=60) for _ in range(7)]
    next(running[0])
    with engine_frozen(own_server, core, stub) as late:
        killed_at = time.monotonic()
        os.kill(core, signal.SIGKILL)
    codes = []
    for stream in running:
        try:
            for _ in stream:
                pass
            codes.append(grpc.StatusCode.OK)  # it had finished before the freeze
        except grpc.RpcError as e:
            codes.append(e.code())
    late_codes = [f.exception().code() if f.exception() else grpc.StatusCode.OK for f in late]
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    # The frozen engine never ran them: each must fail, and as retryable.
    assert late_codes == [grpc.StatusCode.UNAVAILABLE] * len(late), (late_codes, own_server.log()[-3000:])
    try:
        search_grpc.SearchServiceStub(channel).UnderstandQuery(search_pb.UnderstandQueryRequest(query="x"), timeout=10)
        raise AssertionError("a call succeeded on a dead engine")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE
    code = own_server.process.wait(timeout=60)
    channel.close()
    print(f"engine killed: streams ended {[c.name for c in codes]}, calls the engine held {[c.name for c in late_codes]}, "
          "a new call got UNAVAILABLE; "
          f"exit {code} {time.monotonic() - killed_at:.1f}s after the kill")
    assert code != 0
    assert time.monotonic() - killed_at < 60
    assert "engine_dead" in own_server.log()


def test_second_sigterm_aborts_remaining_calls(own_server: ServerProcess) -> None:
    core = engine_core_pid(own_server.process.pid)
    channel = grpc.insecure_channel(own_server.address)
    stub = msg_grpc.MessagingServiceStub(channel)
    request = msg_pb.StreamRewriteDraftRequest(draft="word " * 300, tone=msg_pb.TONE_CASUAL, max_length_chars=2000)
    # Sixteen waves of MAX_NUM_SEQS ahead of the calls the frozen engine holds: those
    # are about 20 s of work from their end when the second signal comes.
    streams = [long_stream(stub)] + [stub.StreamRewriteDraft(request, timeout=120) for _ in range(32)]
    next(streams[0])
    with engine_frozen(own_server, core, stub) as late:
        own_server.process.send_signal(signal.SIGTERM)
        wait_draining(own_server)
        signalled = time.monotonic()
        own_server.process.send_signal(signal.SIGTERM)
    code = own_server.process.wait(timeout=60)
    # Well inside the grace period: the second signal cut it short.
    assert time.monotonic() - signalled < 15
    assert code == 0, own_server.log()[-3000:]
    assert "shutdown_forced" in own_server.log()
    for s in streams:  # each either ended before the freeze or was cut off
        try:
            for _ in s:
                pass
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE), e
    late_codes = [f.exception().code() if f.exception() else grpc.StatusCode.OK for f in late]
    # The frozen engine never ran them, and nothing was left to finish after the second signal.
    assert set(late_codes) <= {grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE}, late_codes
    channel.close()
