"""The engine interface the services call, with the logic every engine shares."""

from __future__ import annotations

import abc
import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import structlog

from genai_core.engine.call import CallContext
from genai_core.engine.types import EngineStats, GenerationChunk, GenerationRequest, GenerationResult
from genai_core.errors import ModelOutputInvalid
from genai_core.text import scrub_json

log = structlog.get_logger(__name__)


class Engine(abc.ABC):
    """A text generator with continuous batching behind it.

    Implementations provide `stream`; `generate` and `generate_json` are built on it so
    every engine (the vLLM one, test doubles) behaves the same at the edges.
    """

    model_name: str

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model and warm up; returns once requests can be served."""

    @abc.abstractmethod
    def stream(self, request: GenerationRequest, call: CallContext) -> AsyncIterator[GenerationChunk]:
        """Yield the generation piece by piece; the last chunk has `finish_reason` set.

        Closing the iterator early or cancelling its consumer (the caller went away)
        aborts the request in the engine and frees its KV cache.

        Raises:
            PromptTooLong: the rendered prompt does not fit the model's context.
            Overloaded / DeadlineTooShort: refused by admission control.
            RequestTimedOut: `call.deadline` passed while generating (request aborted).
            EngineNotReady / EngineDead: the engine cannot serve.
        """

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
            jsonschema.validate(value, request.json_schema)
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
