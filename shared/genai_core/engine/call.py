"""Per-call facts the transport knows and the engine needs, without any gRPC types."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass
class CallStats:
    """What the engine measured for a call; the interceptor logs it when the call ends."""

    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_prompt_tokens: int = 0
    ttft_s: float | None = None
    queue_s: float | None = None


@dataclass(frozen=True)
class CallContext:
    """Who is calling and how long they wait.

    Attributes:
        request_id: id for logs and the engine request (from `x-request-id` when sent).
        deadline: `time.monotonic()` time after which the caller no longer waits.
        priority: vLLM scheduling priority; lower runs first.
        service, method: who is calling, for metric labels ("" outside an RPC).
        stats: filled in by the engine as the call runs.
    """

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    deadline: float | None = None
    priority: int = 0
    service: str = ""
    method: str = ""
    stats: CallStats = field(default_factory=CallStats, compare=False)
