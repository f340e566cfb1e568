"""ORCA load reports for the mesh, in every response's `endpoint-load-metrics-bin` trailer.

Envoy's `client_side_weighted_round_robin` load balancer (and gRPC's weighted round
robin) reads a serialized `xds.data.orca.v3.OrcaLoadReport` from that trailer and
weights each replica by

    weight = rps_fractional / application_utilization

i.e. by the request rate the replica would sustain at 100 % utilization. Python
grpcio has no ORCA API, so this module builds the report itself and the gRPC
interceptor attaches it (`ServiceInterceptor(trailers=[OrcaLoadReporter(...)])`).

What is reported (one snapshot of `engine.stats()` per response):

* `rps_fractional`: requests started on this process per second, over a sliding
  window (`window_s`, default 10 s; shorter while the process is younger than that).
  Each call of the provider is one request: the interceptor calls it once per RPC of
  our services (health checks and reflection are not counted). The current request
  counts, so the value is always > 0 (Envoy ignores reports with rps <= 0). A scoring
  call (feed ranking) counts by its real cost, one request per scored item: its
  items beyond the first are taken from the engine's `score_calls`/`scored_items`
  counters at the next report (the report is taken before the call reaches the
  engine).
* `application_utilization`:

      batch = max(running / max_num_seqs, kv_cache_usage)     # 0..1: how full the batch is
      queue = waiting / max_num_seqs                          # full batches' worth waiting
      application_utilization = max(UTILIZATION_FLOOR, batch + queue)

  0 is idle, 1 means the running batch (or the KV cache) is full and nothing waits;
  every further 1.0 is one more full batch queued behind it, so a replica whose queue
  is deep reports a utilization several times that of an idle one and gets
  correspondingly less new traffic. The floor keeps the value positive on an idle
  replica (Envoy ignores reports with utilization <= 0; the floor makes idle replicas
  look equally and very attractive instead).
* `named_metrics`: `waiting`, `running` (requests) and `kv_cache_usage` (0..1), as the
  engine's scheduler last reported them.

The report is taken when the interceptor sets up the call, i.e. it describes the load
the request found on arrival, and reaches the balancer with the response's trailers.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from xds.data.orca.v3 import orca_load_report_pb2

from genai_core.engine.types import EngineStats

ORCA_TRAILER_KEY = "endpoint-load-metrics-bin"
"""The trailer Envoy and gRPC read ORCA load reports from (binary: serialized proto)."""

UTILIZATION_FLOOR = 0.01
"""Smallest application_utilization reported, so an idle replica still gets a weight."""

OrcaLoadReport = orca_load_report_pb2.OrcaLoadReport


class StatsSource(Protocol):
    """Anything with the engine's `stats()`: the engine itself, or a test fake."""

    def stats(self) -> EngineStats: ...


def application_utilization(stats: EngineStats, max_num_seqs: int) -> float:
    """Utilization from queue depth and KV-cache use (formula in the module docstring)."""
    seqs = max(1, max_num_seqs)
    batch = max(max(0, stats.running_requests) / seqs, min(1.0, max(0.0, stats.kv_cache_usage)))
    queue = max(0, stats.waiting_requests) / seqs
    return max(UTILIZATION_FLOOR, batch + queue)


class _RateWindow:
    """Events per second over a sliding window of fixed buckets (bounded memory).

    The window is the last `BUCKETS` buckets, the current (partial) one included, so
    it spans between (BUCKETS - 1) and BUCKETS bucket lengths; while the process is
    younger than that, it spans the process's age (at least one bucket).
    """

    BUCKETS = 20

    def __init__(self, window_s: float, now: float) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.bucket_s = window_s / self.BUCKETS
        self.started = now
        self._counts: deque[list[int]] = deque()  # [bucket index, count], oldest first

    def _index(self, now: float) -> int:
        return int(max(0.0, now - self.started) // self.bucket_s)

    def _expire(self, current: int) -> None:
        while self._counts and self._counts[0][0] <= current - self.BUCKETS:
            self._counts.popleft()

    def add(self, now: float, count: int = 1) -> None:
        index = self._index(now)
        if self._counts and self._counts[-1][0] >= index:
            self._counts[-1][1] += count
        else:
            self._counts.append([index, count])
        self._expire(index)

    def rate(self, now: float) -> float:
        current = self._index(now)
        self._expire(current)
        first = max(0, current - self.BUCKETS + 1)
        span = max(self.bucket_s, (now - self.started) - first * self.bucket_s)
        return sum(count for _, count in self._counts) / span


class OrcaLoadReporter:
    """Trailer provider: each call counts one request and returns the ORCA trailer.

    Args:
        engine: the load source; its `stats()` must be cheap and never block.
        max_num_seqs: the engine's batch size (`engine.max_num_seqs`), the unit of
            queue depth in the utilization.
        window_s: length of the sliding window for `rps_fractional`.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        engine: StatsSource,
        max_num_seqs: int,
        *,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")
        self._engine = engine
        self.max_num_seqs = max_num_seqs
        self._clock = clock
        self._window = _RateWindow(window_s, clock())
        self._lock = threading.Lock()
        self._scored_beyond_first = 0  # engine's scored_items - score_calls, last seen

    def record_request(self, count: int = 1) -> None:
        """Count `count` requests towards `rps_fractional`."""
        with self._lock:
            self._window.add(self._clock(), count)

    def requests_per_second(self) -> float:
        with self._lock:
            return self._window.rate(self._clock())

    def report(self) -> OrcaLoadReport:
        """The load report now (does not count a request)."""
        stats = self._engine.stats()
        report = OrcaLoadReport(
            rps_fractional=self.requests_per_second(),
            application_utilization=application_utilization(stats, self.max_num_seqs),
        )
        report.named_metrics["waiting"] = float(stats.waiting_requests)
        report.named_metrics["running"] = float(stats.running_requests)
        report.named_metrics["kv_cache_usage"] = float(stats.kv_cache_usage)
        return report

    def __call__(self) -> list[tuple[str, str | bytes]]:
        """Called by the interceptor once per RPC: count it (and the items scored by
        earlier scoring calls beyond their first), return the trailer."""
        stats = self._engine.stats()
        with self._lock:
            beyond = stats.scored_items - stats.score_calls
            extra, self._scored_beyond_first = max(0, beyond - self._scored_beyond_first), beyond
        self.record_request(1 + extra)
        return [(ORCA_TRAILER_KEY, self.report().SerializeToString())]
