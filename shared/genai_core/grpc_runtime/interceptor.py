"""One server interceptor for every RPC of ours: call context, logs, metrics, errors.

Servicers only raise typed errors; this is where they become statuses, so every
method reports failures the same way. It also derives each call's CallContext
(request id, deadline, priority) once, for the servicer to hand to the engine.
"Ours" are the methods it is given by name; anything else (health, reflection) passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog

from genai_core.engine.call import CallContext
from genai_core.errors import ClientNotReading, Draining, MalformedRequest, ServiceError
from genai_core.grpc_runtime.status import abort_with_error
from genai_core.observability import metrics, tracing

log = structlog.get_logger(__name__)

REQUEST_ID_KEY = "x-request-id"
REQUEST_ID_MAX_CHARS = 128
_call_var: ContextVar[CallContext | None] = ContextVar("genai_call", default=None)

TrailerProvider = Callable[[], Sequence[tuple[str, str | bytes]]]
"""Returns extra trailing metadata for a response (e.g. a load report for the mesh)."""


@dataclass(frozen=True)
class MethodSpec:
    """What the interceptor applies to one method it wraps.

    Attributes:
        priority: vLLM scheduling priority of its calls; lower runs first.
        log_fields: bound on every log line of its calls (e.g. the prompt version).
    """

    priority: int = 0
    log_fields: Mapping[str, str] = field(default_factory=dict)


class UnsupportedHandler(TypeError):
    """A method given to the interceptor has a handler kind it cannot wrap."""


def current_call() -> CallContext:
    """The CallContext of the RPC being handled (a fresh one outside any RPC)."""
    return _call_var.get() or CallContext()


class _Malformed:
    """Stands in for a request whose bytes did not parse, so we answer INVALID_ARGUMENT
    (gRPC itself would answer INTERNAL for a deserializer failure)."""


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - any parse failure is the caller's bad bytes
            return _Malformed()

    return parse


def valid_request_id(value: object) -> bool:
    """Whether a client's request id may be used (and echoed in a trailer) as given.

    Visible ASCII only (0x21-0x7E, no space: ids are tokens, and grpc refuses control
    characters and non-ASCII in a trailer after the work is done), 1 to
    REQUEST_ID_MAX_CHARS characters.
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= REQUEST_ID_MAX_CHARS
        and all("\x21" <= ch <= "\x7e" for ch in value)
    )


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY:
            if valid_request_id(value):
                return value
            own = uuid.uuid4().hex
            # Logged escaped and cut, so the log line stays one bounded line.
            log.warning(
                "request_id_replaced", given=ascii(value[:REQUEST_ID_MAX_CHARS]), given_chars=len(value),
                request_id=own,
            )
            return own
    return uuid.uuid4().hex


class _Call:
    """Book-keeping for one RPC: binds log fields and context, records the outcome once."""

    def __init__(
        self, owner: ServiceInterceptor, spec: MethodSpec, service: str, method: str, context: grpc.aio.ServicerContext
    ) -> None:
        self.service, self.method, self.context = service, method, context
        self.started = time.perf_counter()
        remaining = context.time_remaining()
        budget = owner.max_request_time_s if remaining is None else min(remaining, owner.max_request_time_s)
        self.call = CallContext(
            request_id=_request_id(context),
            deadline=time.monotonic() + budget,
            priority=spec.priority,
            service=service,
            method=method,
        )
        self.token = _call_var.set(self.call)
        self.scope = contextlib.ExitStack()
        self.span = self.scope.enter_context(tracing.rpc_span(service, method, context.invocation_metadata()))
        fields = {**spec.log_fields, "request_id": self.call.request_id, "service": service, "method": method}
        if self.span is not None:
            fields["trace_id"] = tracing.trace_id(self.span)
        self.bound = structlog.contextvars.bind_contextvars(**fields)
        extra = [item for provider in owner.trailers for item in provider()]
        context.set_trailing_metadata(((REQUEST_ID_KEY, self.call.request_id), *extra))

    async def fail(self, error: Exception) -> None:
        if isinstance(error, ClientNotReading):
            # No status can reach a client that does not read: it would queue behind the
            # message still unsent (grpc refuses the batch). End the handler as
            # cancelled; the stream itself goes with the client's reset or its
            # connection (bounded by server.max_connection_age_s).
            log.warning("client_not_reading")
            self.context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)
            raise asyncio.CancelledError() from None
        if isinstance(error, ServiceError):
            await abort_with_error(self.context, error, self.service)
        # Anything else is a bug of ours: log it whole, tell the caller nothing internal.
        log.exception("rpc_internal_error")
        await self.context.abort(
            grpc.StatusCode.INTERNAL, "internal error; see server logs for request id " + self.call.request_id
        )

    def finish(self, error: BaseException | None) -> None:
        code = _final_code(self.context, error, self.call.deadline)
        elapsed = time.perf_counter() - self.started
        metrics.REQUESTS.labels(self.service, self.method, code.name).inc()
        metrics.REQUEST_LATENCY.labels(self.service, self.method).observe(elapsed)
        stats = self.call.stats
        ms = lambda s: None if s is None else round(s * 1000, 1)  # noqa: E731
        if self.span is not None:
            self.span.set_attributes(
                {"rpc.grpc.status_code": code.value[0], "genai.prompt_tokens": stats.prompt_tokens,
                 "genai.output_tokens": stats.output_tokens}
            )
        log.info(
            "rpc_finished",
            code=code.name,
            duration_ms=ms(elapsed),
            ttft_ms=ms(stats.ttft_s),
            queue_ms=ms(stats.queue_s),
            prompt_tokens=stats.prompt_tokens,
            cached_prompt_tokens=stats.cached_prompt_tokens,
            output_tokens=stats.output_tokens,
        )
        self.scope.close()
        structlog.contextvars.reset_contextvars(**self.bound)
        _call_var.reset(self.token)


