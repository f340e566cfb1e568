from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from genai_testing.procs import TINY_ENGINE, ServerProcess, start_server
from genai_testing.tiny_model import write_tiny_model

__all__ = ["TINY_ENGINE"]  # tests import it from here

# vLLM's engine takes ~20-30 s to start on 2 cores: one server serves the whole session.


# Small enough that a burst test can fill the queue, large enough for normal tests: eight
# search calls at once are about 120 engine requests (3 generations and 2 readings of each
# of their entity spans).
SESSION_ADMISSION = {"max_waiting_requests": 128, "max_waiting_prompt_tokens": 200_000}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("server")
    proc = start_server(tmp, {"model": str(tiny_model), **TINY_ENGINE}, sections={"admission": SESSION_ADMISSION})
    try:
        proc.wait_serving(timeout_s=300)
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, f"server exited with {code} on SIGTERM:\n{proc.log()[-3000:]}"


@pytest.fixture(scope="session")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch
