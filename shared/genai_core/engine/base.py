"""The engine interface the services call, with the logic every engine shares."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import jsonschema
import structlog

from genai_core.config import AdmissionConfig
from genai_core.engine.admission import Admission
from genai_core.engine.call import CallContext
from genai_core.engine.types import (
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
    MAX_SCORE_LABELS,
    ScoreRequest,
    ScoreResult,
)
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


def _merged(first: GenerationChunk, then: GenerationChunk) -> GenerationChunk:
    """Two consecutive chunks as one (counts are running totals: the later ones hold)."""
    return dataclasses.replace(then, text_delta=first.text_delta + then.text_delta)


class Engine(abc.ABC):
    """A text generator with continuous batching behind it, behind admission control.

    Implementations provide `prompt_token_ids` and `_stream`; `stream`, `generate` and
    `generate_json` are built on them, so every engine (the vLLM one, test doubles)
    checks prompt length, admits, behaves and is measured the same way. Engines that
    can score provide `_score` (which checks lengths and admits the call's items through
    `self.admission.admit_many`), measured by `score`.

    Args:
        model_name: the name reported to callers and in metrics.
        max_model_len: the context length; prompt plus output tokens must fit in it.
        admission: queue limits in front of the engine (defaults when None).
        stream_interval_s: streamed chunks closer together than this are merged into
            one (fewer messages for the transport to send); 0 passes every chunk on.
    """

    def __init__(
        self,
        model_name: str,
        max_model_len: int,
        admission: AdmissionConfig | None = None,
        stream_interval_s: float = 0.0,
    ) -> None:
        self.model_name = model_name
        self.max_model_len = max_model_len
        limits = admission or AdmissionConfig()
        self.admission = Admission(limits.max_waiting_requests, limits.max_waiting_prompt_tokens)
        self.stream_interval_s = stream_interval_s

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
        """The engine's own generation of an admitted request; see `stream`.

        With `request.final_only`, one chunk at the end holding the whole text (and the
        engine's `first_token_s` where it knows it); otherwise chunks as tokens come.
        """

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

        With `request.final_only` the engine sends the whole answer as one chunk. The
        request leaves the admission queue when the engine's scheduler reports it
        running (`Admission.engine_waiting`) or at its first chunk, whichever is first.

        Closing the iterator early or cancelling its consumer (the caller went away)
        aborts the request in the engine and frees its KV cache.

        Raises:
            PromptTooLong: the rendered prompt does not fit the model's context.
            Overloaded / DeadlineTooShort: refused by admission control.
            RequestTimedOut: `call.deadline` passed while generating (request aborted).
            EngineNotReady / EngineDead: the engine cannot serve.
        """
        labels = (call.service, call.method)
        # Resolved once: a labels() lookup per token is measurable on a busy loop.
        ttft_metric, itl_metric = metrics.TTFT.labels(*labels), metrics.ITL.labels(*labels)
        started = last = time.monotonic()
        sent = -math.inf
        tokens = 0
        ticket = None
        held: GenerationChunk | None = None
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
                        if request.final_only:
                            # One chunk at the end: only the engine knows when the first
                            # token came, and there are no gaps between chunks to measure.
                            if chunk.first_token_s is not None:
                                call.stats.ttft_s = chunk.first_token_s
                                ttft_metric.observe(chunk.first_token_s)
                            gaps = []
                        elif tokens == 0:
                            call.stats.ttft_s = now - started
                            ttft_metric.observe(now - started)
                            # Tokens that came with the first: no time between them.
                            gaps = [0.0] * (new - 1)
                        else:
                            gaps = [(now - last) / new] * new
                        for gap in gaps:
                            itl_metric.observe(gap)
                        tokens, last = chunk.output_token_count, now
                    call.stats.prompt_tokens = chunk.prompt_token_count
                    call.stats.cached_prompt_tokens = chunk.cached_prompt_token_count
                    if held is not None:
                        chunk = _merged(held, chunk)
                        held = None
                    # Hold a chunk that follows the last one sent too closely; the next
                    # chunk (at most one engine step later) or the last takes it along.
                    if chunk.finish_reason is None and now - sent < self.stream_interval_s:
                        held = chunk
                        continue
                    sent = now
                    yield chunk
            if held is not None:
                yield held
        finally:
            if ticket is not None:
                ticket.release()
            call.stats.output_tokens = tokens
            metrics.PROMPT_TOKENS.labels(*labels).inc(call.stats.prompt_tokens)
            metrics.CACHED_PROMPT_TOKENS.labels(*labels).inc(call.stats.cached_prompt_tokens)
            metrics.OUTPUT_TOKENS.labels(*labels).inc(tokens)

    async def _score(self, request: ScoreRequest, call: CallContext) -> ScoreResult:
        """The engine's own scoring; see `score`. Adds each finished item's tokens to
        `call.stats` as it goes, so an aborted call is measured too."""
        raise NotImplementedError(f"{type(self).__name__} cannot score")

    async def score(self, request: ScoreRequest, call: CallContext) -> ScoreResult:
        """Score every item of `request` by the probability of each label.

        All items go to the engine at once (one single-token request each, sharing the
        prompt prefix); the call is admitted by its real cost (every item and its prompt
        tokens). Cancelling the caller or passing `call.deadline` aborts every item
        still in the engine.

        Raises:
            ValueError: no labels, more than MAX_SCORE_LABELS, a label without a token, or
                item answers that are not one per item.
            PromptTooLong: an item's prompt does not fit the model's context.
            Overloaded / DeadlineTooShort: refused by admission control.
            RequestTimedOut: `call.deadline` passed while scoring (all items aborted).
            EngineNotReady / EngineDead: the engine cannot serve.
        """
        if not 1 <= len(request.labels) <= MAX_SCORE_LABELS:
            raise ValueError(f"a score request takes 1-{MAX_SCORE_LABELS} labels, got {len(request.labels)}")
        if request.item_answers and len(request.item_answers) != len(request.items):
            raise ValueError(f"{len(request.item_answers)} item answers for {len(request.items)} items")
        labels = (call.service, call.method)
        before = (call.stats.prompt_tokens, call.stats.cached_prompt_tokens, call.stats.output_tokens)
        try:
            result = await self._score(request, call)
            metrics.SCORED_ITEMS.labels(*labels).inc(len(result.items))
            return result
        finally:
            # Scoring counts in the same per-method token counters as generation, so
            # prefix-cache hits per method cover both.
            metrics.PROMPT_TOKENS.labels(*labels).inc(call.stats.prompt_tokens - before[0])
            metrics.CACHED_PROMPT_TOKENS.labels(*labels).inc(call.stats.cached_prompt_tokens - before[1])
            metrics.OUTPUT_TOKENS.labels(*labels).inc(call.stats.output_tokens - before[2])

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
        """Run a request to completion and return its whole text.

        The engine is asked for the final output only: no per-token outputs cross from
        the engine to this process's event loop for a caller that waits for the whole.
        """
        parts: list[str] = []
        last: GenerationChunk | None = None
        async for chunk in self.stream(dataclasses.replace(request, final_only=True), call):
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
