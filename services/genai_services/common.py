"""What every feature service shares: its definition for the registry, usage at the proto boundary."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from genai.common.v1 import usage_pb2
from google.protobuf.descriptor import ServiceDescriptor

from genai_core.engine.base import Engine
from genai_core.engine.call import CallContext, CallStats
from genai_core.engine.types import GenerationChunk, GenerationRequest, GenerationResult, ScoreRequest, ScoreResult
from genai_core.errors import ModelOutputInvalid

log = structlog.get_logger(__name__)

REQUIRED: Any = object()
"""A generation whose invalid output fails the whole call (see `run_concurrently`)."""


def total_usage_to_pb(
    results: Sequence[GenerationResult | GenerationChunk | ScoreResult], model: str
) -> usage_pb2.Usage:
    """The usage of a call's engine results (a stream's last chunk stands for its stream): their sum."""
    return usage_pb2.Usage(
        prompt_token_count=sum(r.prompt_token_count for r in results),
        output_token_count=sum(r.output_token_count for r in results),
        cached_prompt_token_count=sum(r.cached_prompt_token_count for r in results),
        model=model,
    )


async def run_concurrently(
    engine: Engine,
    requests: Sequence[GenerationRequest | ScoreRequest],
    call: CallContext,
    fallbacks: Sequence[Any] | None = None,
) -> list[Any]:
    """Run several engine requests of one call at once (they batch in the engine).

    A ScoreRequest goes to `Engine.score` (a ScoreResult back), a GenerationRequest with a
    `json_schema` to `Engine.generate_json` (its result parsed), any other to
    `Engine.generate`.

    Each request gets its own engine request id (`<call id>-<i>`: the engine rejects
    duplicates) and its own stats; the call's stats then hold their sum, so the call is
    logged and metered as a whole.

    Args:
        fallbacks: per request, the parsed value to use when the model's output is not a
            valid answer (`ModelOutputInvalid`, e.g. cut at the token limit): an optional
            part of the answer is then left out instead of failing the call. `REQUIRED`
            (every request, when None) fails the call.
    Raises:
        PromptTooLong: a generation's prompt does not fit the context (raised before any runs).
        ModelOutputInvalid (of a required generation) and every other error of
            `Engine.generate`, `Engine.generate_json` and `Engine.score`: the first one
            raised; the other requests are cancelled (and so aborted in the engine).
    """
    # All or nothing: a prompt that cannot fit fails the call before any generation runs.
    for request in requests:
        if isinstance(request, GenerationRequest):
            engine.check_prompt_fits(request)
    calls = [
        dataclasses.replace(call, request_id=f"{call.request_id}-{i}", stats=CallStats()) for i in range(len(requests))
    ]

    async def one(request: GenerationRequest | ScoreRequest, sub: CallContext, fallback: Any) -> Any:
        if isinstance(request, ScoreRequest):
            return await engine.score(request, sub)
        try:
            if request.json_schema is None:
                return await engine.generate(request, sub)
            return await engine.generate_json(request, sub)
        except ModelOutputInvalid as e:
            if fallback is REQUIRED:
                raise
            log.warning("optional_output_dropped", request_id=sub.request_id, error=e.message)
            return GenerationResult(
                text="",
                finish_reason="invalid",
                prompt_token_count=sub.stats.prompt_tokens,
                output_token_count=sub.stats.output_tokens,
                cached_prompt_token_count=sub.stats.cached_prompt_tokens,
                parsed=fallback,
            )

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(one(r, c, f))
                for r, c, f in zip(requests, calls, fallbacks or [REQUIRED] * len(requests), strict=True)
            ]
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    finally:
        # Added to what the call measured already (e.g. feed's scoring before its reasons).
        stats = [c.stats for c in calls]
        call.stats.prompt_tokens += sum(s.prompt_tokens for s in stats)
        call.stats.output_tokens += sum(s.output_tokens for s in stats)
        call.stats.cached_prompt_tokens += sum(s.cached_prompt_tokens for s in stats)
        ttfts = [s.ttft_s for s in (call.stats, *stats) if s.ttft_s is not None]
        queues = [s.queue_s for s in (call.stats, *stats) if s.queue_s is not None]
        call.stats.ttft_s = min(ttfts) if ttfts else None
        call.stats.queue_s = max(queues) if queues else None
    return [t.result() for t in tasks]


@dataclass(frozen=True)
class ServiceDefinition:
    """One feature service as the host, config, interceptor, health and reflection know it.

    Attributes:
        name: the short name used in config (`server.services`).
        descriptor: the proto service, from the generated `*_pb2` module.
        add_to_server: mounts the servicer, built on the shared engine, on a gRPC server.
        method_priorities: default vLLM priority per method name (lower runs first);
            methods not named get 0.
        prompt_version: the version of the service's prompts, logged on every
            `rpc_finished` line so answers can be traced to the prompt that made them.

    Raises:
        ValueError: a priority names no method of the service, or a method streams
            requests from the client (the interceptor wraps only unary requests).
    """

    name: str
    descriptor: ServiceDescriptor
    add_to_server: Callable[[Engine, Any], None]
    method_priorities: Mapping[str, int] = field(default_factory=dict)
    prompt_version: str = ""

    def __post_init__(self) -> None:
        methods = {m.name for m in self.descriptor.methods}
        unknown = sorted(set(self.method_priorities) - methods)
        if unknown:
            raise ValueError(f"{self.full_name}: method_priorities name no method of the service: {unknown}")
        streaming = sorted(m.name for m in self.descriptor.methods if m.client_streaming)
        if streaming:
            raise ValueError(
                f"{self.full_name}: client-streaming methods {streaming} are not supported "
                "(the interceptor wraps unary and server-streaming methods only)"
            )

    @property
    def full_name(self) -> str:
        """The proto service name ("package.Service"): health, reflection, ErrorInfo domain."""
        return self.descriptor.full_name

    @property
    def method_paths(self) -> tuple[str, ...]:
        """Each method as "package.Service/Method", the form config and metrics use."""
        return tuple(f"{self.full_name}/{m.name}" for m in self.descriptor.methods)
