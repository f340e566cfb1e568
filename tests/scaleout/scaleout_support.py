"""Helpers for the scale-out tests: the shipped Envoy config made runnable on loopback,
an Envoy process, and its admin API."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from genai_testing.procs import LoggedProcess, spawn

from genai_services.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
ENVOY_TEMPLATE = DOCKER / "envoy" / "envoy.yaml"
VENV_BIN = Path(sys.executable).parent
ENVOY = str(VENV_BIN / "envoy")
# One Envoy cluster per registered service, named after its deployment.
SERVICE_CLUSTERS = {f"genai-{d.name}": d.full_name for d in REGISTRY.definitions}


def load_envoy_template() -> dict[str, Any]:
    return yaml.safe_load(ENVOY_TEMPLATE.read_text())


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def render_for_loopback(
    template: dict[str, Any],
    *,
    grpc_port: int,
    stats_port: int,
    admin_port: int,
    upstreams: dict[str, list[int]],
) -> dict[str, Any]:
    """The shipped config with only addresses and ports replaced, for a test on 127.0.0.1.

    Service clusters become STATIC (the same DNS cluster would resolve an IP literal, but
    a test must not depend on resolver settings): `upstreams` maps a cluster name to the
    loopback ports of its replicas; clusters not named get no endpoints. Everything that
    decides routing (load balancing policies, health checks, retries, budgets, outlier
    detection, timeouts) is left exactly as shipped; `changed_paths` proves it.
    """
    config = copy.deepcopy(template)
    config["admin"]["address"] = _socket("127.0.0.1", admin_port)
    ports = {"grpc": grpc_port, "stats": stats_port}
    for listener in config["static_resources"]["listeners"]:
        listener["address"] = _socket("127.0.0.1", ports[listener["name"]])
    for cluster in config["static_resources"]["clusters"]:
        name = cluster["name"]
        if name == "envoy-admin":
            endpoints = [admin_port]
        else:
            assert name in SERVICE_CLUSTERS, f"unexpected cluster {name}"
            del cluster["cluster_type"]
            cluster["type"] = "STATIC"
            endpoints = upstreams.get(name, [])
        cluster["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _socket("127.0.0.1", p)}} for p in endpoints
                    ]
                }
            ],
        }
    return config


def changed_paths(a: Any, b: Any, path: str = "") -> set[str]:
    """Paths (with list indexes) where two parsed YAML documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in set(a) | set(b):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.add(sub)
            else:
                out |= changed_paths(a[key], b[key], sub)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return set().union(
            *(changed_paths(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
        )
    return set() if a == b else {path}


def envoy_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENVOY, "--mode", "validate", "--disable-hot-restart", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass
class EnvoyProcess(LoggedProcess):
    grpc_port: int
    admin_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return r.read().decode()

    def hosts(self, cluster: str) -> dict[int, dict[str, Any]]:
        """Per upstream port: its counters (rq_total, rq_success, ...) and health flags."""
        data = json.loads(self.admin("/clusters?format=json"))
        out: dict[int, dict[str, Any]] = {}
        for status in data.get("cluster_statuses", []):
            if status["name"] != cluster:
                continue
            for host in status.get("host_statuses", []):
                port = int(host["address"]["socket_address"]["port_value"])
                stats = {
                    s["name"]: int(s.get("value", 0)) for s in host.get("stats", []) if "name" in s
                }
                health = host.get("health_status", {})
                stats["healthy"] = health.get(
                    "eds_health_status", "HEALTHY"
                ) == "HEALTHY" and not any(v for k, v in health.items() if k != "eds_health_status")
                stats["weight"] = int(host.get("weight", 0))
                out[port] = stats
        return out

    def counter(self, name: str) -> int:
        for line in self.admin(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def wait_healthy(self, cluster: str, ports: list[int], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: dict[int, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                last = self.hosts(cluster)
            except OSError:
                last = {}
            if all(last.get(p, {}).get("healthy") for p in ports):
                return
            time.sleep(0.25)
        raise TimeoutError(f"{cluster} hosts not healthy in envoy after {timeout_s}s: {last}")


def start_envoy(
    tmp: Path, config: dict[str, Any], *, grpc_port: int, admin_port: int
) -> EnvoyProcess:
    config_path = tmp / "envoy.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = tmp / "envoy.log"
    # The access log (JSON lines) and Envoy's own log.
    process = spawn(
        [ENVOY, "-c", str(config_path), "--concurrency", "1", "--disable-hot-restart", "-l", "warning"],
        log_path,
        dict(os.environ),
    )
    return EnvoyProcess(process, log_path, grpc_port, admin_port)
