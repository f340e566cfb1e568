"""A `genai serve` for an eval run, or the wait for one that is already running.

Starting reuses the shared process helper (`genai_testing.procs`): one way to write the
config, pick free ports, start the server in its own session and stop it.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genai_testing.procs import start_server


def _serving(address: str) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
            return status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def wait_serving(address: str, timeout_s: float) -> None:
    """Block until the server at `address` reports SERVING (the model is loaded).

    Raises:
        TimeoutError: it did not within timeout_s.
    """
    deadline = time.monotonic() + timeout_s
    while not _serving(address):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{address} not SERVING after {timeout_s:.0f} s")
        time.sleep(1)


@contextlib.contextmanager
def started_server(model: str, config: Path | None = None, start_timeout_s: float = 900) -> Iterator[str]:
    """Run `genai serve` for the duration of the block.

    Args:
        model: `default` or a model directory (engine.model).
        config: A `genai serve` YAML file whose settings apply; the listener and metrics
            ports are always replaced by free local ones.
        start_timeout_s: How long the engine may take to become SERVING.

    Yields:
        The server's address, host:port.

    Raises:
        RuntimeError: the server exited (with its log's tail).
        TimeoutError: it did not become SERVING in time.
    """
    settings: dict[str, Any] = yaml.safe_load(config.read_text()) if config else {}
    engine = {**settings.pop("engine", {}), "model": model}
    for section in ("server", "metrics"):  # ports and hosts are the helper's
        settings.pop(section, None)
    with tempfile.TemporaryDirectory(prefix="genai-eval-") as tmp:
        server = start_server(Path(tmp), engine, sections=settings)
        try:
            server.wait_serving(start_timeout_s)
            yield server.address
        finally:
            server.stop()
