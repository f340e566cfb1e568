"""The one place where typed errors become rich gRPC statuses (google.rpc.Status)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from google.protobuf import duration_pb2

from genai_core.errors import (
    DeadlineTooShort,
    Draining,
    EngineDead,
    EngineNotReady,
    InvalidRequest,
    MalformedRequest,
    ModelOutputInvalid,
    Overloaded,
    PromptTooLong,
    RequestTimedOut,
    ServiceError,
)

STATUS_DETAILS_KEY = "grpc-status-details-bin"

# A status must fit grpc clients' default metadata limits (8 KiB soft, 16 KiB hard, for
# all trailers together, binary ones base64-encoded): past them the client sees
# RESOURCE_EXHAUSTED or INTERNAL instead of our status. These bounds keep the worst
# case (a request with hundreds of bad fields) near 5 KiB.
MAX_FIELD_VIOLATIONS = 16
MAX_FIELD_CHARS = 80
MAX_DESCRIPTION_CHARS = 120
MAX_MESSAGE_CHARS = 300

_CODES: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    PromptTooLong: grpc.StatusCode.INVALID_ARGUMENT,
    EngineNotReady: grpc.StatusCode.UNAVAILABLE,
    EngineDead: grpc.StatusCode.UNAVAILABLE,
    MalformedRequest: grpc.StatusCode.INVALID_ARGUMENT,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineTooShort: grpc.StatusCode.DEADLINE_EXCEEDED,
    RequestTimedOut: grpc.StatusCode.DEADLINE_EXCEEDED,
    Draining: grpc.StatusCode.UNAVAILABLE,
    ModelOutputInvalid: grpc.StatusCode.INTERNAL,
}

# Retry hints for transient refusals: loading and draining pass in seconds.
_RETRY_AFTER_S: dict[type[ServiceError], float] = {EngineNotReady: 1.0, Draining: 0.1}


def status_code_for(error: ServiceError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.INTERNAL


def _cut(text: str, limit: int) -> str:
    """`text` at most `limit` characters; a cut one ends with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_rpc_status(error: ServiceError, domain: str) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """Build the google.rpc.Status for `error`; `domain` is the service's full name."""
    code = status_code_for(error)
    metadata = dict(error.metadata)
    if isinstance(error, InvalidRequest):
        # The first violations only, with the total in ErrorInfo: the first few are
        # what a caller fixes first, and all of them may not fit in a status.
        metadata["field_violations"] = str(len(error.violations))
        metadata["field_violations_omitted"] = str(max(len(error.violations) - MAX_FIELD_VIOLATIONS, 0))
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=metadata))]
    if isinstance(error, InvalidRequest):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_cut(v.field, MAX_FIELD_CHARS), description=_cut(v.description, MAX_DESCRIPTION_CHARS)
                        )
                        for v in error.violations[:MAX_FIELD_VIOLATIONS]
                    ]
                )
            )
        )
    retry_after = error.retry_after_s if isinstance(error, Overloaded) else _RETRY_AFTER_S.get(type(error))
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if isinstance(error, Overloaded):
        details.append(
            _pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=f"replica:{error.limit}", description=error.message
                        )
                    ]
                )
            )
        )
    status = status_pb2.Status(
        code=getattr(code_pb2, code.name), message=_cut(error.message, MAX_MESSAGE_CHARS), details=details
    )
    return code, status


async def abort_with_error(context: grpc.aio.ServicerContext, error: ServiceError, domain: str) -> None:
    """End the call with `error` as a rich status; never returns."""
    code, status = to_rpc_status(error, domain)
    await context.abort(code, status.message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),))


def retry_delay_s(error: grpc.RpcError) -> float | None:
    """The delay a server's RetryInfo asks a client to wait before retrying a failed call
    (the client side of `to_rpc_status`); None when the status carries none."""
    from grpc_status import rpc_status  # a client's need: servers never import it

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None
