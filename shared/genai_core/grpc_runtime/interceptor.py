"""One server interceptor for every RPC of ours: request ids, logs, metrics, errors.

Servicers only raise typed errors; this is where they become statuses, so every
method reports failures the same way.
"""

from __future__ import annotations

import time
import uuid
from contextvars import ContextVar
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import structlog

from genai_core.errors import ServiceError
from genai_core.grpc_runtime.status import abort_with_error
from genai_core.observability import metrics

log = structlog.get_logger(__name__)

REQUEST_ID_KEY = "x-request-id"
_OWN_PREFIX = "/genai."
_request_id_var: ContextVar[str | None] = ContextVar("genai_request_id", default=None)


def current_request_id() -> str:
    """The id of the RPC being handled (from `x-request-id`, else generated)."""
    return _request_id_var.get() or uuid.uuid4().hex


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


TrailerProvider = Callable[[], Sequence[tuple[str, str | bytes]]]
"""Returns extra trailing metadata for a response (e.g. a load report for the mesh)."""


class _Call:
    """Book-keeping for one RPC: binds log fields, records the outcome once."""

    def __init__(
        self, service: str, method: str, context: grpc.aio.ServicerContext, trailers: Sequence[TrailerProvider]
    ) -> None:
        self.service, self.method, self.context = service, method, context
        self.request_id = _request_id(context)
        self.token = _request_id_var.set(self.request_id)
        self.started = time.perf_counter()
        self.bound = structlog.contextvars.bind_contextvars(
            request_id=self.request_id, service=service, method=method
        )
        extra = [item for provider in trailers for item in provider()]
        context.set_trailing_metadata(((REQUEST_ID_KEY, self.request_id), *extra))

    async def fail(self, error: Exception) -> None:
        if isinstance(error, ServiceError):
            await abort_with_error(self.context, error, self.service)
        # Anything else is a bug of ours: log it whole, tell the caller nothing internal.
        log.exception("rpc_internal_error")
        await self.context.abort(grpc.StatusCode.INTERNAL, "internal error; see server logs for request id " + self.request_id)

    def finish(self, code: grpc.StatusCode) -> None:
        elapsed = time.perf_counter() - self.started
        metrics.REQUESTS.labels(self.service, self.method, code.name).inc()
        metrics.REQUEST_LATENCY.labels(self.service, self.method).observe(elapsed)
        log.info("rpc_finished", code=code.name, duration_ms=round(elapsed * 1000, 1))
        structlog.contextvars.reset_contextvars(**self.bound)
        _request_id_var.reset(self.token)


def _final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(error, BaseException) and not isinstance(error, Exception):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.INTERNAL


def _wrap_unary(
    service: str, method: str, behavior: Callable[..., Awaitable[Any]], trailers: Sequence[TrailerProvider]
) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _Call(service, method, context, trailers)
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as e:  # noqa: BLE001 - re-raised or turned into a status
            error = e
            if isinstance(e, Exception) and not isinstance(e, grpc.aio.AbortError):
                await call.fail(e)
            raise
        finally:
            call.finish(_final_code(context, error))

    return handler


def _wrap_stream(
    service: str, method: str, behavior: Callable[..., AsyncIterator[Any]], trailers: Sequence[TrailerProvider]
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _Call(service, method, context, trailers)
        error: BaseException | None = None
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as e:  # noqa: BLE001 - re-raised or turned into a status
            error = e
            if isinstance(e, Exception) and not isinstance(e, grpc.aio.AbortError):
                await call.fail(e)
            raise
        finally:
            call.finish(_final_code(context, error))

    return handler


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the handlers of our own services (health and reflection pass through).

    Args:
        trailers: providers of extra trailing metadata added to every response.
    """

    def __init__(self, trailers: Sequence[TrailerProvider] = ()) -> None:
        self.trailers = tuple(trailers)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        full = handler_call_details.method
        if handler is None or not full.startswith(_OWN_PREFIX):
            return handler
        service, _, method = full[1:].partition("/")
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_wrap_unary(service, method, handler.unary_unary, self.trailers))
        if handler.unary_stream is not None:
            return handler._replace(
                unary_stream=_wrap_stream(service, method, handler.unary_stream, self.trailers)
            )
        return handler
