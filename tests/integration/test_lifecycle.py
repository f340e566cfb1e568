"""Process lifecycle as an orchestrator drives it: SIGTERM under load, a dying engine.

Each test owns its server process, since each ends it.
"""

from __future__ import annotations

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


# Two sequences at a time, so the work each test starts lasts seconds. Each test acts once
# a probe stream has sent its first piece: generation is then certainly under way. A fixed
# sleep was not enough (CI once saw all sixteen calls end within the second), and waiting
# for vLLM's running count on /metrics was not reliable on 2 busy cores (the scrape
# sometimes answered only after every call had ended). The grace lets all of it drain.
MAX_NUM_SEQS = 2
GRACE_S = 60


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
    channel = grpc.insecure_channel(own_server.address)
    stub = msg_grpc.MessagingServiceStub(channel)
    request = msg_pb.RewriteDraftRequest(draft="word " * 100, tone=msg_pb.TONE_FRIENDLY, max_length_chars=1500)
    # Twelve waves of MAX_NUM_SEQS.
    probe = long_stream(stub)
    in_flight = [stub.RewriteDraft.future(request, timeout=120) for _ in range(24)]
    next(probe)
    own_server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    results = [f.exception() for f in in_flight]
    for _ in probe:  # finishes; were it cut off, this would raise
        pass
    code = own_server.process.wait(timeout=60)
    log = own_server.log()
    drained = log[log.index('"shutting_down"') :].count('"rpc_finished"') if '"shutting_down"' in log else 0
    print(f"SIGTERM under load: {results.count(None)}/24 calls completed ({drained} after the signal), exit {code} "
          f"after {time.monotonic() - signalled:.1f}s, health seen: {seen}")
    stop.set()
    watcher.join(timeout=5)
    channel.close()
    assert results == [None] * 24, [r.code() for r in results if r]  # zero failed in-flight calls
    assert drained, "every call ended before the signal: nothing was drained"
    assert code == 0, own_server.log()[-3000:]
    assert health_pb2.HealthCheckResponse.NOT_SERVING in seen, seen  # seen before exit
    assert seen[0] == health_pb2.HealthCheckResponse.SERVING


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
    channel = grpc.insecure_channel(own_server.address)
    stub = msg_grpc.MessagingServiceStub(channel)
    # Eight waves of MAX_NUM_SEQS: the drain certainly outlasts the new call.
    long = msg_pb.RewriteDraftRequest(draft="word " * 300, tone=msg_pb.TONE_FRIENDLY, max_length_chars=2000)
    probe = long_stream(stub)
    in_flight = [stub.RewriteDraft.future(long, timeout=120) for _ in range(16)]
    next(probe)
    own_server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(grpc.RpcError) as info:
        search_grpc.SearchServiceStub(channel).UnderstandQuery(search_pb.UnderstandQueryRequest(query="x"), timeout=10)
    still_running = sum(not f.done() for f in in_flight)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
    assert _error_reason(info.value) == "SERVER_DRAINING"
    assert [f.exception() for f in in_flight] == [None] * 16
    for _ in probe:  # finishes; were it cut off, this would raise
        pass
    assert own_server.process.wait(timeout=60) == 0
    channel.close()
    print(f"refused while draining with SERVER_DRAINING; {still_running}/16 in-flight calls were still running")


def test_killed_engine_fails_calls_and_exits_nonzero(own_server: ServerProcess) -> None:
    channel = grpc.insecure_channel(own_server.address)
    stub = msg_grpc.MessagingServiceStub(channel)
    request = msg_pb.StreamRewriteDraftRequest(draft="word " * 300, tone=msg_pb.TONE_CASUAL, max_length_chars=2000)
    # The pid is looked up before the load (under it, walking /proc took 6 s). Even niced,
    # in CI this process read the probe's first piece 7 s after the server had sent it,
    # when sixteen calls (8 s of work) had all ended: so 24 waves of MAX_NUM_SEQS (about
    # 20 s of work) are queued, and most are still waiting at the kill.
    core = engine_core_pid(own_server.process.pid)
    streams = [long_stream(stub)] + [stub.StreamRewriteDraft(request, timeout=60) for _ in range(47)]
    next(streams[0])
    killed_at = time.monotonic()
    os.kill(core, signal.SIGKILL)
    codes = []
    for stream in streams:
        try:
            for _ in stream:
                pass
            codes.append(grpc.StatusCode.OK)  # it had finished before the kill
        except grpc.RpcError as e:
            codes.append(e.code())
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert grpc.StatusCode.UNAVAILABLE in codes, (codes, own_server.log()[-3000:])
    try:
        search_grpc.SearchServiceStub(channel).UnderstandQuery(search_pb.UnderstandQueryRequest(query="x"), timeout=10)
        raise AssertionError("a call succeeded on a dead engine")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE
    code = own_server.process.wait(timeout=60)
    channel.close()
    print(f"engine killed: in-flight streams ended {[c.name for c in codes]}, a new call got UNAVAILABLE; "
          f"exit {code} {time.monotonic() - killed_at:.1f}s after the kill")
    assert code != 0
    assert time.monotonic() - killed_at < 60
    assert "engine_dead" in own_server.log()


def test_second_sigterm_aborts_remaining_calls(own_server: ServerProcess) -> None:
    channel = grpc.insecure_channel(own_server.address)
    stub = msg_grpc.MessagingServiceStub(channel)
    request = msg_pb.StreamRewriteDraftRequest(draft="word " * 300, tone=msg_pb.TONE_CASUAL, max_length_chars=2000)
    # Sixteen waves of MAX_NUM_SEQS: work certainly remains at the second signal.
    streams = [long_stream(stub)] + [stub.StreamRewriteDraft(request, timeout=120) for _ in range(32)]
    next(streams[0])
    own_server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    signalled = time.monotonic()
    own_server.process.send_signal(signal.SIGTERM)
    code = own_server.process.wait(timeout=60)
    # Well inside the grace period: the second signal cut it short.
    assert time.monotonic() - signalled < 15
    assert code == 0, own_server.log()[-3000:]
    assert "shutdown_forced" in own_server.log()
    ended_with_error = 0
    for s in streams:
        try:
            for _ in s:
                pass
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE), e
            ended_with_error += 1
    assert ended_with_error > 0
    channel.close()
