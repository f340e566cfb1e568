"""Types that cross the boundary between the services and the engine.

Services build a GenerationRequest (never a proto), the engine returns chunks and a
GenerationResult. Nothing here depends on vLLM, so unit tests can use a double.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate. The system message comes first and is the same for every
    request of a feature, so the engine's prefix cache reuses it across requests."""

    messages: tuple[ChatMessage, ...]
    max_output_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    # When set, decoding is constrained to this JSON schema and the result is parsed
    # and validated against it before anyone sees it.
    json_schema: dict[str, Any] | None = None
    stop: tuple[str, ...] = ()
    # Subtracted from the logit of every token already in the output (0 = off): keeps
    # greedy decoding of a list from repeating one item (OpenAI's presence_penalty).
    presence_penalty: float = 0.0


@dataclass(frozen=True)
class GenerationChunk:
    """A piece of a streamed generation: the text since the previous chunk.

    Token counts are totals so far, so the last chunk tells the whole usage."""

    text_delta: str
    output_token_count: int
    prompt_token_count: int
    cached_prompt_token_count: int = 0
    finish_reason: str | None = None


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str
    prompt_token_count: int
    output_token_count: int
    cached_prompt_token_count: int = 0
    parsed: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's load, as its scheduler last reported it."""

    waiting_requests: int = 0
    running_requests: int = 0
    kv_cache_usage: float = 0.0  # fraction of KV-cache blocks in use, 0..1
    prefix_cache_queries_tokens: int = 0
    prefix_cache_hits_tokens: int = 0
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0
