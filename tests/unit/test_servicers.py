"""Servicers through real gRPC stubs on an in-process server, with the engine double."""

from __future__ import annotations

import json
import re
import time

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
from genai_services.search import prompts as search_prompts
from genai_services.registry import REGISTRY

# A duplicate and an echo of the conversation among them: the service drops both.
SUGGESTIONS = "1. Yes, Monday works.\n2. yes monday works\n3. Are you free on Monday?\n4. Which time suits you?\n5. Sorry, I'm away."
# What the fake writes after a continued list's "Could you"; after any other opener it
# writes nothing, leaving an unusable bare opener ("Thanks", "Sure,").
CONTINUATION = " send me the agenda?"
REWRITE = "Thank you for reaching out. I would be glad to talk next week about the role."


def respond(request: GenerationRequest) -> str:
    schema = request.json_schema
    if request.messages[0].content == msg_prompts.SUGGEST_SYSTEM:
        if request.answer_prefix:
            return CONTINUATION if request.answer_prefix.endswith("Could you") else ""
        return SUGGESTIONS
    if schema is None:
        return REWRITE
    # The generations of UnderstandQuery: intent, correction, expansions.
    if "enum" in schema:
        return json.dumps("jobs")
    if schema.get("type") == "string":
        return json.dumps("python jobs Berlin")
    if schema.get("type") == "array":
        return json.dumps([f"python expansion {i}" for i in range(schema["maxItems"])])
    props = schema["properties"]
    if "reason" in props:
        post = re.search(r'<post [^>]*>([^<]*)</post>', request.messages[-1].content)
        return json.dumps({"reason": f"matches  {post.group(1) if post else '?'}"})
    raise AssertionError(f"unexpected schema {schema}")


def score_item(item: str) -> float | list[float]:
    """Feed: the fake's P(Yes), posts are "post N" and score N/1000, so higher N ranks
    first. Search: an entity span ('Berlin"?') reads as a city if it is Berlin, else as
    nothing in particular (every type word alike)."""
    post = re.search(r"post (\d+)", item)
    if post:
        return int(post.group(1)) / 1000
    labels = search_prompts.ENTITY_LABELS
    if item == 'Berlin"?':
        return [0.9 if label == " city" else 0.001 for label in labels]
    return [1 / len(labels)] * len(labels)


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
    return FakeEngine(respond, score_item=score_item)


@pytest.fixture()
def channel(fake: FakeEngine):
    with in_process_server(fake) as (channel, _):
        yield channel


def rank_request(n: int = 3, explain_top_k: int = 0) -> feed_pb.RankPostsRequest:
    return feed_pb.RankPostsRequest(
        member=feed_pb.MemberProfile(member_id="m1", headline="Data engineer", interests=["spark"]),
        candidates=[
            feed_pb.CandidatePost(post_id=f"p{i}", author="Ann", text=f"post {i}") for i in range(n)
        ],
        explain_top_k=explain_top_k,
    )


def test_rank_posts_orders_all_candidates(channel: grpc.Channel, fake: FakeEngine) -> None:
    response = feed_grpc.FeedServiceStub(channel).RankPosts(rank_request(3))
    assert [p.post_id for p in response.ranked_posts] == ["p2", "p1", "p0"]
    assert [round(p.relevance_score, 3) for p in response.ranked_posts] == [0.002, 0.001, 0.0]
    assert all(p.reason == "" for p in response.ranked_posts)
    assert not fake.requests, "reasons were generated without explain_top_k"
    assert len(fake.score_requests) == 1 and len(fake.score_requests[0].items) == 3
    assert response.usage.model == "fake-model"
    assert response.usage.output_token_count == 3
    assert 0 < response.usage.cached_prompt_token_count < response.usage.prompt_token_count


def test_rank_posts_500_candidates_each_once_as_given(channel: grpc.Channel, fake: FakeEngine) -> None:
    request = rank_request(500)
    # Ids exactly as given, however odd (they are opaque to the service; validation
    # trims surrounding whitespace, so none here).
    for i, c in enumerate(request.candidates):
        c.post_id = f"id/{i}:Ä #x"
    response = feed_grpc.FeedServiceStub(channel).RankPosts(request)
    ids = [p.post_id for p in response.ranked_posts]
    assert sorted(ids) == sorted(c.post_id for c in request.candidates)
    assert len(set(ids)) == 500
    scores = [p.relevance_score for p in response.ranked_posts]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert ids[0] == "id/499:Ä #x" and ids[-1] == "id/0:Ä #x"
    assert len(fake.score_requests) == 1 and len(fake.score_requests[0].items) == 500


