"""What the engine base class makes of an engine's outputs: final-only vs streamed
requests, their metrics, and stream-interval batching (engine double, no vLLM)."""

from __future__ import annotations

import asyncio
import gc

from doubles import FakeEngine
from prometheus_client import REGISTRY

from genai_core.engine.call import CallContext
from genai_core.engine.types import ChatMessage, GenerationChunk, GenerationRequest
from genai_core.observability import gc_pauses

TEN_WORDS = "one two three four five six seven eight nine ten"
REQUEST = GenerationRequest(messages=(ChatMessage("user", "hi there"),), max_output_tokens=32)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def call(method: str) -> CallContext:
    return CallContext(service="test.Outputs", method=method)


def counts(method: str) -> tuple[float, float]:
    labels = {"service": "test.Outputs", "method": method}
    return (
        value("genai_time_to_first_token_seconds_count", **labels),
        value("genai_inter_token_latency_seconds_count", **labels),
    )


def test_generate_asks_for_the_final_output_only_and_records_the_engines_ttft() -> None:
    fake = FakeEngine(lambda r: TEN_WORDS)
    before = counts("Generate")
    context = call("Generate")
    result = asyncio.run(fake.generate(REQUEST, context))
    assert result.text == TEN_WORDS and result.output_token_count == 10
    assert [r.final_only for r in fake.requests] == [True]
    ttft, itl = counts("Generate")
    # One TTFT (the engine's own), no inter-token gaps: the tokens came in one piece.
    assert (ttft - before[0], itl - before[1]) == (1, 0)
    assert context.stats.ttft_s is not None and context.stats.output_tokens == 10
    assert fake.admission.waiting == 0


def test_stream_asks_for_deltas_and_records_n_minus_1_gaps() -> None:
    fake = FakeEngine(lambda r: TEN_WORDS)
    before = counts("Stream")

    async def run() -> list[GenerationChunk]:
        return [c async for c in fake.stream(REQUEST, call("Stream"))]

    chunks = asyncio.run(run())
    assert len(chunks) == 10 and [r.final_only for r in fake.requests] == [False]
    ttft, itl = counts("Stream")
    assert (ttft - before[0], itl - before[1]) == (1, 9)


def test_stream_interval_merges_close_chunks_but_keeps_per_token_gaps() -> None:
    fake = FakeEngine(lambda r: TEN_WORDS)
    fake.stream_interval_s = 3600.0  # everything after the first chunk is "too close"
    before = counts("Batched")

    async def run() -> list[GenerationChunk]:
        return [c async for c in fake.stream(REQUEST, call("Batched"))]

    chunks = asyncio.run(run())
    # The first chunk goes out at once (TTFT is not delayed), the rest with the last.
    assert [c.text_delta for c in chunks] == ["one ", "two three four five six seven eight nine ten"]
    assert [c.output_token_count for c in chunks] == [1, 10]
    assert chunks[-1].finish_reason == "stop"
    ttft, itl = counts("Batched")
    assert (ttft - before[0], itl - before[1]) == (1, 9)


def test_stream_interval_zero_passes_every_chunk() -> None:
    fake = FakeEngine(lambda r: TEN_WORDS, delay_s=0.001)

    async def run() -> list[GenerationChunk]:
        return [c async for c in fake.stream(REQUEST, call("Unbatched"))]

    assert len(asyncio.run(run())) == 10


def test_gc_pauses_are_measured_by_generation() -> None:
    gc_pauses.watch()
    gc_pauses.watch()  # idempotent: one callback
    try:
        assert gc.callbacks.count(gc_pauses._on_gc) == 1
        before = value("genai_gc_pause_seconds_count", generation="2")
        gc.collect(2)
        assert value("genai_gc_pause_seconds_count", generation="2") == before + 1
    finally:
        gc_pauses.unwatch()
    assert gc_pauses._on_gc not in gc.callbacks


def test_freeze_heap_moves_live_objects_out_of_collections() -> None:
    try:
        assert gc_pauses.freeze_heap() > 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_score_takes_one_to_twenty_labels() -> None:
    import pytest

    from genai_core.engine.types import MAX_SCORE_LABELS, ScoreRequest

    fake = FakeEngine(lambda r: "", score_item=lambda item: 0.25)
    head = (ChatMessage("user", "q"),)
    for labels in ((), tuple(f" w{i}" for i in range(MAX_SCORE_LABELS + 1))):
        with pytest.raises(ValueError):
            asyncio.run(fake.score(ScoreRequest(head, ("a",), labels), call("Score")))
    assert fake.score_requests == []  # refused before the engine saw it
    with pytest.raises(ValueError):  # item answers, when given, are one per item
        asyncio.run(fake.score(ScoreRequest(head, ("a", "b"), (" w",), item_answers=("x",)), call("Score")))
    assert fake.score_requests == []
    labels = tuple(f" w{i}" for i in range(MAX_SCORE_LABELS))
    result = asyncio.run(fake.score(ScoreRequest(head, ("a", "b"), labels), call("Score")))
    assert len(result.items) == 2 and len(result.items[0].label_logprobs) == MAX_SCORE_LABELS


def test_score_sampling_params_ask_each_token_once() -> None:
    from genai_core.engine.vllm_engine import label_logprobs, score_sampling_params

    params = score_sampling_params((7, 7, 9))
    assert params.logprob_token_ids == [7, 9] and params.max_tokens == 1
    # Labels that share a token get its value; a token the engine did not report is -inf.
    assert label_logprobs({7: -1.0, 9: -2.0}, (7, 7, 9, 11)) == (-1.0, -1.0, -2.0, float("-inf"))
