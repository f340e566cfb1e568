"""The ranking benchmark's workload and report, without an engine."""

from __future__ import annotations

import pytest

from genai_bench import ranking
from genai_services.feed import convert, prompts


@pytest.mark.parametrize("size", [10, 100, 500])
def test_ranking_requests_are_valid_exact_size_and_deterministic(size: int) -> None:
    requests = ranking.ranking_requests(size, 2, seed=3)
    assert [len(r.candidates) for r in requests] == [size, size]
    assert requests == ranking.ranking_requests(size, 2, seed=3)
    assert requests[0] != requests[1]
    data = convert.rank_posts_from_pb(requests[0])  # the service would accept it
    assert len(prompts.build_score_request(data).items) == size


def test_listwise_requests_fit_their_schema() -> None:
    data = convert.rank_posts_from_pb(ranking.ranking_requests(5, 1)[0])
    request = ranking.build_listwise_request(data)
    assert request.json_schema == ranking.response_schema(5)


def test_summary_and_markdown() -> None:
    run = ranking.RankRun("rankposts", True, 100, 8, latencies_s=[1.0, 2.0, 4.0], wall_s=5.0, prompt_tokens=1000, cached_tokens=700)
    summary = run.summary()
    assert summary["items_per_s"] == pytest.approx(60.0)
    assert summary["call_p50_s"] == 2.0 and summary["call_p99_s"] == 4.0
    assert summary["s_per_candidate"] == pytest.approx(0.02)
    assert summary["cached_prompt_share"] == pytest.approx(0.7)
    failed = ranking.RankRun("listwise", False, 20, errors=["PromptTooLong: x"]).summary()
    text = ranking.markdown({"model_label": "m", "command": "genai bench", "runs": [summary, failed]})
    assert "| rankposts | on | 100 | 8 | 3 | 60.0 |" in text
    assert "- listwise, prefix cache off, 20 per call: PromptTooLong: x" in text


def test_pooled_requests_share_their_posts_and_keep_their_members() -> None:
    requests = ranking.ranking_requests(10, 4, seed=1, pool=25)
    ids = [{c.post_id for c in r.candidates} for r in requests]
    assert all(len(i) == 10 for i in ids)
    assert len(set().union(*ids)) <= 25 and len(set().union(*ids)) > 10
    assert len({r.member.member_id for r in requests}) == 4
    with pytest.raises(ValueError):
        ranking.ranking_requests(10, 1, pool=5)
