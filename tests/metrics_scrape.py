"""Read one sample from a Prometheus text endpoint."""

from __future__ import annotations

import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int) -> dict[str, float]:
    """Sum of each sample name over its labels (e.g. all engines' running requests)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def wait_generating(metrics_port: int, at_least: int = 1, timeout_s: float = 30) -> None:
    """Block until vLLM reports at least `at_least` running requests.

    Streams are "generating" by the engine's own count, not by their first message: that
    may come only at a stream's end (the length limiter holds text back until a word
    boundary).

    Raises:
        AssertionError: not within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while scrape(metrics_port).get("vllm:num_requests_running", 0) < at_least:
        assert time.monotonic() < deadline, f"fewer than {at_least} requests running after {timeout_s}s"
        time.sleep(0.05)
