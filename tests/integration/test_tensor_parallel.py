"""tensor_parallel_size: 2 on vLLM's CPU backend: start, serve, report health and metrics,
drain, and leave no worker process behind, whether stopped by SIGTERM or by the engine dying.

Multi-GPU machines are rarely available; the CPU backend runs the same multi-rank code
path (an EngineCore process with one worker process per rank), so start-up, shutdown and
health are exercised here.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from genai_testing.procs import TINY_ENGINE
from genai.search.v1 import search_service_pb2 as search_pb
from genai.search.v1 import search_service_pb2_grpc as search_grpc
from grpc_health.v1 import health_pb2
from metrics_scrape import scrape
from genai_testing.procs import ServerProcess, descendants, engine_core_pid, session_members, start_server

pytestmark = pytest.mark.engine

TP2 = {**TINY_ENGINE, "tensor_parallel_size": 2}


def left_behind(server: ServerProcess, within_s: float) -> list[str]:
    """Processes of the server's session still alive `within_s` after the server exited
    (the server runs in a session of its own, so these are what it orphaned)."""
    deadline = time.monotonic() + within_s
    while True:
        alive = session_members(server.process.pid)
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    out = []
    for pid in alive:
        try:
            out.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_text().replace(chr(0), ' ')[:120]}")
        except OSError:
            pass
    return out


def serving_tp2_server(tmp_path: Path, tiny_model: Path) -> ServerProcess:
    server = start_server(tmp_path, {"model": str(tiny_model), **TP2})
    server.wait_serving(timeout_s=400)
    # The engine core and one worker per rank run below the server.
    assert len(descendants(server.process.pid)) >= 3
    return server


def test_two_rank_engine_serves_drains_and_leaves_no_process(tmp_path: Path, tiny_model: Path) -> None:
    server = serving_tp2_server(tmp_path, tiny_model)
    try:
        with grpc.insecure_channel(server.address) as channel:
            response = search_grpc.SearchServiceStub(channel).UnderstandQuery(
                search_pb.UnderstandQueryRequest(query="staff engineer remote"), timeout=120)
        assert response.usage.output_token_count > 0
        assert server.health("genai.search.v1.SearchService") == health_pb2.HealthCheckResponse.SERVING
        assert scrape(server.metrics_port)["genai_serving"] == 1
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=120)
        assert code == 0, server.log_tail()
        assert left_behind(server, within_s=15) == []
    finally:
        server.stop(timeout_s=5)


def test_engine_killed_with_two_ranks_exits_nonzero_and_leaves_no_process(
    tmp_path: Path, tiny_model: Path
) -> None:
    server = serving_tp2_server(tmp_path, tiny_model)
    try:
        killed_at = time.monotonic()
        os.kill(engine_core_pid(server.process.pid), signal.SIGKILL)
        code = server.process.wait(timeout=90)
        print(f"TP=2 engine core killed: exit {code} after {time.monotonic() - killed_at:.1f}s")
        assert code != 0
        assert left_behind(server, within_s=30) == []
    finally:
        server.stop(timeout_s=5)
