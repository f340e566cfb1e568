"""What a hostile or broken client must not do to a replica (issue 16), on the double.

The same promises are checked against the real server in tests/adversarial.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from doubles import FakeEngine
from genai.feed.v1 import feed_service_pb2 as feed_pb
from genai.feed.v1 import feed_service_pb2_grpc as feed_grpc
from genai.messaging.v1 import messaging_service_pb2 as msg_pb
from genai.messaging.v1 import messaging_service_pb2_grpc as msg_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rawh2 import RawH2Client
from servers import in_process_server
from test_servicers import details

from genai_core.config import EngineConfig, parse_config
from genai_core.engine import vllm_engine
from genai_core.engine.call import CallContext
from genai_core.engine.types import ChatMessage, GenerationRequest
from genai_core.errors import EngineDead
from genai_core.grpc_runtime import status
from genai_core.observability import metrics

STREAM = "/genai.messaging.v1.MessagingService/StreamRewriteDraft"
STREAM_REQUEST = msg_pb.StreamRewriteDraftRequest(
    draft="hi there", tone=msg_pb.TONE_PROFESSIONAL, max_length_chars=2000
).SerializeToString()


def test_stalled_reader_is_cut_at_max_request_time_and_its_generation_aborted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A client with a flow-control window of 0 and no deadline: before the fix the
    # call stayed open (and its engine request alive) for as long as the client
    # kept the connection.
    engine = FakeEngine(lambda r: "word " * 2000, delay_s=0.001)
    config = parse_config({"server": {"host": "127.0.0.1", "port": 0}, "admission": {"max_request_time_s": 1.5}})
    with in_process_server(engine, config) as (_, running):
        client = RawH2Client(f"127.0.0.1:{running.port}", initial_window=0)
        try:
            client.call(STREAM, STREAM_REQUEST)
            deadline = time.monotonic() + 20
            while not engine.closed_early and time.monotonic() < deadline:
                client.pump(0.2)
            assert len(engine.calls) == 1
            assert engine.closed_early == [engine.calls[0].request_id]
        finally:
            client.close()
        time.sleep(0.5)  # the stream's end after the client left, then the server stops
    # Before: the servicer's generator, left suspended, was closed by the garbage
    # collector in another task: "Task exception was never retrieved ... created in a
    # different Context" at ERROR.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


class _FakeLlm:
    """vLLM's AsyncLLM as far as the watchdog sees it: outputs on demand."""

    errored = False

    def __init__(self, outputs: int | None) -> None:
        self.outputs = outputs  # None: never produce anything (a stalled engine)

    async def check_health(self) -> None:
        return None

    async def generate(self, prompt: Any, params: Any, request_id: str, priority: int = 0) -> AsyncIterator[Any]:
        if self.outputs is None:
            await asyncio.sleep(3600)
        for i in range(self.outputs or 0):
            completion = type("C", (), {"token_ids": [i], "text": "x", "finish_reason": None})()
            yield type("O", (), {"outputs": [completion], "finished": False, "num_cached_tokens": 0, "metrics": None})()


def _engine(monkeypatch: pytest.MonkeyPatch, llm: _FakeLlm) -> vllm_engine.VllmEngine:
    engine = vllm_engine.VllmEngine(EngineConfig(model="m", stall_timeout_s=1), "m")
    engine._llm = llm
    monkeypatch.setattr(engine, "render_prompt", lambda request: [1, 2, 3])
    monkeypatch.setattr(vllm_engine, "sampling_params", lambda request: None)
    return engine


REQUEST = GenerationRequest(messages=(ChatMessage("user", "hi"),), max_output_tokens=8)


def test_watchdog_ignores_a_request_whose_consumer_does_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(monkeypatch, _FakeLlm(outputs=5))

    async def scenario() -> None:
        stream = engine.stream(REQUEST, CallContext())
        await anext(stream)  # the consumer takes one chunk, then stops reading
        engine._last_progress -= 60  # long past stall_timeout_s
        await engine.check_health()  # before the fix: EngineDead "stopped making progress"
        await stream.aclose()

    asyncio.run(scenario())
    asyncio.run(engine.check_health())  # still healthy afterwards: raises EngineDead otherwise