async def _write_by(context: grpc.aio.ServicerContext, response: Any, deadline: float | None) -> None:
    """Send one stream message, waiting for a slow reader no later than `deadline`.

    Raises:
        ClientNotReading: the client took no data until the deadline passed.
    """
    try:
        async with asyncio.timeout_at(deadline):
            await context.write(response)
    except TimeoutError:
        raise ClientNotReading("the call's deadline passed while the client was not reading the stream") from None


def _final_code(
    context: grpc.aio.ServicerContext, error: BaseException | None, deadline: float | None = None
) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(error, BaseException) and not isinstance(error, Exception):
        # grpc cancels the handler both when the client goes away and when the client's
        # deadline passes; only the clock tells them apart.
        if deadline is not None and time.monotonic() >= deadline:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.INTERNAL


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the handlers of the methods it is given; others (health, reflection) pass.

    Args:
        methods: the methods to wrap, keyed "package.Service/Method".
        trailers: providers of extra trailing metadata added to every response.
        max_request_time_s: the longest any call may run, whatever its deadline.
    """

    def __init__(
        self,
        methods: Mapping[str, MethodSpec],
        trailers: Sequence[TrailerProvider] = (),
        max_request_time_s: float = 120.0,
    ) -> None:
        self.methods = dict(methods)
        self.trailers = tuple(trailers)
        self.max_request_time_s = max_request_time_s
        # Set on SIGTERM: calls that still reach us (on open connections) are refused.
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no call of ours is being handled (its response may still be on its way)."""
        await self._idle.wait()

    def _track(self, delta: int) -> None:
        self.in_flight += delta
        if self.in_flight:
            self._idle.clear()
        else:
            self._idle.set()

    async def _enter(self, call: _Call, request: Any) -> None:
        if self.draining:
            await call.fail(Draining("the server is shutting down; retry on another replica"))
        if isinstance(request, _Malformed):
            await call.fail(MalformedRequest(f"the request is not a valid {call.method} request message"))

    @contextlib.asynccontextmanager
    async def _handling(self, call: _Call, request: Any) -> AsyncIterator[None]:
        """Refuse what must be refused, turn errors into statuses, record the outcome."""
        error: BaseException | None = None
        self._track(+1)
        try:
            await self._enter(call, request)
            yield
        except BaseException as e:  # noqa: BLE001 - re-raised or turned into a status
            error = e
            if isinstance(e, Exception) and not isinstance(e, grpc.aio.AbortError):
                await call.fail(e)
            raise
        finally:
            call.finish(error)
            self._track(-1)

    def _unary(
        self, spec: MethodSpec, service: str, method: str, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._handling(_Call(self, spec, service, method, context), request):
                return await behavior(request, context)

        return handler

    def _stream(
        self, spec: MethodSpec, service: str, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., Awaitable[None]]:
        # A coroutine that writes, not an async generator that grpc drains: grpc's own
        # writes wait for the client's flow control without limit, and a generator left
        # suspended at `yield` is closed later by the garbage collector, in another
        # context. Here every write is bounded by the call's deadline and the servicer's
        # stream is closed (its engine request aborted) in this task, whatever happens.
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> None:
            call = _Call(self, spec, service, method, context)
            async with self._handling(call, request):
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        await _write_by(context, response, call.call.deadline)

        return handler

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the handler of a method of ours.

        Raises:
            UnsupportedHandler: a method of ours has a client-streaming handler, which
                would otherwise be served without error mapping, deadlines or metrics.
        """
        handler = await continuation(handler_call_details)
        path = handler_call_details.method.lstrip("/")
        spec = self.methods.get(path)
        if handler is None or spec is None:
            return handler
        service, _, method = path.partition("/")
        parse = _lenient(handler.request_deserializer)
        if handler.unary_unary is not None:
            return handler._replace(
                unary_unary=self._unary(spec, service, method, handler.unary_unary), request_deserializer=parse
            )
        if handler.unary_stream is not None:
            return handler._replace(
                unary_stream=self._stream(spec, service, method, handler.unary_stream), request_deserializer=parse
            )
        log.error("rpc_handler_unsupported", method=path)
        raise UnsupportedHandler(f"{path}: client-streaming handlers are not supported by the interceptor")
