"""Start `genai serve` as a separate process, as a user or an orchestrator would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc


# vLLM's CPU engine on the tiny test model, sized for a 2-core test machine.
TINY_ENGINE = {
    "max_model_len": 4096,
    "max_num_seqs": 16,
    "enforce_eager": True,
    "dtype": "float32",
    "cpu_kv_cache_space_gib": 1,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def engine_env(tmp: Path) -> dict[str, str]:
    """Settings that make vLLM's CPU backend fit a 2-core test machine."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="2",
        VLLM_CACHE_ROOT=str(tmp / "vllm-cache"),
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """Resident memory of the server process (the engine runs in a child)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def health(self, service: str = "", timeout: float = 2.0) -> int | None:
        try:
            with grpc.insecure_channel(self.address) as channel:
                return health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout
                ).status
        except grpc.RpcError:
            return None

    def wait_serving(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if self.health() == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.5)
        raise TimeoutError(f"server not SERVING after {timeout_s}s:\n{self.log()[-4000:]}")

    def stop(self, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_server(tmp: Path, engine: dict[str, object], *, extra_args: list[str] | None = None,
                 command: list[str] | None = None, sections: dict[str, object] | None = None) -> ServerProcess:
    """Write a config for `engine` (+ other `sections`) and start `genai serve` on free ports."""
    port, metrics_port = free_port(), free_port()
    config = {
        **(sections or {}),
        "engine": engine,
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace_s": 20, **(sections or {}).get("server", {})},
        "metrics": {"host": "127.0.0.1", "port": metrics_port},
    }
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp / "server.log"
    cmd = command or [sys.executable, "-m", "genai_services.host.cli"]
    process = subprocess.Popen(
        [*cmd, "serve", "--config", str(config_path), *(extra_args or [])],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        env=engine_env(tmp),
    )
    return ServerProcess(process, port, metrics_port, log_path)
