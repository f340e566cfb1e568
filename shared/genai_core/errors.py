"""The typed errors every layer raises; one interceptor maps them to gRPC statuses.

They carry no gRPC types, so the engine and the prompt builders stay free of the
transport; `genai_core.grpc_runtime.status` is the one place that maps them.
Messages are safe to show callers: never prompt text, never a stack trace.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: its path as in the proto (`candidates[2].text`) and why."""

    field: str
    description: str


class ServiceError(Exception):
    """Base of all errors a caller may see. `reason` is UPPER_SNAKE_CASE, stable."""

    reason = "INTERNAL"

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}


class InvalidRequest(ServiceError):
    """The request breaks the API's rules; each broken rule is one FieldViolation."""

    reason = "INVALID_REQUEST"

    # The message names this many fields at most (the status carries the details).
    MESSAGE_FIELDS = 5

    def __init__(self, violations: list[FieldViolation]) -> None:
        named = violations[: self.MESSAGE_FIELDS]
        fields = ", ".join(v.field[:100] for v in named)
        rest = len(violations) - len(named)
        super().__init__(f"invalid request: {fields}" + (f" and {rest} more" if rest else ""))
        self.violations = violations


class PromptTooLong(ServiceError):
    """The request is valid field by field but its prompt does not fit the model."""

    reason = "PROMPT_TOO_LONG"

    def __init__(self, prompt_tokens: int, limit_tokens: int) -> None:
        super().__init__(
            f"the request needs {prompt_tokens} prompt tokens; this model accepts at most "
            f"{limit_tokens}: send less text",
            metadata={"prompt_tokens": str(prompt_tokens), "limit_tokens": str(limit_tokens)},
        )


class EngineNotReady(ServiceError):
    """The engine is still loading the model, or already shutting down."""

    reason = "ENGINE_NOT_READY"


class EngineDead(ServiceError):
    """The engine failed and cannot serve; the process will exit to be restarted."""

    reason = "ENGINE_DEAD"


class ModelOutputInvalid(ServiceError):
    """The model's output could not be turned into a valid response."""

    reason = "MODEL_OUTPUT_INVALID"


class MalformedRequest(ServiceError):
    """The request bytes are not a valid message of the method's request type."""

    reason = "MALFORMED_REQUEST"


class Overloaded(ServiceError):
    """The process's queue is full; `retry_after_s` estimates when it will have room."""

    reason = "QUEUE_FULL"

    def __init__(self, limit: str, current: int, maximum: int, retry_after_s: float) -> None:
        super().__init__(
            f"server is at capacity ({limit}: {current} of {maximum}); retry after {retry_after_s:.1f}s",
            metadata={"limit": limit, "current": str(current), "maximum": str(maximum)},
        )
        self.limit = limit
        self.retry_after_s = retry_after_s


class DeadlineTooShort(ServiceError):
    """The call's deadline would pass before the request could even start."""

    reason = "DEADLINE_TOO_SHORT"

    def __init__(self, remaining_s: float, expected_wait_s: float) -> None:
        super().__init__(
            f"the deadline leaves {remaining_s:.2f}s but the queue needs about {expected_wait_s:.2f}s "
            "before this request would start",
            metadata={"remaining_s": f"{remaining_s:.3f}", "expected_wait_s": f"{expected_wait_s:.3f}"},
        )


class RequestTimedOut(ServiceError):
    """The call ran past its deadline or the server's maximum request time; it was aborted."""

    reason = "REQUEST_TIMEOUT"


class ClientNotReading(RequestTimedOut):
    """The deadline passed while a stream waited for the client to take its data."""


class Draining(ServiceError):
    """The server is shutting down and takes no new calls."""

    reason = "SERVER_DRAINING"