def test_watchdog_still_catches_an_engine_that_produces_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(monkeypatch, _FakeLlm(outputs=None))

    async def scenario() -> None:
        task = asyncio.create_task(anext(engine.stream(REQUEST, CallContext())))
        await asyncio.sleep(0.05)  # the request now waits on the engine
        engine._last_progress -= 60
        try:
            with pytest.raises(EngineDead):
                await engine.check_health()
        finally:
            task.cancel()

    asyncio.run(scenario())


def test_a_call_past_the_clients_deadline_counts_as_deadline_exceeded() -> None:
    # grpc cancels the handler when the client's deadline passes; before the fix the
    # interceptor counted that as CANCELLED.
    engine = FakeEngine(lambda r: "word " * 50, delay_s=0.1)
    service, method = "genai.messaging.v1.MessagingService", "RewriteDraft"
    counter = metrics.REQUESTS.labels(service, method, "DEADLINE_EXCEEDED")
    before = counter._value.get()
    with in_process_server(engine) as (channel, _):
        stub = msg_grpc.MessagingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.RewriteDraft(
                msg_pb.RewriteDraftRequest(draft="hi there", tone=msg_pb.TONE_PROFESSIONAL, max_length_chars=2000),
                timeout=0.5,
            )
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        end = time.monotonic() + 10
        while counter._value.get() == before and time.monotonic() < end:
            time.sleep(0.05)
    assert counter._value.get() == before + 1


UNARY = "/genai.messaging.v1.MessagingService/RewriteDraft"
UNARY_REQUEST = msg_pb.RewriteDraftRequest(
    draft="hi there", tone=msg_pb.TONE_PROFESSIONAL, max_length_chars=200
).SerializeToString()


@pytest.mark.parametrize(
    "given",
    [b"id\twith-tab", b"id\x7fdel", "caf\u00e9".encode(), b"\xff\xfe-raw", b"id\r\nx-evil: 1", b"has space",
     b"x" * 129],
    ids=["tab", "del", "non-ascii", "raw-bytes", "crlf", "space", "too-long"],
)
def test_a_bad_request_id_is_replaced_and_the_call_succeeds(given: bytes) -> None:
    # Before the fix the id was echoed in the trailer, grpc refused it after the work
    # was done, and the client got INTERNAL (or the stream a reset) for a call the
    # server logged as OK.
    with in_process_server(FakeEngine(lambda r: "a fine rewrite")) as (_, running):
        client = RawH2Client(f"127.0.0.1:{running.port}")
        try:
            stream = client.call(UNARY, UNARY_REQUEST, metadata=[(b"x-request-id", given)], timeout_s=10)
            result = client.wait(stream, 10)
        finally:
            client.close()
    assert result.grpc_status == 0, result
    echoed = result.trailers[b"x-request-id"].decode()
    assert echoed != given.decode(errors="replace") and len(echoed) == 32 and echoed.isalnum()


def test_a_valid_request_id_is_echoed_as_given() -> None:
    given = "".join(chr(c) for c in range(0x21, 0x7F))[:128]
    with in_process_server(FakeEngine(lambda r: "a fine rewrite")) as (_, running):
        client = RawH2Client(f"127.0.0.1:{running.port}")
        try:
            stream = client.call(UNARY, UNARY_REQUEST, metadata=[(b"x-request-id", given.encode())], timeout_s=10)
            result = client.wait(stream, 10)
        finally:
            client.close()
    assert result.grpc_status == 0
    assert result.trailers[b"x-request-id"] == given.encode()


