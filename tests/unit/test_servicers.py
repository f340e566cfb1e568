"""Servicers through real gRPC stubs on an in-process server, with the engine double."""

from __future__ import annotations

import json

import grpc
import pytest
from doubles import FakeEngine
from genai.feed.v1 import feed_service_pb2 as feed_pb
from genai.feed.v1 import feed_service_pb2_grpc as feed_grpc
from genai.messaging.v1 import messaging_service_pb2 as msg_pb
from genai.messaging.v1 import messaging_service_pb2_grpc as msg_grpc
from genai.search.v1 import search_service_pb2 as search_pb
from genai.search.v1 import search_service_pb2_grpc as search_grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from servers import in_process_server

from genai_core.engine.types import GenerationRequest
from genai_core.errors import EngineNotReady
from genai_services.messaging import prompts as msg_prompts
from genai_services.registry import REGISTRY

# A duplicate and an echo of the conversation among them: the service drops both.
SUGGESTIONS = "1. Reply number 0.\n2. reply number 0\n3. Are you free on Monday?\n4. Reply number 1.\n5. Reply number 2."
REWRITE = "Thank you for reaching out. I would be glad to talk next week about the role."


def respond(request: GenerationRequest) -> str:
    schema = request.json_schema
    if request.messages[0].content == msg_prompts.SUGGEST_SYSTEM:
        return SUGGESTIONS
    if schema is None:
        return REWRITE
    props = schema["properties"]
    if "intent" in props:
        n = props["expanded_queries"]["minItems"]
        return json.dumps(
            {
                "intent": "jobs",
                "entities": [{"type": "skill", "text": "python"}, {"type": "location", "text": "Berlin"}],
                "corrected_query": "python jobs Berlin",
                "expanded_queries": [f"expansion {i}" for i in range(n)],
            }
        )
    labels = schema["required"]
    return json.dumps({label: {"score": 10 * (i + 1), "reason": f"matches {label}"} for i, label in enumerate(labels)})


def details(error: grpc.RpcError) -> dict[str, object]:
    status = rpc_status.from_call(error)
    assert status is not None, "error carries no google.rpc.Status"
    out: dict[str, object] = {}
    for d in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if d.Is(cls.DESCRIPTOR):
                msg = cls()
                d.Unpack(msg)
                out[cls.__name__] = msg
    return out


@pytest.fixture()
def fake() -> FakeEngine:
    return FakeEngine(respond)


@pytest.fixture()
def channel(fake: FakeEngine):
    with in_process_server(fake) as (channel, _):
        yield channel


def rank_request(n: int = 3) -> feed_pb.RankPostsRequest:
    return feed_pb.RankPostsRequest(
        member=feed_pb.MemberProfile(member_id="m1", headline="Data engineer", interests=["spark"]),
        candidates=[
            feed_pb.CandidatePost(post_id=f"p{i}", author="Ann", text=f"post {i}") for i in range(n)
        ],
    )


def test_rank_posts_orders_all_candidates(channel: grpc.Channel) -> None:
    response = feed_grpc.FeedServiceStub(channel).RankPosts(rank_request(3))
    assert [p.post_id for p in response.ranked_posts] == ["p2", "p1", "p0"]
    assert [round(p.relevance_score, 2) for p in response.ranked_posts] == [0.3, 0.2, 0.1]
    assert response.ranked_posts[0].reason == "matches P3"
    assert response.usage.model == "fake-model"
    assert response.usage.output_token_count > 0


def test_suggest_replies_returns_requested_count(channel: grpc.Channel) -> None:
    response = msg_grpc.MessagingServiceStub(channel).SuggestReplies(
        msg_pb.SuggestRepliesRequest(
            turns=[msg_pb.ConversationTurn(author="Bo", text="Are you free on Monday?")], suggestion_count=2
        )
    )
    assert list(response.suggestions) == ["Reply number 0.", "Reply number 1."]


def test_suggest_replies_returns_fewer_rather_than_junk(channel: grpc.Channel) -> None:
    response = msg_grpc.MessagingServiceStub(channel).SuggestReplies(
        msg_pb.SuggestRepliesRequest(
            turns=[msg_pb.ConversationTurn(author="Bo", text="Are you free on Monday?")], suggestion_count=5
        )
    )
    assert list(response.suggestions) == ["Reply number 0.", "Reply number 1.", "Reply number 2."]
    assert response.usage.output_token_count > 0


def test_stream_rewrite_concatenates_to_unary(channel: grpc.Channel, fake: FakeEngine) -> None:
    stub = msg_grpc.MessagingServiceStub(channel)
    fields = dict(draft="hi, talk?", tone=msg_pb.TONE_PROFESSIONAL, max_length_chars=500)
    parts = list(stub.StreamRewriteDraft(msg_pb.StreamRewriteDraftRequest(**fields)))
    unary = stub.RewriteDraft(msg_pb.RewriteDraftRequest(**fields))
    assert len(parts) > 2
    assert "".join(p.text_delta for p in parts) == unary.text == REWRITE
    assert not unary.truncated
    assert parts[-1].HasField("usage") and not parts[0].HasField("usage")


