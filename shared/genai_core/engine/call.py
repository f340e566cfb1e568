"""Per-call facts the transport knows and the engine needs, without any gRPC types."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CallContext:
    """Who is calling and how long they wait.

    Attributes:
        request_id: id for logs and the engine request (from `x-request-id` when sent).
        deadline: monotonic time (`time.monotonic()` / the event loop's clock) after
            which the caller no longer waits; None for no deadline.
        priority: vLLM scheduling priority; lower runs first.
    """

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    deadline: float | None = None
    priority: int = 0
