"""One real server (tiny model) for the adversarial tier, and the promises every test checks.

Whatever a client does, the server promises: the call ends by its deadline (or
`admission.max_request_time_s`), the process stays alive and SERVING, the engine is
idle afterwards, no call ends INTERNAL, memory stays bounded. `promises` checks them
after every test; the session's end checks the drain (SIGTERM with a Health.Watch open).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from adversarial_limits import GRACE_S, MAX_REQUEST_TIME_S, RSS_GROWTH_LIMIT, STALL_TIMEOUT_S
from metrics_scrape import scrape
from genai_testing.procs import TINY_ENGINE, ServerProcess, start_server
from genai_testing.tiny_model import write_tiny_model

# STALL_TIMEOUT_S is short, so that a stalled reader outlives the stall watchdog within
# seconds: with the old watchdog one zero-window stream made the process exit 1 after it.


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("adversarial")
    model = write_tiny_model(tmp / "model")
    proc = start_server(
        tmp,
        {"model": str(model), **TINY_ENGINE, "stall_timeout_s": STALL_TIMEOUT_S},
        sections={
            "admission": {"max_request_time_s": MAX_REQUEST_TIME_S, "max_waiting_requests": 16},
            "server": {"shutdown_grace_s": GRACE_S},
        },
    )
    try:
        proc.wait_serving(timeout_s=600)  # a loaded 2-core machine: minutes
        proc.rss_baseline = proc.rss_bytes()  # type: ignore[attr-defined]
        yield proc
        assert proc.process.poll() is None, "the server died during the tier"
        _check_drain(proc)
    finally:
        proc.stop()


def _check_drain(proc: ServerProcess) -> None:
    """SIGTERM with a Health.Watch open: NOT_SERVING, the stream ends, exit 0 in the grace."""
    seen: list[int] = []
    outcome: dict[str, object] = {}
    with grpc.insecure_channel(proc.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=GRACE_S * 3)

        def read() -> None:
            try:
                for response in watch:
                    seen.append(response.status)
                outcome["code"] = watch.code()
            except grpc.RpcError as e:
                outcome["code"] = e.code()

        reader = threading.Thread(target=read)
        reader.start()
        end = time.monotonic() + 10
        while not seen and time.monotonic() < end:
            time.sleep(0.05)
        assert seen, f"no Health.Watch answer: {outcome}"
        started = time.monotonic()
        code = proc.stop(timeout_s=GRACE_S * 3)
        took = time.monotonic() - started
        reader.join(timeout=5)
    (drained,) = [json.loads(line) for line in proc.log().splitlines() if '"event": "drained"' in line]
    print(
        f"drain: calls drained in {drained['drain_s']}s, exit {code} {took:.1f}s after SIGTERM "
        f"(grace {GRACE_S}s), watch saw {seen}, ended {outcome}"
    )
    assert code == 0, proc.log()[-3000:]
    assert seen[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
    # Before the fix the open Watch held the drain until the grace ran out.
    assert outcome.get("code") == grpc.StatusCode.OK
    assert drained["drain_s"] < GRACE_S


def wait_idle(proc: ServerProcess, timeout_s: float = 20) -> dict[str, float]:
    """Metrics once the engine has nothing running or waiting (or the last scrape)."""
    end = time.monotonic() + timeout_s
    while True:
        sample = scrape(proc.metrics_port)
        idle = sample.get("genai_engine_running_requests", 0) == 0 and sample.get(
            "genai_admission_waiting_requests", 0
        ) == 0
        if idle or time.monotonic() > end:
            return sample
        time.sleep(0.25)


@pytest.fixture(autouse=True)
def promises(server: ServerProcess) -> Iterator[None]:
    log_start = len(server.log())
    yield
    assert server.process.poll() is None, f"server exited {server.process.returncode}:\n{server.log()[-3000:]}"
    assert server.health() == health_pb2.HealthCheckResponse.SERVING
    sample = wait_idle(server)
    assert sample.get("genai_engine_running_requests", 0) == 0
    assert sample.get("genai_admission_waiting_requests", 0) == 0
    assert server.rss_bytes() - server.rss_baseline < RSS_GROWTH_LIMIT  # type: ignore[attr-defined]
    # grpc itself logs an error with a trace for each metadata value that is not UTF-8
    # (a raw-bytes request id); noisy, but the call goes on.
    log = "\n".join(line for line in server.log()[log_start:].splitlines() if "Invalid encoding on" not in line)
    for bad in ('"code": "INTERNAL"', "engine_stalled", "never retrieved", "Traceback"):
        assert bad not in log, f"{bad!r} in the server log:\n{log[-3000:]}"
