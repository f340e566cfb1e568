"""Prometheus metrics of the gRPC layer, in the process-wide default registry.

vLLM registers its own `vllm:*` metrics in the same registry, so one scrape of the
metrics port shows both.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import Counter, Histogram

# Buckets span a cached short answer (tens of ms) to a long generation on a busy CPU.
LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)

REQUESTS = Counter(
    "genai_requests",
    "gRPC requests handled, by final status code.",
    ["service", "method", "code"],
)
REQUEST_LATENCY = Histogram(
    "genai_request_duration_seconds",
    "Time from receiving a gRPC request to sending its last response.",
    ["service", "method"],
    buckets=LATENCY_BUCKETS_S,
)


def start_metrics_server(host: str, port: int) -> int:
    """Serve /metrics over HTTP on its own thread; returns the bound port."""
    server, _thread = prometheus_client.start_http_server(port, addr=host)
    return int(server.server_port)