def test_rewrite_cut_at_word_boundary_and_generation_stopped(channel: grpc.Channel, fake: FakeEngine) -> None:
    stub = msg_grpc.MessagingServiceStub(channel)
    request = msg_pb.RewriteDraftRequest(draft="hi", tone=msg_pb.TONE_CONCISE, max_length_chars=30)
    response = stub.RewriteDraft(request)
    assert response.truncated
    assert len(response.text) <= 30
    assert REWRITE.startswith(response.text) and REWRITE[len(response.text)] == " "
    assert fake.closed_early, "the engine stream was not closed once the limit was reached"


def test_understand_query_maps_spans_and_correction(channel: grpc.Channel) -> None:
    query = "pyhton jobs in Berlin"
    response = search_grpc.SearchServiceStub(channel).UnderstandQuery(
        search_pb.UnderstandQueryRequest(query=query, expansion_count=2)
    )
    assert response.intent == search_pb.QUERY_INTENT_JOBS
    assert [(e.type, e.text) for e in response.entities] == [(search_pb.ENTITY_TYPE_LOCATION, "Berlin")]
    berlin = response.entities[0]
    assert query[berlin.start_offset_chars : berlin.end_offset_chars] == "Berlin"
    assert response.corrected_query == "python jobs Berlin"
    assert list(response.expanded_queries) == ["expansion 0", "expansion 1"]


def test_bad_request_names_every_field(channel: grpc.Channel, fake: FakeEngine) -> None:
    request = rank_request(2)
    request.member.headline = ""
    request.candidates[1].post_id = "p0"
    with pytest.raises(grpc.RpcError) as info:
        feed_grpc.FeedServiceStub(channel).RankPosts(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    d = details(info.value)
    assert d["ErrorInfo"].reason == "INVALID_REQUEST"
    assert d["ErrorInfo"].domain == "genai.feed.v1.FeedService"
    fields = [v.field for v in d["BadRequest"].field_violations]
    assert fields == ["member.headline", "candidates[1].post_id"]
    assert not fake.requests, "a bad request reached the engine"


def test_unknown_enum_value_rejected(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        msg_grpc.MessagingServiceStub(channel).StreamRewriteDraft(
            msg_pb.StreamRewriteDraftRequest(draft="hello", tone=42, max_length_chars=100)
        ).next()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details(info.value)["BadRequest"].field_violations] == ["tone"]


def test_unparsable_model_output_is_internal_with_reason(fake: FakeEngine) -> None:
    fake.respond = lambda request: '{"truncated": '
    with in_process_server(fake) as (channel, _):
        with pytest.raises(grpc.RpcError) as info:
            feed_grpc.FeedServiceStub(channel).RankPosts(rank_request(1))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert details(info.value)["ErrorInfo"].reason == "MODEL_OUTPUT_INVALID"


def test_engine_not_ready_is_unavailable(fake: FakeEngine) -> None:
    def not_ready(request: GenerationRequest) -> str:
        raise EngineNotReady("loading")

    fake.respond = not_ready
    with in_process_server(fake) as (channel, _):
        with pytest.raises(grpc.RpcError) as info:
            search_grpc.SearchServiceStub(channel).UnderstandQuery(search_pb.UnderstandQueryRequest(query="x"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert details(info.value)["ErrorInfo"].reason == "ENGINE_NOT_READY"


def test_unexpected_error_hides_internals_and_returns_request_id(fake: FakeEngine) -> None:
    def boom(request: GenerationRequest) -> str:
        raise RuntimeError("secret prompt text")

    fake.respond = boom
    with in_process_server(fake) as (channel, _):
        with pytest.raises(grpc.RpcError) as info:
            search_grpc.SearchServiceStub(channel).UnderstandQuery(
                search_pb.UnderstandQueryRequest(query="x"), metadata=(("x-request-id", "req-123"),)
            )
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in info.value.details()
    assert "req-123" in info.value.details()
    assert ("x-request-id", "req-123") in tuple(info.value.trailing_metadata())


def test_health_per_service_follows_readiness(fake: FakeEngine) -> None:
    with in_process_server(fake, serving=False) as (channel, running):
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", *REGISTRY.full_names):
            status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING, name
        import asyncio

        asyncio.run_coroutine_threadsafe(running.set_serving(True), running.server._loop).result(5)  # type: ignore[attr-defined]
        for name in ("", *REGISTRY.full_names):
            status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
            assert status == health_pb2.HealthCheckResponse.SERVING, name
