"""RankPosts at feed scale against `genai serve` on the real vLLM CPU engine (tiny model).

The tiny model's weights are random, so scores are noise; what is asserted is what the
service guarantees whatever the model says: every candidate exactly once, scores that
are probabilities, reasons only where asked, and a cancelled call leaves no work behind.
"""

from __future__ import annotations

import time

import grpc
import pytest
from genai.feed.v1 import feed_service_pb2 as feed_pb
from genai.feed.v1 import feed_service_pb2_grpc as feed_grpc
from metrics_scrape import scrape
from genai_testing.procs import ServerProcess

from feed_requests import rank_request

pytestmark = pytest.mark.engine


def test_rank_100_candidates_with_reasons_for_top_3(channel: grpc.Channel) -> None:
    response = feed_grpc.FeedServiceStub(channel).RankPosts(rank_request(100, explain_top_k=3), timeout=300)
    ids = [p.post_id for p in response.ranked_posts]
    assert sorted(ids) == sorted(f"post-{i}" for i in range(100))
    scores = [p.relevance_score for p in response.ranked_posts]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert all(0 < len(p.reason) <= 160 for p in response.ranked_posts[:3])
    assert all(p.reason == "" for p in response.ranked_posts[3:])
    usage = response.usage
    # One output token per candidate plus the reasons; the shared prefix came from the cache.
    assert usage.output_token_count > 100
    assert 0 < usage.cached_prompt_token_count < usage.prompt_token_count


def test_rank_without_reasons_scores_in_one_token_each(channel: grpc.Channel) -> None:
    response = feed_grpc.FeedServiceStub(channel).RankPosts(rank_request(10), timeout=120)
    assert len(response.ranked_posts) == 10
    assert all(p.reason == "" for p in response.ranked_posts)
    assert response.usage.output_token_count == 10


def test_scores_do_not_depend_on_position(channel: grpc.Channel) -> None:
    stub = feed_grpc.FeedServiceStub(channel)
    request = rank_request(12)
    forward = {p.post_id: p.relevance_score for p in stub.RankPosts(request, timeout=120).ranked_posts}
    reversed_request = feed_pb.RankPostsRequest(member=request.member, candidates=list(reversed(request.candidates)))
    backward = {p.post_id: p.relevance_score for p in stub.RankPosts(reversed_request, timeout=120).ranked_posts}
    assert forward.keys() == backward.keys()
    assert all(abs(forward[k] - backward[k]) < 1e-3 for k in forward)


def test_scoring_is_counted_in_metrics(server: ServerProcess, channel: grpc.Channel) -> None:
    stub = feed_grpc.FeedServiceStub(channel)
    # Posts long enough to fill whole KV blocks; the second member's call ranks the same
    # posts, whose prompts do not depend on the member: the prefix cache serves them.
    request = rank_request(7, text="Lessons from migrating our job scheduler to Kubernetes, part " * 20)
    stub.RankPosts(request, timeout=120)
    before = scrape(server.metrics_port)
    request.member.member_id, request.member.headline = "m-2", "Product designer"
    response = stub.RankPosts(request, timeout=120)
    after = scrape(server.metrics_port)
    assert after["genai_scored_items_total"] - before.get("genai_scored_items_total", 0) == 7
    cached = after["genai_cached_prompt_tokens_total"] - before.get("genai_cached_prompt_tokens_total", 0)
    assert cached == response.usage.cached_prompt_token_count > response.usage.prompt_token_count / 2


def test_cancelled_call_aborts_all_its_requests(server: ServerProcess, channel: grpc.Channel) -> None:
    # 500 long candidates: enough prefill work to cancel the call while it runs.
    request = rank_request(500, text="word " * 380)
    call = feed_grpc.FeedServiceStub(channel).RankPosts.future(request, timeout=300)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sample = scrape(server.metrics_port)
        if sample.get("vllm:num_requests_running", 0) + sample.get("vllm:num_requests_waiting", 0) > 0:
            break
        assert not call.done(), "the call finished before it could be cancelled"
        time.sleep(0.02)
    else:
        raise AssertionError("the call never reached the engine")
    call.cancel()
    started = time.monotonic()
    while time.monotonic() - started < 5.0:
        sample = scrape(server.metrics_port)
        if sample.get("vllm:num_requests_running", 1) == 0 and sample.get("vllm:num_requests_waiting", 1) == 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"engine still busy 5 s after the cancel: {scrape(server.metrics_port)}")
    sample = scrape(server.metrics_port)
    assert sample["genai_engine_running_requests"] == 0
    assert sample["genai_engine_waiting_requests"] == 0
    assert sample["genai_admission_waiting_requests"] == 0
