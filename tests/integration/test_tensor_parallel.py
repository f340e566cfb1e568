"""tensor_parallel_size: 2 on vLLM's CPU backend: start, serve, report health and metrics, drain.

Multi-GPU machines are rarely available; the CPU backend runs the same multi-rank code
path (one worker process per rank), so start-up, shutdown and health are exercised here.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from conftest import TINY_ENGINE
from genai.search.v1 import search_service_pb2 as search_pb
from genai.search.v1 import search_service_pb2_grpc as search_grpc
from grpc_health.v1 import health_pb2
from metrics_scrape import scrape
from genai_testing.procs import start_server

pytestmark = pytest.mark.engine


def test_two_rank_engine_serves_and_drains(tmp_path: Path, tiny_model: Path) -> None:
    server = start_server(tmp_path, {"model": str(tiny_model), **TINY_ENGINE, "tensor_parallel_size": 2})
    try:
        server.wait_serving(timeout_s=400)
        with grpc.insecure_channel(server.address) as channel:
            response = search_grpc.SearchServiceStub(channel).UnderstandQuery(
                search_pb.UnderstandQueryRequest(query="staff engineer remote"), timeout=120)
        assert response.usage.output_token_count > 0
        assert server.health("genai.search.v1.SearchService") == health_pb2.HealthCheckResponse.SERVING
        assert scrape(server.metrics_port)["genai_serving"] == 1
    finally:
        code = server.stop(timeout_s=120)
    assert code == 0, server.log()[-3000:]
