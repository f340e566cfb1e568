"""Every typed error maps to one status with ErrorInfo; transport-level faults too."""

from __future__ import annotations

import grpc
import pytest
from doubles import FakeEngine, congest, search_answer
from genai.feed.v1 import feed_service_pb2 as feed_pb
from genai.search.v1 import search_service_pb2 as search_pb
from genai.search.v1 import search_service_pb2_grpc as search_grpc
from google.rpc import code_pb2, error_details_pb2
from servers import in_process_server

from genai_core.config import parse_config
from genai_core.engine.types import GenerationRequest
from genai_core.errors import (
    DeadlineTooShort,
    Draining,
    EngineDead,
    Overloaded,
    RequestTimedOut,
)
from genai_core.grpc_runtime.status import to_rpc_status


def unpack(status, cls):  # type: ignore[no-untyped-def]
    for d in status.details:
        if d.Is(cls.DESCRIPTOR):
            msg = cls()
            d.Unpack(msg)
            return msg
    return None


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (Overloaded("waiting_requests", 64, 64, 2.5), grpc.StatusCode.RESOURCE_EXHAUSTED, "QUEUE_FULL"),
        (DeadlineTooShort(0.2, 3.0), grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_TOO_SHORT"),
        (RequestTimedOut("late"), grpc.StatusCode.DEADLINE_EXCEEDED, "REQUEST_TIMEOUT"),
        (Draining("bye"), grpc.StatusCode.UNAVAILABLE, "SERVER_DRAINING"),
        (EngineDead("dead"), grpc.StatusCode.UNAVAILABLE, "ENGINE_DEAD"),
    ],
)
def test_mapping(error, code, reason) -> None:  # type: ignore[no-untyped-def]
    got_code, status = to_rpc_status(error, "genai.x.v1.X")
    assert got_code == code
    assert status.code == getattr(code_pb2, code.name)
    info = unpack(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == (reason, "genai.x.v1.X")
    assert reason.isupper()


def test_overloaded_carries_retry_delay_and_quota_failure() -> None:
    _, status = to_rpc_status(Overloaded("waiting_prompt_tokens", 900, 1000, 2.5), "d")
    retry = unpack(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToMilliseconds() == 2500
    quota = unpack(status, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject == "replica:waiting_prompt_tokens"


def respond(request: GenerationRequest) -> str:
    return search_answer(request)


def test_malformed_bytes_are_invalid_argument_not_internal() -> None:
    with in_process_server(FakeEngine(respond)) as (channel, _):
        raw = channel.unary_unary("/genai.search.v1.SearchService/UnderstandQuery")
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\xff\xff\xff garbage")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_draining_server_refuses_new_calls_with_unavailable() -> None:
    fake = FakeEngine(respond)
    with in_process_server(fake) as (channel, running):
        running.interceptor.draining = True
        with pytest.raises(grpc.RpcError) as info:
            search_grpc.SearchServiceStub(channel).UnderstandQuery(search_pb.UnderstandQueryRequest(query="x"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not fake.requests


def test_priorities_and_deadlines_reach_the_engine() -> None:
    import time

    fake = FakeEngine(respond)
    config = parse_config(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "admission": {
                "max_request_time_s": 30,
                "method_priorities": {"genai.search.v1.SearchService/UnderstandQuery": 3},
            },
        }
    )
    with in_process_server(fake, config) as (channel, _):
        stub = search_grpc.SearchServiceStub(channel)
        before = time.monotonic()
        stub.UnderstandQuery(search_pb.UnderstandQueryRequest(query="x"), timeout=5)
        stub.UnderstandQuery(search_pb.UnderstandQueryRequest(query="x"))
    # UnderstandQuery makes one engine request per step (3 generations, 2 readings of the
    # entity spans); every step gets the call's priority and deadline.
    assert len(fake.calls) == 10
    short, unbounded = fake.calls[0], fake.calls[-1]
    assert {c.priority for c in fake.calls} == {3}
    assert {c.deadline for c in fake.calls[:5]} == {short.deadline}
    assert short.priority == 3
    assert short.deadline is not None and before + 3 < short.deadline <= before + 5.5
    # No client deadline: the server's maximum request time applies.
    assert unbounded.deadline is not None and unbounded.deadline > before + 25


def test_feed_ranking_runs_at_batch_priority_by_default() -> None:
    import json

    labels = lambda r: {k: {"score": 1, "reason": "r"} for k in r.json_schema["required"]}  # noqa: E731
    fake = FakeEngine(lambda r: json.dumps(labels(r)))
    from genai.feed.v1 import feed_service_pb2_grpc as feed_grpc

    with in_process_server(fake) as (channel, _):
        feed_grpc.FeedServiceStub(channel).RankPosts(
            feed_pb.RankPostsRequest(
                member=feed_pb.MemberProfile(member_id="m", headline="h"),
                candidates=[feed_pb.CandidatePost(post_id="p", author="a", text="t")],
            )
        )
    assert fake.calls[0].priority == 10


# --- admission on the engine double: the same refusals as the real engine ------------


def test_full_queue_is_resource_exhausted_before_the_engine_runs() -> None:
    from genai_core.config import AdmissionConfig

    fake = FakeEngine(respond, admission=AdmissionConfig(max_waiting_requests=1))
    held = fake.admission.admit(prompt_tokens=1)  # a request waiting for its first token
    try:
        with in_process_server(fake) as (channel, _):
            with pytest.raises(grpc.RpcError) as info:
                search_grpc.SearchServiceStub(channel).UnderstandQuery(search_pb.UnderstandQueryRequest(query="x"))
    finally:
        held.release()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    from grpc_status import rpc_status

    status = rpc_status.from_call(info.value)
    assert unpack(status, error_details_pb2.ErrorInfo).reason == "QUEUE_FULL"
    assert unpack(status, error_details_pb2.RetryInfo) is not None
    assert not fake.requests
    assert fake.admission.waiting == 0


def test_deadline_shorter_than_the_queue_is_refused() -> None:
    from grpc_status import rpc_status

    fake = FakeEngine(respond)
    held = congest(fake, wait_s=10)
    try:
        with in_process_server(fake) as (channel, _):
            with pytest.raises(grpc.RpcError) as info:
                search_grpc.SearchServiceStub(channel).UnderstandQuery(
                    search_pb.UnderstandQueryRequest(query="x"), timeout=5
                )
    finally:
        held.release()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    reason = unpack(rpc_status.from_call(info.value), error_details_pb2.ErrorInfo).reason
    assert reason == "DEADLINE_TOO_SHORT"
    assert not fake.requests


def test_admitted_request_leaves_the_queue() -> None:
    fake = FakeEngine(respond)
    with in_process_server(fake) as (channel, _):
        search_grpc.SearchServiceStub(channel).UnderstandQuery(search_pb.UnderstandQueryRequest(query="x"))
    assert (len(fake.requests), len(fake.score_requests)) == (3, 2)  # one per UnderstandQuery step
    assert (fake.admission.waiting, fake.admission.waiting_tokens) == (0, 0)
    # The steps' starts were counted: several starts give a drain rate.
    assert fake.admission.drain_rate() is not None


def test_prompt_longer_than_the_context_is_invalid_argument() -> None:
    from grpc_status import rpc_status

    fake = FakeEngine(respond, max_model_len=200)
    with in_process_server(fake) as (channel, _):
        with pytest.raises(grpc.RpcError) as info:
            search_grpc.SearchServiceStub(channel).UnderstandQuery(search_pb.UnderstandQueryRequest(query="x"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert unpack(rpc_status.from_call(info.value), error_details_pb2.ErrorInfo).reason == "PROMPT_TOO_LONG"
    assert not fake.requests
