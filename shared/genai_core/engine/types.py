"""Types that cross the boundary between the services and the engine.

Services build a GenerationRequest (never a proto), the engine returns chunks and a
GenerationResult; or a ScoreRequest, answered by a ScoreResult. Nothing here depends on vLLM, so unit tests can use a double.
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
    # Only the whole answer is wanted, not tokens as they come: the engine sends one
    # chunk at the end (vLLM's FINAL_ONLY). `Engine.generate` sets it; services need not.
    final_only: bool = False
    # Subtracted from the logit of every token already in the output (0 = off): keeps
    # greedy decoding of a list from repeating one item (OpenAI's presence_penalty).
    presence_penalty: float = 0.0
    # The start of the answer, written for the model after the chat template's answer
    # prompt: the model continues from it (e.g. the next line of a list). The result's
    # text holds only what the model wrote.
    answer_prefix: str = ""


@dataclass(frozen=True)
class GenerationChunk:
    """A piece of a streamed generation: the text since the previous chunk.

    Token counts are totals so far, so the last chunk tells the whole usage."""

    text_delta: str
    output_token_count: int
    prompt_token_count: int
    cached_prompt_token_count: int = 0
    finish_reason: str | None = None
    # The engine's own time from receiving the request to its first token, where it
    # reports one; what TTFT is for a final-only generation (whose first chunk is its last).
    first_token_s: float | None = None


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
    # Cumulative, since start: calls of `Engine.score` and the items they scored (one
    # engine request each), so load reports can count a scoring call by its real cost.
    score_calls: int = 0
    scored_items: int = 0


@dataclass(frozen=True)
class ScoreRequest:
    """Items to score by the probability of each label as the answer's next token.

    Each item becomes one engine request that generates a single token: `messages`
    rendered by the chat template with the item appended to the content of the last
    message (a user message), then `answer_prefix` as the start of the answer.
    Everything before the item is one token prefix shared by all items of the request,
    so the prefix cache computes it once per call; put what varies least first
    (instructions, examples), then what the items share, and leave everything
    item-specific to the items.

    Attributes:
        messages: the shared part; the last message is the one each item completes.
        items: the texts to score, each appended to the last message as is.
        labels: the answers whose probabilities are read, e.g. ("Yes", "No") or words
            with a leading space after an answer prefix; each is read through its first
            token, so labels that share a first token get the same value. At most
            MAX_SCORE_LABELS.
        answer_prefix: text the answer starts with; the labels are what may follow it.
        item_answers: empty, or per item the text its answer goes on with after
            `answer_prefix` (e.g. the answer names the item: '"munich" is a').
    """

    messages: tuple[ChatMessage, ...]
    items: tuple[str, ...]
    labels: tuple[str, ...] = ("Yes", "No")
    answer_prefix: str = ""
    item_answers: tuple[str, ...] = ()


MAX_SCORE_LABELS = 20
"""Labels per ScoreRequest: vLLM returns at most `max_logprobs` (default 20) per token."""


@dataclass(frozen=True)
class ItemScore:
    """One item's answer: how likely each label is as the answer's next token.

    Attributes:
        label_logprobs: log P(label i's first token), in the order of
            `ScoreRequest.labels`; -inf where the engine reported none.
        prompt_token_count: the item's whole prompt, shared prefix included.
        cached_prompt_token_count: of those, tokens served from the prefix cache.
    """

    label_logprobs: tuple[float, ...]
    prompt_token_count: int
    cached_prompt_token_count: int = 0


@dataclass(frozen=True)
class ScoreResult:
    """The scores of a ScoreRequest's items, in the request's order, with totals.

    Token counts are sums over the items (each item is one engine request that
    generates one token), so they read like a GenerationResult's usage.
    """

    items: tuple[ItemScore, ...]
    label_token_ids: tuple[int, ...]
    """Each label's first token, in the order of the labels (equal for labels that share it)."""
    prompt_token_count: int
    output_token_count: int
    cached_prompt_token_count: int = 0
