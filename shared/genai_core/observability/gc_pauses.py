"""Garbage collection on the serving loop: frozen after start-up, and each pause measured.

The gRPC front end runs every request on one event loop; a full collection walks every
tracked object, so on a heap holding a loaded model's Python objects it can stall all
requests at once (LinkedIn reported 100-300 ms GC stalls in a Python serving front
end). vLLM's launchers freeze the heap after start-up (`freeze_gc_heap`, in
`vllm.utils.gc_utils` of 0.32, not in every version): objects alive then move to a
permanent generation that collections skip. This is the same with the standard
library, plus a `gc.callbacks` hook that measures every collection.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import structlog

from genai_core.observability import metrics

log = structlog.get_logger(__name__)

SLOW_PAUSE_S = 0.02
"""Collections longer than this are logged (the serving bar is no pause above 20 ms)."""

_started: float | None = None


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
        return
    if _started is None:
        return
    pause = time.perf_counter() - _started
    _started = None
    generation = info.get("generation", -1)
    metrics.GC_PAUSE.labels(str(generation)).observe(pause)
    if pause > SLOW_PAUSE_S:
        log.warning(
            "gc_pause_slow",
            generation=generation,
            pause_ms=round(pause * 1000, 1),
            collected=info.get("collected"),
            uncollectable=info.get("uncollectable"),
        )


def watch() -> None:
    """Measure every collection from now on (`genai_gc_pause_seconds`); idempotent.

    GC runs with the GIL held and never interleaves with another collection, so one
    start time serves every thread.
    """
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def unwatch() -> None:
    """Stop measuring collections (tests)."""
    if _on_gc in gc.callbacks:
        gc.callbacks.remove(_on_gc)


def freeze_heap() -> int:
    """Collect everything, then move every surviving object out of the collector's reach.

    Call once start-up and warm-up are done: what exists then (modules, the model's
    Python objects, the server) lives as long as the process, and later collections no
    longer walk it. Returns the number of objects frozen.
    """
    gc.collect(0)
    gc.collect(1)
    gc.collect(2)
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("gc_heap_frozen", objects=frozen)
    return frozen
