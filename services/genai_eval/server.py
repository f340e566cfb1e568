"""Start `genai serve` in its own process for an eval run, on free ports.

Kept small on purpose: the same steps as the tests' process helper (a YAML config,
`python -m genai_services.host.cli serve`, health polled until SERVING), so it can be
pointed at a shared helper once there is one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serving(address: str) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            status = (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(), timeout=2)
                .status
            )
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
def started_server(
    model: str, config: Path | None = None, start_timeout_s: float = 900
) -> Iterator[str]:
    """Run `genai serve` for the duration of the block.

    Args:
        model: `default` or a model directory (engine.model).
        config: A `genai serve` YAML file whose settings apply; the listener and metrics
            ports are always replaced by free local ones.
        start_timeout_s: How long the engine may take to become SERVING.

    Yields:
        The server's address, host:port.

    Raises:
        RuntimeError: the server exited or did not become SERVING in time (with its log's tail).
    """
    settings: dict[str, Any] = yaml.safe_load(config.read_text()) if config else {}
    port = _free_port()
    settings.setdefault("engine", {})["model"] = model
    settings["server"] = {**settings.get("server", {}), "host": "127.0.0.1", "port": port}
    settings["metrics"] = {**settings.get("metrics", {}), "host": "127.0.0.1", "port": _free_port()}
    with tempfile.TemporaryDirectory(prefix="genai-eval-") as tmp:
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(yaml.safe_dump(settings))
        log_path = Path(tmp) / "server.log"
        env = {"OMP_NUM_THREADS": "2", **os.environ, "PYTHONUNBUFFERED": "1"}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "genai_services.host.cli",
                    "serve",
                    "--config",
                    str(config_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        address = f"127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout_s
            while not _serving(address):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-4000:]
                    raise RuntimeError(
                        f"genai serve did not become SERVING (exit {process.poll()}):\n{tail}"
                    )
                time.sleep(1)
            yield address
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