def _maximal_bad_rank_request() -> feed_pb.RankPostsRequest:
    """Every field of RankPosts wrong at once, with long values that descriptions echo."""
    long_id = "dup-" * 2500
    return feed_pb.RankPostsRequest(
        member=feed_pb.MemberProfile(member_id=long_id, headline=" ", interests=[" "] * 20, recent_activity=[""] * 10),
        candidates=[
            feed_pb.CandidatePost(post_id=long_id, author="", text="", topics=[""] * 10) for _ in range(20)
        ],
    )


def test_a_maximal_bad_request_gets_invalid_argument_with_bounded_details() -> None:
    # Before the fix: ~300 violations, each echoing a 10,000-character id, made trailers
    # far past grpc's 16 KiB default and the client saw RESOURCE_EXHAUSTED, not our status.
    with in_process_server(FakeEngine(lambda r: "")) as (channel, _):
        with pytest.raises(grpc.RpcError) as caught:
            feed_grpc.FeedServiceStub(channel).RankPosts(_maximal_bad_rank_request(), timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    found = details(error)
    bad_request, info = found["BadRequest"], found["ErrorInfo"]
    assert 0 < len(bad_request.field_violations) <= status.MAX_FIELD_VIOLATIONS
    total = int(info.metadata["field_violations"])
    assert total > 250
    assert int(info.metadata["field_violations_omitted"]) == total - len(bad_request.field_violations)
    assert all(len(v.description) <= status.MAX_DESCRIPTION_CHARS for v in bad_request.field_violations)
    assert len(error.details()) <= status.MAX_MESSAGE_CHARS and "more" in error.details()
    trailers = sum(len(k) + len(v) for k, v in error.trailing_metadata())
    assert trailers < 8 * 1024


def test_draining_ends_health_watch_streams_after_not_serving() -> None:
    # Before: Watch streams never ended, so every open watcher held the drain for the
    # whole grace period.
    with in_process_server(FakeEngine(lambda r: "")) as (channel, running):
        responses = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(responses).status == health_pb2.HealthCheckResponse.SERVING
        asyncio.run_coroutine_threadsafe(running.start_draining(), running.loop).result(timeout=5)
        rest = [r.status for r in responses]  # ends (OK), well before the 10 s deadline
        assert rest and rest[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
        assert responses.code() == grpc.StatusCode.OK


def test_a_long_call_survives_client_keepalive_pings() -> None:
    # A 4 s unary call that sends no data while it runs, the client pinging every
    # second (as Java/Go clients set to 10 s do over a 30-40 s call: the same count of
    # pings per call). grpc's default policy allows 2 "too early" pings and then sends
    # GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"), failing the call: it did before the fix.
    engine = FakeEngine(lambda r: "w " * 40, delay_s=0.1)
    with in_process_server(engine) as (_, running):
        client = RawH2Client(f"127.0.0.1:{running.port}")
        try:
            stream = client.call(UNARY, UNARY_REQUEST, timeout_s=30)
            result = client.streams[stream]
            pings = 0
            while not result.done and not client.closed and pings < 30:
                client.ping()
                pings += 1
                client.pump(1.0)
        finally:
            client.close()
    assert client.goaway is None, client.goaway
    assert result.grpc_status == 0, result
    assert pings >= 4 and client.pings_acked >= pings - 1


class _HangingShutdownLlm(_FakeLlm):
    def shutdown(self) -> None:
        threading.Event().wait()  # vLLM's join of its engine core, never returning


def test_engine_shutdown_is_bounded_and_kills_what_it_left(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(monkeypatch, _HangingShutdownLlm(outputs=1))
    monkeypatch.setattr(vllm_engine, "ENGINE_SHUTDOWN_TIMEOUT_S", 0.5)
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(3600,), daemon=True)
    child.start()
    try:
        began = time.monotonic()
        asyncio.run(engine.shutdown())  # before: hung for good with its thread
        assert time.monotonic() - began < 5
        child.join(timeout=10)
        assert child.exitcode is not None and child.exitcode < 0  # killed
    finally:
        if child.is_alive():
            child.kill()