def test_rank_posts_reasons_only_for_top_k(channel: grpc.Channel, fake: FakeEngine) -> None:
    response = feed_grpc.FeedServiceStub(channel).RankPosts(rank_request(20, explain_top_k=3))
    assert [p.post_id for p in response.ranked_posts[:3]] == ["p19", "p18", "p17"]
    # Each reason is about its own post (whitespace normalised), the rest have none.
    assert [p.reason for p in response.ranked_posts[:3]] == ["matches post 19", "matches post 18", "matches post 17"]
    assert all(p.reason == "" for p in response.ranked_posts[3:])
    assert len(fake.requests) == 3
    reason_ids = sorted(c.request_id for c in fake.calls[1:])
    assert len(set(reason_ids)) == 3, "reason generations share a request id"
    # Usage covers the scoring and the three reasons.
    assert response.usage.output_token_count > 20


def test_rank_posts_explain_more_than_candidates(channel: grpc.Channel, fake: FakeEngine) -> None:
    response = feed_grpc.FeedServiceStub(channel).RankPosts(rank_request(2, explain_top_k=10))
    assert all(p.reason for p in response.ranked_posts)
    assert len(fake.requests) == 2


def test_rank_posts_bad_explain_top_k_and_too_many_candidates(channel: grpc.Channel, fake: FakeEngine) -> None:
    with pytest.raises(grpc.RpcError) as info:
        feed_grpc.FeedServiceStub(channel).RankPosts(rank_request(501, explain_top_k=11))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in details(info.value)["BadRequest"].field_violations]
    assert fields == ["candidates", "explain_top_k"]
    assert not fake.score_requests


