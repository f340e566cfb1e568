"""Prometheus metrics, all in the process-wide default registry.

vLLM registers its own `vllm:*` metrics in the same registry, so one scrape of the
metrics port shows both. Every metric is documented in README.md ("Metrics").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
import structlog
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, REGISTRY
from prometheus_client.registry import Collector

from genai_core.engine.types import EngineStats

log = structlog.get_logger(__name__)

# From a cached short answer (tens of ms) to a long generation on a busy CPU.
LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
# Time to first token: prefill of a few thousand tokens, or a wait in the queue.
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 20, 40)
# Inter-token latency: a few ms on a GPU, tens to hundreds of ms on a CPU.
ITL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2.5)

LABELS = ["service", "method"]

REQUESTS = Counter("genai_requests", "gRPC requests handled, by final status code.", [*LABELS, "code"])
REQUEST_LATENCY = Histogram(
    "genai_request_duration_seconds",
    "End-to-end time from receiving a gRPC request to sending its last response.",
    LABELS,
    buckets=LATENCY_BUCKETS_S,
)
TTFT = Histogram(
    "genai_time_to_first_token_seconds",
    "Time from a request reaching the engine to its first output token.",
    LABELS,
    buckets=TTFT_BUCKETS_S,
)
ITL = Histogram(
    "genai_inter_token_latency_seconds",
    "Time between consecutive output tokens of a request (N-1 samples for N tokens).",
    LABELS,
    buckets=ITL_BUCKETS_S,
)
QUEUE_TIME = Histogram(
    "genai_queue_time_seconds",
    "Time a request waited in the engine's queue before it was first scheduled.",
    LABELS,
    buckets=TTFT_BUCKETS_S,
)
PROMPT_TOKENS = Counter("genai_prompt_tokens", "Prompt tokens processed.", LABELS)
OUTPUT_TOKENS = Counter("genai_output_tokens", "Output tokens generated.", LABELS)
SERVING = Gauge(
    "genai_serving",
    "1 while this process reports SERVING on grpc.health.v1 (model loaded, not draining), else 0.",
)
CACHED_PROMPT_TOKENS = Counter("genai_cached_prompt_tokens", "Prompt tokens served from the prefix cache.", LABELS)
SCORED_ITEMS = Counter(
    "genai_scored_items", "Items scored by label probability (one engine request each).", LABELS
)
GC_PAUSE = Histogram(
    "genai_gc_pause_seconds",
    "Time the Python garbage collector stopped this process, per collection, by generation.",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
)


def start_metrics_server(host: str, port: int) -> int:
    """Serve /metrics over HTTP on its own thread; returns the bound port."""
    server, _thread = prometheus_client.start_http_server(port, addr=host)
    return int(server.server_port)


class EngineCollector(Collector):
    """Queue depth and cache use, read from the engine's latest snapshot at scrape time."""

    def __init__(self, stats: Callable[[], EngineStats], admission_waiting: Callable[[], int], model: str) -> None:
        self.stats, self.admission_waiting, self.model = stats, admission_waiting, model

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.stats()
        for name, doc, value in (
            ("genai_engine_waiting_requests", "Requests waiting in the engine's scheduler queue.", s.waiting_requests),
            ("genai_engine_running_requests", "Requests the engine is generating for.", s.running_requests),
            ("genai_admission_waiting_requests", "Requests admitted by this process and not yet running in the engine.",
             self.admission_waiting()),
            ("genai_kv_cache_usage_ratio", "Fraction of KV-cache blocks in use (0-1).", s.kv_cache_usage),
            ("genai_prefix_cache_hit_ratio", "Prompt tokens found in the prefix cache / tokens looked up, since start.",
             s.prefix_cache_hits_tokens / s.prefix_cache_queries_tokens if s.prefix_cache_queries_tokens else 0.0),
            ("genai_spec_decode_acceptance_ratio",
             "Accepted / proposed speculative tokens since start (0 when speculative decoding is off).",
             s.spec_accepted_tokens / s.spec_draft_tokens if s.spec_draft_tokens else 0.0),
        ):
            family = GaugeMetricFamily(name, doc, labels=["model"])
            family.add_metric([self.model], float(value))
            yield family


def visible_gpus(count: int, visible: str | None) -> list[tuple[str, int | str]]:
    """(label, NVML index or UUID) of the GPUs this process uses, in CUDA's order.

    CUDA_VISIBLE_DEVICES renumbers devices: with "2,3" the engine's GPU 0 is the host's
    GPU 2. Labels are CUDA's ordinals, so `gpu="1"` is the engine's second device (its
    second tensor-parallel rank) whatever the host's numbering.
    """
    if visible is None or not visible.strip():
        return [(str(i), i) for i in range(count)]
    out: list[tuple[str, int | str]] = []
    for entry in (e.strip() for e in visible.split(",")):
        if not entry or entry == "-1":
            break  # CUDA stops at the first invalid entry
        key: int | str = int(entry) if entry.isdigit() else entry
        out.append((str(len(out)), key))
    return out


class GpuCollector(Collector):
    """GPU utilization and memory per device through NVML; yields nothing without a GPU.

    Utilization is the mean of NVML's utilization samples since the previous scrape, so
    it covers the whole scrape interval (NVML's "current" rate covers only its last
    sample period, 1/6 s to 1 s: a device that idled for that instant read 0.09 right
    after a burst that kept it busy). Falls back to the current rate where the driver
    keeps no samples.
    """

    def __init__(self, visible: str | None = None) -> None:
        self.nvml: Any = None
        self.devices: list[tuple[str, Any]] = []
        self._last_seen: dict[str, int] = {}
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
            for label, key in visible_gpus(pynvml.nvmlDeviceGetCount(), visible):
                handle = (
                    pynvml.nvmlDeviceGetHandleByIndex(key)
                    if isinstance(key, int)
                    else pynvml.nvmlDeviceGetHandleByUUID(key)
                )
                self.devices.append((label, handle))
        except Exception as e:  # noqa: BLE001 - no driver, no library, no GPU: no GPU metrics
            self.nvml = None
            log.info("gpu_metrics_unavailable", reason=type(e).__name__)

    def _utilization(self, label: str, handle: Any) -> float:
        nvml = self.nvml
        try:
            _, samples = nvml.nvmlDeviceGetSamples(
                handle, nvml.NVML_GPU_UTILIZATION_SAMPLES, self._last_seen.get(label, 0)
            )
        except Exception:  # noqa: BLE001 - no samples kept (yet): the current rate
            samples = []
        if samples:
            self._last_seen[label] = max(s.timeStamp for s in samples)
            return sum(s.sampleValue.uiVal for s in samples) / len(samples) / 100.0
        return nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.nvml is None:
            return
        util = GaugeMetricFamily(
            "genai_gpu_utilization_ratio", "GPU busy fraction since the previous scrape (0-1).", labels=["gpu"]
        )
        used = GaugeMetricFamily("genai_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"])
        total = GaugeMetricFamily("genai_gpu_memory_total_bytes", "GPU memory in total.", labels=["gpu"])
        for label, handle in self.devices:
            memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            util.add_metric([label], self._utilization(label, handle))
            used.add_metric([label], float(memory.used))
            total.add_metric([label], float(memory.total))
        yield from (util, used, total)


def register_engine_collectors(
    stats: Callable[[], EngineStats], admission_waiting: Callable[[], int], model: str
) -> list[Collector]:
    """Add the engine and GPU collectors to the default registry (once per process)."""
    collectors: list[Collector] = [EngineCollector(stats, admission_waiting, model), GpuCollector()]
    for collector in collectors:
        REGISTRY.register(collector)
    return collectors
