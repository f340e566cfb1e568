"""Every RPC through generated stubs against `genai serve` on the real vLLM CPU engine.

The tiny model has random weights, so texts are noise; what is asserted is what the
service guarantees whatever the model says: typed, schema-valid, complete answers.
"""

from __future__ import annotations

import concurrent.futures
import urllib.request

import grpc
import pytest
from genai.feed.v1 import feed_service_pb2 as feed_pb
from genai.feed.v1 import feed_service_pb2_grpc as feed_grpc
from genai.messaging.v1 import messaging_service_pb2 as msg_pb
from genai.messaging.v1 import messaging_service_pb2_grpc as msg_grpc
from genai.search.v1 import search_service_pb2 as search_pb
from genai.search.v1 import search_service_pb2_grpc as search_grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from feed_requests import rank_request
from genai_testing.procs import ServerProcess

from genai_services.messaging.domain import Turn, usable_replies
from genai_services.feed.convert import MAX_CANDIDATES
from genai_services.registry import REGISTRY

pytestmark = pytest.mark.engine

SERVICES = list(REGISTRY.full_names)


def test_health_serving_overall_and_per_service(server: ServerProcess) -> None:
    for name in ["", *SERVICES]:
        assert server.health(name) == health_pb2.HealthCheckResponse.SERVING, name


def test_reflection_lists_services(channel: grpc.Channel) -> None:
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert set(SERVICES) | {"grpc.health.v1.Health"} <= services


def test_rank_posts(channel: grpc.Channel) -> None:
    response = feed_grpc.FeedServiceStub(channel).RankPosts(rank_request(4), timeout=120)
    assert sorted(p.post_id for p in response.ranked_posts) == [f"post-{i}" for i in range(4)]
    scores = [p.relevance_score for p in response.ranked_posts]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(len(p.reason) <= 160 for p in response.ranked_posts)
    assert response.usage.prompt_token_count > 0 and response.usage.output_token_count > 0


def test_suggest_replies(channel: grpc.Channel) -> None:
    response = msg_grpc.MessagingServiceStub(channel).SuggestReplies(
        msg_pb.SuggestRepliesRequest(
            turns=[
                msg_pb.ConversationTurn(author="Recruiter", text="Would you be open to a call on Tuesday?"),
            ],
            suggestion_count=3,
        ),
        timeout=120,
    )
    # Random weights: the service drops every line that fails its checks and returns
    # fewer rather than junk (the proto's contract), so only an upper bound holds.
    assert len(response.suggestions) <= 3
    assert usable_replies(response.suggestions, [Turn("Recruiter", "Would you be open to a call on Tuesday?", False)]) == tuple(
        response.suggestions
    )
    assert response.usage.output_token_count > 0


def test_rewrite_unary_and_stream(channel: grpc.Channel) -> None:
    stub = msg_grpc.MessagingServiceStub(channel)
    fields = dict(draft="hey can u send me the report asap thx", tone=msg_pb.TONE_PROFESSIONAL, max_length_chars=120)
    unary = stub.RewriteDraft(msg_pb.RewriteDraftRequest(**fields), timeout=120)
    assert len(unary.text) <= 120
    assert unary.usage.output_token_count > 0
    parts = list(stub.StreamRewriteDraft(msg_pb.StreamRewriteDraftRequest(**fields), timeout=120))
    assert len(parts) >= 2, "the rewrite was not streamed"
    assert parts[-1].HasField("usage")
    streamed = "".join(p.text_delta for p in parts)
    assert len(streamed) <= 120
    # Greedy decoding of the same prompt: both paths give the same text.
    assert streamed == unary.text


def test_understand_query(channel: grpc.Channel) -> None:
    query = "senior pyhton developer jobs in Zürich"
    response = search_grpc.SearchServiceStub(channel).UnderstandQuery(
        search_pb.UnderstandQueryRequest(query=query, locale="de-CH", expansion_count=2), timeout=120
    )
    assert response.intent != search_pb.QUERY_INTENT_UNSPECIFIED
    for entity in response.entities:
        assert entity.type != search_pb.ENTITY_TYPE_UNSPECIFIED
        assert query[entity.start_offset_chars : entity.end_offset_chars] == entity.text
    assert len(response.expanded_queries) <= 2


def test_prefix_cache_reuses_fixed_instructions(channel: grpc.Channel) -> None:
    stub = search_grpc.SearchServiceStub(channel)
    stub.UnderstandQuery(search_pb.UnderstandQueryRequest(query="data engineer"), timeout=120)
    second = stub.UnderstandQuery(search_pb.UnderstandQueryRequest(query="product manager berlin"), timeout=120)
    assert second.usage.cached_prompt_token_count > 0


def test_concurrent_calls_all_succeed(channel: grpc.Channel) -> None:
    stub = search_grpc.SearchServiceStub(channel)
    queries = [f"query number {i}" for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda q: stub.UnderstandQuery(search_pb.UnderstandQueryRequest(query=q), timeout=180), queries))
    assert len(results) == 8 and all(r.usage.output_token_count > 0 for r in results)


def test_invalid_request_on_real_server(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        feed_grpc.FeedServiceStub(channel).RankPosts(rank_request(MAX_CANDIDATES + 1), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_metrics_endpoint(server: ServerProcess, channel: grpc.Channel) -> None:
    search_grpc.SearchServiceStub(channel).UnderstandQuery(search_pb.UnderstandQueryRequest(query="sre"), timeout=120)
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    assert 'genai_requests_total{code="OK",method="UnderstandQuery",service="genai.search.v1.SearchService"}' in body
    assert "vllm:num_requests_running" in body
