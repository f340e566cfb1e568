"""The engine interface the services call, with the logic every engine shares."""

from __future__ import annotations

import abc
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import jsonschema
import structlog

from genai_core.config import AdmissionConfig
from genai_core.engine.admission import Admission
from genai_core.engine.call import CallContext
from genai_core.engine.types import EngineStats, GenerationChunk, GenerationRequest, GenerationResult
from genai_core.errors import ModelOutputInvalid, PromptTooLong
from genai_core.observability import metrics
from genai_core.text import scrub_json

log = structlog.get_logger(__name__)


def validate_json(value: Any, schema: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `value` matches `schema`.

    Unlike `jsonschema.validate`, this does not check the schema against its
    metaschema: that check cost 2-4 ms per call (our schemas vary with request fields,
    so no cache held them all), while building a validator takes microseconds. The
    schemas come from the services' code, and tests check each against the metaschema.
    """
    jsonschema.validators.validator_for(schema)(schema).validate(value)


class Engine(abc.ABC):
    """A text generator with continuous batching behind it, behind admission control.

    Implementations provide `prompt_token_ids` and `_stream`; `stream`, `generate` and
    `generate_json` are built on them, so every engine (the vLLM one, test doubles)
    checks prompt length, admits, behaves and is measured the same way.

    Args:
        model_name: the name reported to callers and in metrics.
        max_model_len: the context length; prompt plus output tokens must fit in it.
        admission: queue limits in front of the engine (defaults when None).
    """

    def __init__(self, model_name: str, max_model_len: int, admission: AdmissionConfig | None = None) -> None:
        self.model_name = model_name
        self.max_model_len = max_model_len
        limits = admission or AdmissionConfig()
        self.admission = Admission(limits.max_waiting_requests, limits.max_waiting_prompt_tokens)

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model and warm up; returns once requests can be served."""

    @abc.abstractmethod
    def prompt_token_ids(self, request: GenerationRequest) -> Sequence[int]:
        """The token ids of `request`'s rendered prompt, as the engine will run them.

        Raises:
            EngineNotReady / EngineDead: the engine cannot serve.
        """

    @abc.abstractmethod
    def _stream(
        self, request: GenerationRequest, prompt_ids: Sequence[int], call: CallContext
    ) -> AsyncIterator[GenerationChunk]:
        """The engine's own generation of an admitted request; see `stream`."""

    def check_prompt_fits(self, request: GenerationRequest) -> Sequence[int]:
        """The request's prompt token ids, once checked to fit the context with its output.

        Raises:
            PromptTooLong: the rendered prompt does not fit the model's context.
        """
        prompt_ids = self.prompt_token_ids(request)
        budget = self.max_model_len - request.max_output_tokens
        if len(prompt_ids) > budget:
            raise PromptTooLong(len(prompt_ids), max(budget, 0))
        return prompt_ids

    async def stream(self, request: GenerationRequest, call: CallContext) -> AsyncIterator[GenerationChunk]:
        """Yield the generation piece by piece; the last chunk has `finish_reason` set.

        Closing the iterator early or cancelling its consumer (the caller went away)
        aborts the request in the engine and frees its KV cache.

        Raises:
            PromptTooLong: the rendered prompt does not fit the model's context.
            Overloaded / DeadlineTooShort: refused by admission control.
            RequestTimedOut: `call.deadline` passed while generating (request aborted).
            EngineNotReady / EngineDead: the engine cannot serve.
        """
        labels = (call.service, call.method)
        started = last = time.monotonic()
        tokens = 0
        ticket = None
        try:
            prompt_ids = self.check_prompt_fits(request)
            ticket = self.admission.admit(len(prompt_ids), call.deadline)
            async with contextlib.aclosing(self._stream(request, prompt_ids, call)) as chunks:
                async for chunk in chunks:
                    if ticket.waiting:
                        ticket.started()
                    now = time.monotonic()
                    new = chunk.output_token_count - tokens
                    if new > 0:
                        if tokens == 0:
                            call.stats.ttft_s = now - started
                            metrics.TTFT.labels(*labels).observe(now - started)
                            # Tokens that came with the first: no time between them.
                            gaps = [0.0] * (new - 1)
                        else:
                            gaps = [(now - last) / new] * new
                        for gap in gaps:
                            metrics.ITL.labels(*labels).observe(gap)
                        tokens, last = chunk.output_token_count, now
                    call.stats.prompt_tokens = chunk.prompt_token_count
                    call.stats.cached_prompt_tokens = chunk.cached_prompt_token_count
                    yield chunk
        finally:
            if ticket is not None:
                ticket.release()
            call.stats.output_tokens = tokens
            metrics.PROMPT_TOKENS.labels(*labels).inc(call.stats.prompt_tokens)
            metrics.CACHED_PROMPT_TOKENS.labels(*labels).inc(call.stats.cached_prompt_tokens)
            metrics.OUTPUT_TOKENS.labels(*labels).inc(tokens)

    @abc.abstractmethod
    def stats(self) -> EngineStats:
        """The latest load snapshot; cheap, never blocks."""

    @abc.abstractmethod
    async def check_health(self) -> None:
        """Raise EngineDead if the engine can no longer serve."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop the engine and free its memory and processes; idempotent."""

    async def generate(self, request: GenerationRequest, call: CallContext) -> GenerationResult:
        """Run a request to completion and return its whole text."""
        parts: list[str] = []
        last: GenerationChunk | None = None
        async for chunk in self.stream(request, call):
            parts.append(chunk.text_delta)
            last = chunk
        if last is None:
            raise RuntimeError("engine stream ended without a chunk")
        return GenerationResult(
            text="".join(parts),
            finish_reason=last.finish_reason or "stop",
            prompt_token_count=last.prompt_token_count,
            output_token_count=last.output_token_count,
            cached_prompt_token_count=last.cached_prompt_token_count,
        )

    async def generate_json(self, request: GenerationRequest, call: CallContext) -> GenerationResult:
        """Generate under `request.json_schema`; `parsed` holds the validated value.

        Raises:
            ModelOutputInvalid: the output is not JSON or does not match the schema
                (for instance because it was cut at max_output_tokens).
        """
        if request.json_schema is None:
            raise ValueError("generate_json needs a request with json_schema")
        result = await self.generate(request, call)
        try:
            # strict=False: control characters inside strings are scrubbed (after
            # validation, so scrubbing never turns a valid answer into an invalid one).
            value: Any = json.loads(result.text, strict=False)
            validate_json(value, request.json_schema)
            value = scrub_json(value)
        except (json.JSONDecodeError, jsonschema.ValidationError) as e:
            log.warning(
                "model_output_invalid",
                finish_reason=result.finish_reason,
                error=type(e).__name__,
                schema_path="/".join(map(str, getattr(e, "absolute_schema_path", []))),
            )
            raise ModelOutputInvalid(
                "the model's output did not match the response schema"
                + (" (it hit the output token limit)" if result.finish_reason == "length" else ""),
                metadata={"finish_reason": result.finish_reason, "error": type(e).__name__},
            ) from None
        return GenerationResult(
            text=result.text,
            finish_reason=result.finish_reason,
            prompt_token_count=result.prompt_token_count,
            output_token_count=result.output_token_count,
            cached_prompt_token_count=result.cached_prompt_token_count,
            parsed=value,
        )
