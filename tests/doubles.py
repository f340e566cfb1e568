"""An in-memory engine for fast tests of servicers, conversion and errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

from genai_core.config import AdmissionConfig
from genai_core.engine.admission import Admission, Ticket
from genai_core.engine.base import Engine
from genai_core.engine.call import CallContext
from genai_core.engine.types import EngineStats, GenerationChunk, GenerationRequest


class FakeEngine(Engine):
    """Streams `respond(request)` word by word; records requests and aborts.

    A prompt's tokens are its words. Admission and the prompt-length check are the
    base class's, as for the real engine.
    """

    def __init__(
        self,
        respond: Callable[[GenerationRequest], str],
        delay_s: float = 0.0,
        admission: AdmissionConfig | None = None,
        max_model_len: int = 8192,
    ) -> None:
        super().__init__("fake-model", max_model_len, admission)
        self.respond = respond
        self.delay_s = delay_s
        self.requests: list[GenerationRequest] = []
        self.calls: list[CallContext] = []
        self.closed_early: list[str] = []
        self.started = False

    async def start(self) -> None:
        self.started = True

    def prompt_token_ids(self, request: GenerationRequest) -> Sequence[int]:
        return [0] * sum(len(m.content.split()) for m in request.messages)

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
        try:
            for i, piece in enumerate(pieces, 1):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                finished = i == len(pieces)
                yield GenerationChunk(piece, i, prompt_tokens, 0, "stop" if finished else None)
        finally:
            if not finished:
                self.closed_early.append(call.request_id)

    def stats(self) -> EngineStats:
        return EngineStats()

    async def check_health(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def congest(engine: Engine, wait_s: float) -> Ticket:
    """Make `engine`'s queue look `wait_s` seconds long to a newcomer (wait_s < 15).

    Two requests started 2 * wait_s apart set the drain rate; one waiting request is
    held (release the returned ticket when done).
    """
    offset = [-2 * wait_s]
    engine.admission = Admission(64, 10**6, clock=lambda: time.monotonic() + offset[0])
    engine.admission.admit(1).started()
    offset[0] = 0.0
    engine.admission.admit(1).started()
    return engine.admission.admit(1)


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