def test_rank_posts_deadline_aborts_scoring(fake: FakeEngine) -> None:
    fake.delay_s = 5.0
    with in_process_server(fake) as (channel, _):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            feed_grpc.FeedServiceStub(channel).RankPosts(rank_request(10), timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = started + 10
        while not fake.scores_aborted and time.monotonic() < deadline:
            time.sleep(0.05)
    assert fake.scores_aborted == [fake.calls[0].request_id]


def test_rank_posts_echoes_post_ids_as_given(channel: grpc.Channel) -> None:
    request = rank_request(3)
    for post, given in zip(request.candidates, ["post-1  ", "a", "a "]):
        post.post_id = given
    response = feed_grpc.FeedServiceStub(channel).RankPosts(request)
    # before: "post-1  " came back as "post-1", and "a"/"a " were refused as duplicates
    assert sorted(p.post_id for p in response.ranked_posts) == sorted(["post-1  ", "a", "a "])


def test_suggest_replies_returns_requested_count(channel: grpc.Channel) -> None:
    response = msg_grpc.MessagingServiceStub(channel).SuggestReplies(
        msg_pb.SuggestRepliesRequest(
            turns=[msg_pb.ConversationTurn(author="Bo", text="Are you free on Monday?")], suggestion_count=2
        )
    )
    assert list(response.suggestions) == ["Yes, Monday works.", "Which time suits you?"]


def test_suggest_replies_returns_fewer_rather_than_junk(channel: grpc.Channel) -> None:
    response = msg_grpc.MessagingServiceStub(channel).SuggestReplies(
        msg_pb.SuggestRepliesRequest(
            turns=[msg_pb.ConversationTurn(author="Bo", text="Are you free on Monday?")], suggestion_count=5
        )
    )
    # Three usable in the list; of the continued lines one is usable.
    assert list(response.suggestions) == [
        "Yes, Monday works.", "Which time suits you?", "Sorry, I'm away.", "Could you send me the agenda?"
    ]
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


def rewriter(first: str, second: str = REWRITE) -> FakeEngine:
    """A fake that answers the rewrite prompt with `first` and the prompt without an
    example with `second`."""

    def answer(request: GenerationRequest) -> str:
        return first if len(request.messages) == len(msg_prompts.REWRITE_PREFIX) + 1 else second

    return FakeEngine(answer)


def test_rewrite_that_copies_an_example_is_asked_again_without_examples() -> None:
    fake = rewriter(msg_prompts.REWRITE_EXAMPLE_ANSWERS[-1])
    request = msg_pb.StreamRewriteDraftRequest(draft="hi, talk?", tone=msg_pb.TONE_CASUAL, max_length_chars=500)
    with in_process_server(fake) as (channel, _):
        parts = list(msg_grpc.MessagingServiceStub(channel).StreamRewriteDraft(request))
    assert "".join(p.text_delta for p in parts) == REWRITE  # nothing of the copy was sent
    # Asked again without the example it copied.
    first, second = fake.requests
    copied = msg_prompts.REWRITE_EXAMPLE_ANSWERS[-1]
    assert copied in [m.content for m in first.messages] and copied not in [m.content for m in second.messages]
    assert len(second.messages) == len(first.messages) - 2
    assert fake.closed_early, "the copying generation was not aborted"
    # Both generations are paid for.
    assert parts[-1].usage.prompt_token_count == sum(len(fake.prompt_token_ids(r)) for r in fake.requests)


def test_rewrite_that_only_copies_examples_fails_instead_of_answering_junk() -> None:
    fake = rewriter(msg_prompts.REWRITE_EXAMPLE_ANSWERS[0], msg_prompts.REWRITE_EXAMPLE_ANSWERS[1])
    request = msg_pb.RewriteDraftRequest(draft="hi, talk?", tone=msg_pb.TONE_CASUAL, max_length_chars=500)
    with in_process_server(fake) as (channel, _):
        with pytest.raises(grpc.RpcError) as info:
            msg_grpc.MessagingServiceStub(channel).RewriteDraft(request)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "MODEL_OUTPUT_INVALID" in str(rpc_status.from_call(info.value))


def test_rewrite_that_loops_ends_before_the_first_repeated_sentence() -> None:
    fake = rewriter("Sorry for the late reply. I approve the budget. " * 8)
    request = msg_pb.RewriteDraftRequest(draft="late reply, budget ok", tone=msg_pb.TONE_CASUAL, max_length_chars=900)
    with in_process_server(fake) as (channel, _):
        response = msg_grpc.MessagingServiceStub(channel).RewriteDraft(request)
    assert response.text == "Sorry for the late reply. I approve the budget."
    assert not response.truncated
    assert fake.closed_early


def test_understand_query_maps_spans_and_correction(channel: grpc.Channel) -> None:
    query = "pyhton jobs in Berlin"
    response = search_grpc.SearchServiceStub(channel).UnderstandQuery(
        search_pb.UnderstandQueryRequest(query=query, expansion_count=2)
    )
    assert response.intent == search_pb.QUERY_INTENT_JOBS
    assert [(e.type, e.text) for e in response.entities] == [(search_pb.ENTITY_TYPE_LOCATION, "Berlin")]
    berlin = response.entities[0]
    assert query[berlin.start_offset_chars : berlin.end_offset_chars] == "Berlin"
    # Only the model's spelling fix is applied; the word it dropped ("in") stays.
    assert response.corrected_query == "python jobs in Berlin"
    assert list(response.expanded_queries) == ["python expansion 0", "python expansion 1"]


def test_understand_query_steps_run_as_separate_engine_requests(channel: grpc.Channel, fake: FakeEngine) -> None:
    response = search_grpc.SearchServiceStub(channel).UnderstandQuery(
        search_pb.UnderstandQueryRequest(query="pyhton jobs in Berlin"), metadata=(("x-request-id", "req-9"),)
    )
    # Three generations, then the two readings of the entity spans ("pyhton", "Berlin").
    assert sorted(c.request_id for c in fake.calls) == [f"req-9-{i}" for i in range(5)]
    assert [len(r.items) for r in fake.score_requests] == [2, 2]
    # Usage is the sum over the steps (the fake's prompt tokens are words, outputs are pieces).
    prompt_words = sum(sum(len(m.content.split()) for m in r.messages) for r in fake.requests)
    for r in fake.score_requests:
        shared = sum(len(m.content.split()) for m in r.messages)
        prompt_words += sum(shared + len(item.split()) for item in r.items)
    assert response.usage.prompt_token_count == prompt_words
    assert response.usage.output_token_count >= 3 + 4


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
    # Search's intent is a required part of its answer.
    fake.respond = lambda request: '{"truncated": '
    with in_process_server(fake) as (channel, _):
        with pytest.raises(grpc.RpcError) as info:
            search_grpc.SearchServiceStub(channel).UnderstandQuery(search_pb.UnderstandQueryRequest(query="x"))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert details(info.value)["ErrorInfo"].reason == "MODEL_OUTPUT_INVALID"


def test_unfinished_optional_parts_are_left_out_not_errors(fake: FakeEngine) -> None:
    # A reason, a correction, entities or expansions the model could not finish (e.g. cut
    # at the token limit) are left out; the rest of the answer stands.
    fake.respond = lambda request: json.dumps("jobs") if "enum" in (request.json_schema or {}) else '{"cut": '
    with in_process_server(fake) as (channel, _):
        ranked = feed_grpc.FeedServiceStub(channel).RankPosts(rank_request(2, explain_top_k=1))
        understood = search_grpc.SearchServiceStub(channel).UnderstandQuery(
            search_pb.UnderstandQueryRequest(query="pyhton jobs", expansion_count=2)
        )
    assert [p.reason for p in ranked.ranked_posts] == ["", ""]
    assert understood.intent == search_pb.QUERY_INTENT_JOBS
    assert (list(understood.entities), understood.corrected_query, list(understood.expanded_queries)) == ([], "", [])
    assert understood.usage.output_token_count > 0  # the dropped parts' tokens still count


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
