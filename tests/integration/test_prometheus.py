"""A real Prometheus scrapes a running server after traffic; the dashboard's and alerts'
queries return the expected series."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from genai.messaging.v1 import messaging_service_pb2 as msg_pb
from genai.messaging.v1 import messaging_service_pb2_grpc as msg_grpc
from genai_testing.procs import LoggedProcess, ServerProcess, free_port

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "genai-services-dashboard.json"


def query(port: int, expr: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture(scope="module")
def prometheus(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is installed by `make install`"
    tmp = tmp_path_factory.mktemp("prometheus")
    shutil.copy(ROOT / "docker" / "prometheus" / "alerts.yml", tmp / "alerts.yml")
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": "genai", "static_configs": [{"targets": [f"127.0.0.1:{server.metrics_port}"]}]}],
    }))
    port = free_port()
    process = LoggedProcess.start(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        tmp / "log", dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if query(port, 'up{job="genai"}'):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(process.log_tail(2000))
        yield port
    finally:
        process.stop(30)


def test_scrape_after_traffic(prometheus: int, channel: grpc.Channel) -> None:
    stub = msg_grpc.MessagingServiceStub(channel)
    # Two rounds with scrapes between: labelled series appear with their first sample,
    # and rate() needs an increase between two scrapes.
    for _ in range(2):
        for _ in range(3):
            list(stub.StreamRewriteDraft(
                msg_pb.StreamRewriteDraftRequest(draft="please send the report", tone=msg_pb.TONE_PROFESSIONAL,
                                                 max_length_chars=200), timeout=60))
        time.sleep(2.5)
    method = 'service="genai.messaging.v1.MessagingService",method="StreamRewriteDraft"'
    (ok,) = query(prometheus, f'genai_requests_total{{{method},code="OK"}}')
    assert float(ok["value"][1]) >= 5
    ttft = query(prometheus, f"histogram_quantile(0.99, sum by (le) (rate(genai_time_to_first_token_seconds_bucket{{{method}}}[1m])))")
    assert ttft and float(ttft[0]["value"][1]) > 0
    itl = query(prometheus, f"sum(genai_inter_token_latency_seconds_count{{{method}}})")
    assert float(itl[0]["value"][1]) > 5
    for name in ("genai_engine_waiting_requests", "genai_engine_running_requests", "genai_kv_cache_usage_ratio",
                 "genai_prefix_cache_hit_ratio", "genai_serving",
                 # prometheus_client's OpenMetrics output (what Prometheus asks for) spells
                 # vLLM's `vllm:` prefix `vllm_`; the plain-text format keeps the colon.
                 '{__name__=~"vllm[:_]num_requests_running"}',
                 '{__name__=~"vllm[:_]time_to_first_token_seconds_count"}'):
        assert query(prometheus, name), name
    assert float(query(prometheus, "genai_serving")[0]["value"][1]) == 1
    assert query(prometheus, "genai_gpu_utilization_ratio") == []  # no GPU here: absent, not an error


def test_every_dashboard_query_is_valid_and_seed_signals_have_data(prometheus: int) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    for signal in ("Time to first token", "Inter-token latency", "GPU utilization", "Queue depth", "KV-cache use",
                   "Prefix-cache hit rate"):
        assert any(t.startswith(signal) for t in titles), signal
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$service", ".*")
            result = query(prometheus, expr)
            if not panel["title"].startswith("GPU"):
                assert result, (panel["title"], expr)


def test_alert_rules_loaded(prometheus: int) -> None:
    url = f"http://127.0.0.1:{prometheus}/api/v1/rules"
    groups = json.loads(urllib.request.urlopen(url, timeout=10).read())["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert {"GenaiTimeToFirstTokenP99High", "GenaiQueueDepthHigh", "GenaiEngineUnhealthy"} <= set(rules)
    assert all(r["health"] in ("ok", "unknown") for r in rules.values()), rules
