"""Servers as separate processes, as a user or an orchestrator would start them.

Shared by the tests (`genai serve` under signals, Prometheus, Envoy) and the benchmark
(`genai serve` and vLLM's OpenAI server as targets): one free-port helper, one way to
start a logged subprocess and to stop it with everything it spawned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVE_COMMAND = (sys.executable, "-m", "genai_services.host.cli")
"""`genai` run from this interpreter, so the subprocess sees the same sources and venv."""


# vLLM's CPU engine on the tiny test model, sized for a 2-core test machine.
TINY_ENGINE = {
    "max_model_len": 4096,
    "max_num_seqs": 16,
    "enforce_eager": True,
    "dtype": "float32",
    "cpu_kv_cache_space_gib": 1,
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(workdir: Path, **overrides: str) -> dict[str, str]:
    """This process's environment for a server subprocess: vLLM's cache under `workdir`
    (unless already set), unbuffered output, then `overrides`."""
    env = dict(os.environ)
    env.setdefault("VLLM_CACHE_ROOT", str(workdir / "vllm-cache"))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def engine_env(tmp: Path) -> dict[str, str]:
    """Settings that make vLLM's CPU backend fit a 2-core test machine."""
    return server_env(tmp, OMP_NUM_THREADS="2", VLLM_CACHE_ROOT=str(tmp / "vllm-cache"))


@dataclass
class LoggedProcess:
    """A subprocess writing stdout and stderr to `log_path`, in a session of its own so
    that stopping it also takes down the engine processes it spawned."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, cmd: list[str], log_path: Path, env: dict[str, str]) -> LoggedProcess:
        return cls(spawn(cmd, log_path, env), log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log()[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        """Raises RuntimeError, with the log's tail, if the process has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.process.args!r} exited with {self.process.returncode}:\n{self.log_tail(4000)}")

    def rss_bytes(self) -> int:
        """Resident memory of the process itself (an engine runs in a child)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process itself so far (not of its children,
        e.g. vLLM's engine core), from /proc/PID/stat.

        Raises:
            OSError: the process is gone (or this is not Linux).
        """
        return process_cpu_seconds(self.process.pid)

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, then SIGKILL to the whole session after `timeout_s`; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    async def stop_async(self, timeout_s: float = 60) -> int:
        """`stop` without blocking the event loop."""
        return await asyncio.to_thread(self.stop, timeout_s)


def _stat_fields(pid: str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp, session, ...)."""
    try:
        return (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Every living process below `pid` in the process tree."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat_fields(entry.name)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def session_members(sid: int) -> list[int]:
    """Living (not zombie) processes of session `sid`: what a server started with `spawn`
    leaves behind, wherever they were re-parented."""
    out = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat_fields(entry.name)
        if fields is not None and int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def engine_core_pid(server_pid: int) -> int:
    """The vLLM EngineCore process below a `genai serve` process.

    Raises:
        AssertionError: there is none.
    """
    for pid in descendants(server_pid):
        try:
            names = Path(f"/proc/{pid}/comm").read_text() + Path(f"/proc/{pid}/cmdline").read_text()
        except OSError:
            continue
        if "EngineCor" in names:
            return pid
    raise AssertionError("no vLLM EngineCore process found")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads, none of its children), in seconds.

    Raises:
        OSError: no such process (or no /proc).
    """
    fields = _stat_fields(str(pid))
    if fields is None:
        raise ProcessLookupError(pid)
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def spawn(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `cmd` in a new session with its output in `log_path`."""
    return subprocess.Popen(
        cmd, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


@dataclass
class ServerProcess(LoggedProcess):
    """A `genai serve` process and its ports."""

    port: int
    metrics_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def health(self, service: str = "", timeout: float = 2.0) -> int | None:
        """The gRPC health status of `service` ("" for the process), None if unreachable."""
        try:
            with grpc.insecure_channel(self.address) as channel:
                return health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout
                ).status
        except grpc.RpcError:
            return None

    def wait_serving(self, timeout_s: float) -> None:
        """Block until the process reports SERVING.

        Raises:
            RuntimeError: the process exited.
            TimeoutError: not SERVING after `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if self.health() == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.5)
        raise TimeoutError(f"server not SERVING after {timeout_s}s:\n{self.log_tail(4000)}")


def start_server(
    tmp: Path,
    engine: dict[str, object],
    *,
    extra_args: list[str] | None = None,
    command: list[str] | None = None,
    sections: dict[str, Any] | None = None,
    shutdown_grace_s: float = 20,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Write `tmp/config.yaml` for `engine` (+ other `sections`) and start `genai serve` on free ports.

    Args:
        tmp: directory for the config, `server.log` and (by default) vLLM's cache.
        engine: the config's engine section.
        extra_args: appended to `genai serve --config FILE`.
        command: the `genai` command (default: `SERVE_COMMAND`).
        sections: further config sections (admission, logging, ...); a `server` section
            adds to (or overrides) the listener settings, the port stays the helper's.
        shutdown_grace_s: server.shutdown_grace_s.
        env: the subprocess environment (default: `engine_env(tmp)`).

    Returns:
        The started process; call `wait_serving` before using it.
    """
    port, metrics_port = free_port(), free_port()
    config = {
        **(sections or {}),
        "engine": engine,
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "shutdown_grace_s": shutdown_grace_s,
            **(sections or {}).get("server", {}),
        },
        "metrics": {"host": "127.0.0.1", "port": metrics_port},
    }
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp / "server.log"
    cmd = [*(command or SERVE_COMMAND), "serve", "--config", str(config_path), *(extra_args or [])]
    process = spawn(cmd, log_path, env if env is not None else engine_env(tmp))
    return ServerProcess(process, log_path, port, metrics_port)
