"""An in-memory engine for fast tests of servicers, conversion and errors."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence

from genai_core.config import AdmissionConfig
from genai_core.engine.admission import Admission, Ticket
from genai_core.engine.base import Engine
from genai_core.engine.call import CallContext
from genai_core.engine.types import (
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    ItemScore,
    ScoreRequest,
    ScoreResult,
)


class FakeEngine(Engine):
    """Streams `respond(request)` word by word (all at once for `final_only` requests);
    records requests and aborts.

    A prompt's tokens are its words. Admission and the prompt-length check are the
    base class's, as for the real engine. Scores each item of a ScoreRequest with
    `score_item(item)`: the first label's probability, the others' 0 (default 0.5), or
    one probability per label; after `delay_s`.
    """

    def __init__(
        self,
        respond: Callable[[GenerationRequest], str],
        delay_s: float = 0.0,
        admission: AdmissionConfig | None = None,
        max_model_len: int = 8192,
        score_item: Callable[[str], float | Sequence[float]] = lambda item: 0.5,
    ) -> None:
        super().__init__("fake-model", max_model_len, admission)
        self.respond = respond
        self.delay_s = delay_s
        self.score_item = score_item
        self.requests: list[GenerationRequest] = []
        self.score_requests: list[ScoreRequest] = []
        self.scores_aborted: list[str] = []
        self.calls: list[CallContext] = []
        self.closed_early: list[str] = []
        self.started = False

    async def start(self) -> None:
        self.started = True

    def prompt_token_ids(self, request: GenerationRequest) -> Sequence[int]:
        return [0] * (sum(len(m.content.split()) for m in request.messages) + len(request.answer_prefix.split()))

    async def _stream(
        self, request: GenerationRequest, prompt_ids: Sequence[int], call: CallContext
    ) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        self.calls.append(call)
        text = self.respond(request)
        words = text.split(" ")
        pieces = [w + " " for w in words[:-1]] + [words[-1]]
        prompt_tokens = len(prompt_ids)
        finished = False
        began = time.monotonic()
        first_token_s: float | None = None
        try:
            for i, piece in enumerate(pieces, 1):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                first_token_s = time.monotonic() - began if first_token_s is None else first_token_s
                finished = i == len(pieces)
                if not request.final_only:
                    yield GenerationChunk(piece, i, prompt_tokens, 0, "stop" if finished else None)
            if request.final_only:
                # As vLLM's FINAL_ONLY: one chunk with the whole text, and when the first token came.
                yield GenerationChunk(text, len(pieces), prompt_tokens, 0, "stop", first_token_s=first_token_s)
        finally:
            if not finished:
                self.closed_early.append(call.request_id)

    async def _score(self, request: ScoreRequest, call: CallContext) -> ScoreResult:
        self.score_requests.append(request)
        self.calls.append(call)
        shared = sum(len(m.content.split()) for m in request.messages)
        # Admitted by real cost, every item, as the vLLM engine does.
        tickets = self.admission.admit_many([shared + len(i.split()) for i in request.items], call.deadline)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.scores_aborted.append(call.request_id)
            raise
        finally:
            for ticket in tickets:
                ticket.release()
        items = []
        for item in request.items:
            p = self.score_item(item)
            probabilities = (p, *(0.0,) * (len(request.labels) - 1)) if isinstance(p, float | int) else tuple(p)
            tokens = shared + len(item.split())
            logprobs = tuple(math.log(q) if q > 0 else -math.inf for q in probabilities)
            items.append(ItemScore(logprobs, tokens, shared))
            call.stats.prompt_tokens += tokens
            call.stats.cached_prompt_tokens += shared
            call.stats.output_tokens += 1
        return ScoreResult(
            items=tuple(items),
            label_token_ids=tuple(range(len(request.labels))),
            prompt_token_count=sum(i.prompt_token_count for i in items),
            output_token_count=len(items),
            cached_prompt_token_count=shared * len(items),
        )

    def stats(self) -> EngineStats:
        return EngineStats()

    async def check_health(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class Held:
    """Waiting requests held in an admission queue; `release` lets them go."""

    def __init__(self, tickets: list[Ticket]) -> None:
        self.tickets = tickets

    def release(self) -> None:
        for ticket in self.tickets:
            ticket.release()


def congest(engine: Engine, wait_s: float) -> Held:
    """Make `engine`'s queue look about `wait_s` seconds long to a newcomer.

    Two requests started 2 s apart (inside admission's rate window) set a drain rate of
    one request a second; ceil(wait_s) waiting requests are held (release them when done).
    """
    offset = [-2.0]
    engine.admission = Admission(64, 10**6, clock=lambda: time.monotonic() + offset[0])
    engine.admission.admit(1).started()
    offset[0] = 0.0
    engine.admission.admit(1).started()
    return Held([engine.admission.admit(1) for _ in range(math.ceil(wait_s))])


def search_answer(request: GenerationRequest) -> str:
    """A valid answer to any of UnderstandQuery's step requests (intent, entities,
    correction, expansions), told apart by the shape of their schemas."""
    import json

    schema = request.json_schema or {}
    if "enum" in schema:
        return json.dumps(schema["enum"][0])
    if schema.get("type") == "string":
        return json.dumps("a b")
    if schema.get("type") == "array":
        return json.dumps(["a b"])
    return json.dumps({k: "" for k in schema.get("properties", {})})
