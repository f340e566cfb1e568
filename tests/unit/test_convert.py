"""Proto <-> domain conversion and request validation for all three services."""

from __future__ import annotations

import math

import pytest
from genai.feed.v1 import feed_service_pb2 as feed_pb
from genai.messaging.v1 import messaging_service_pb2 as msg_pb
from genai.search.v1 import search_service_pb2 as search_pb

from genai_core.engine.types import ItemScore, ScoreResult
from genai_core.errors import FieldViolation, InvalidRequest
from genai_core.validation import Violations
from genai_services.feed import convert as feed_convert
from genai_services.feed.domain import Member, Post, RankedPost, RankPostsInput
from genai_services.feed import prompts as feed_prompts
from genai_services.messaging import convert as msg_convert
from genai_services.messaging.domain import Tone, Turn
from genai_services.search import convert as search_convert
from genai_services.search.domain import Entity, EntityType, Intent, QueryUnderstanding, UnderstandQueryInput


def violations(fn, request) -> dict[str, str]:
    """Run a converter expected to reject `request`; field path -> description."""
    with pytest.raises(InvalidRequest) as info:
        fn(request)
    err = info.value
    assert err.reason == "INVALID_REQUEST"
    assert all(isinstance(v, FieldViolation) for v in err.violations)
    fields = [v.field for v in err.violations]
    assert len(fields) == len(set(fields)), f"a field reported twice: {fields}"
    for field in fields:
        assert field in err.message
    return {v.field: v.description for v in err.violations}


# --- genai_core.validation ----------------------------------------------------


def test_violations_collects_all_then_raises():
    v = Violations()
    assert v.text("a", "  padded  ", max_chars=20) == "padded"
    v.text("b", "", max_chars=5)
    v.text("c", "toolong", max_chars=3)
    v.text("d", "nul\x00", max_chars=10)
    v.text("e", "", max_chars=5, required=False)
    assert [i.field for i in v.items] == ["b", "c", "d"]
    with pytest.raises(InvalidRequest) as info:
        v.raise_if_any()
    assert [i.field for i in info.value.violations] == ["b", "c", "d"]


def test_opaque_fields_come_back_exactly_as_given():
    v = Violations()
    assert v.opaque("a", "  post-1  ", max_chars=20) == "  post-1  "
    v.opaque("b", " \t ", max_chars=5)
    v.opaque("c", "toolong", max_chars=3)
    assert [i.field for i in v.items] == ["b", "c"]


def test_feed_ids_are_kept_exactly_and_differ_by_whitespace():
    request = feed_request(2, member_id=" m-1 ")
    request.candidates[0].post_id = "a"
    request.candidates[1].post_id = "a "
    data = feed_convert.rank_posts_from_pb(request)  # before: "a" and "a " were rejected as duplicates
    assert data.member.member_id == " m-1 "
    assert [p.post_id for p in data.candidates] == ["a", "a "]


def test_violations_nothing_to_raise():
    Violations().raise_if_any()  # must not raise


# --- feed ----------------------------------------------------------------------


def feed_request(n: int = 2, **member_kwargs) -> feed_pb.RankPostsRequest:
    member = dict(member_id="m-1", headline="Data engineer", interests=["spark"], recent_activity=["liked x"])
    member.update(member_kwargs)
    return feed_pb.RankPostsRequest(
        member=feed_pb.MemberProfile(**member),
        candidates=[
            feed_pb.CandidatePost(post_id=f"p{i}", author=f"A{i}", text=f"text {i}", topics=["data"])
            for i in range(n)
        ],
    )


def test_feed_valid_request_converts():
    request = feed_request(2, headline="  Data engineer  ")
    data = feed_convert.rank_posts_from_pb(request)
    assert data == RankPostsInput(
        member=Member("m-1", "Data engineer", ("spark",), ("liked x",)),
        candidates=(
            Post("p0", "A0", "text 0", ("data",)),
            Post("p1", "A1", "text 1", ("data",)),
        ),
    )


def test_feed_max_candidates_accepted():
    assert len(feed_convert.rank_posts_from_pb(feed_request(feed_convert.MAX_CANDIDATES)).candidates) == 500


def test_feed_missing_member():
    request = feed_request(1)
    request.ClearField("member")
    bad = violations(feed_convert.rank_posts_from_pb, request)
    assert bad["member"] == "must be set"


def test_feed_empty_headline():
    bad = violations(feed_convert.rank_posts_from_pb, feed_request(1, headline="   "))
    assert set(bad) == {"member.headline"}
    assert "empty" in bad["member.headline"]


def test_feed_headline_too_long():
    assert len(feed_convert.rank_posts_from_pb(feed_request(1, headline="h" * 300)).member.headline) == 300
    bad = violations(feed_convert.rank_posts_from_pb, feed_request(1, headline="h" * 301))
    assert set(bad) == {"member.headline"}
    assert "300" in bad["member.headline"]


def test_feed_too_many_candidates():
    bad = violations(feed_convert.rank_posts_from_pb, feed_request(501))
    assert set(bad) == {"candidates"}
    assert "501" in bad["candidates"]


@pytest.mark.parametrize("k", [0, 1, 10])
def test_feed_explain_top_k_in_range(k):
    request = feed_request(2)
    request.explain_top_k = k
    assert feed_convert.rank_posts_from_pb(request).explain_top_k == k


@pytest.mark.parametrize("k", [-1, 11])
def test_feed_explain_top_k_out_of_range(k):
    request = feed_request(2)
    request.explain_top_k = k
    bad = violations(feed_convert.rank_posts_from_pb, request)
    assert set(bad) == {"explain_top_k"}
    assert "10" in bad["explain_top_k"]


def test_feed_no_candidates():
    bad = violations(feed_convert.rank_posts_from_pb, feed_request(0))
    assert set(bad) == {"candidates"}


def test_feed_duplicate_post_id_named_at_second():
    request = feed_request(3)
    request.candidates[1].post_id = "p0"
    bad = violations(feed_convert.rank_posts_from_pb, request)
    assert set(bad) == {"candidates[1].post_id"}
    assert "duplicate" in bad["candidates[1].post_id"]


def test_feed_empty_candidate_text():
    request = feed_request(2)
    request.candidates[0].text = ""
    bad = violations(feed_convert.rank_posts_from_pb, request)
    assert set(bad) == {"candidates[0].text"}


def test_feed_too_many_interests():
    bad = violations(feed_convert.rank_posts_from_pb, feed_request(1, interests=["i"] * 21))
    assert set(bad) == {"member.interests"}
    assert feed_convert.rank_posts_from_pb(feed_request(1, interests=["i"] * 20)).member.interests == ("i",) * 20


def test_feed_empty_interest_is_named_by_index():
    bad = violations(feed_convert.rank_posts_from_pb, feed_request(1, interests=["ok", " "]))
    assert set(bad) == {"member.interests[1]"}


def test_feed_every_bad_field_reported_at_once():
    request = feed_request(3, headline="", interests=["i"] * 21)
    request.candidates[0].text = ""
    request.candidates[2].post_id = "p1"
    request.candidates[1].topics.append("t" * 61)
    bad = violations(feed_convert.rank_posts_from_pb, request)
    assert set(bad) == {
        "member.headline",
        "member.interests",
        "candidates[0].text",
        "candidates[1].topics[1]",
        "candidates[2].post_id",
    }


def test_feed_rank_posts_to_pb():
    out = feed_convert.rank_posts_to_pb([RankedPost("p1", 0.75, "Matches spark.")])
    assert len(out) == 1
    assert out[0].post_id == "p1"
    assert out[0].relevance_score == pytest.approx(0.75)
    assert out[0].reason == "Matches spark."


# --- feed: rank by label probability (feed/prompts.py) ---------------------------


def rank_input(n: int) -> RankPostsInput:
    return RankPostsInput(
        member=Member("m", "h", (), ()),
        candidates=tuple(Post(f"p{i}", "a", "t", ()) for i in range(n)),
    )


def scores(p_words: list[float]) -> ScoreResult:
    """Each post's probability of the member's first word; the second is impossible."""
    items = tuple(ItemScore((math.log(p) if p else -math.inf, -math.inf), 10) for p in p_words)
    return ScoreResult(items, (1, 2), prompt_token_count=10 * len(items), output_token_count=len(items))


def test_rank_orders_by_probability_of_the_members_words_with_ties_in_request_order():
    ranked = feed_prompts.rank(rank_input(6), scores([0.5, 0.9, 0.5, 0.0, 0.5, 1.0]))
    assert [r.post_id for r in ranked] == ["p5", "p1", "p0", "p2", "p4", "p3"]
    assert [r.relevance_score for r in ranked] == [1.0, 0.9, 0.5, 0.5, 0.5, 0.0]
    assert all(r.reason == "" for r in ranked)


def test_rank_all_tied_keeps_request_order():
    ranked = feed_prompts.rank(rank_input(10), scores([0.42] * 10))
    assert [r.post_id for r in ranked] == [f"p{i}" for i in range(10)]
    assert {r.relevance_score for r in ranked} == {0.42}


def test_rank_sums_each_distinct_token_once():
    # Labels 0 and 1 share a token (e.g. " machine learning", " machine vision"): counted once.
    item = ItemScore((math.log(0.2), math.log(0.2), math.log(0.1)), 10)
    result = ScoreResult((item,), (7, 7, 9), prompt_token_count=10, output_token_count=1)
    (ranked,) = feed_prompts.rank(rank_input(1), result)
    assert ranked.relevance_score == pytest.approx(0.3)


def test_rank_needs_one_score_per_candidate():
    with pytest.raises(ValueError):
        feed_prompts.rank(rank_input(3), scores([0.1, 0.2]))


def test_reason_whitespace_is_normalised():
    assert feed_prompts.parse_reason({"reason": "  Matches\n spark   jobs "}) == "Matches spark jobs"


# --- messaging: suggest --------------------------------------------------------


def suggest_request(n_turns: int = 2, count: int = 3) -> msg_pb.SuggestRepliesRequest:
    return msg_pb.SuggestRepliesRequest(
        turns=[
            msg_pb.ConversationTurn(author=f"u{i}", text=f"hello {i}", from_member=i % 2 == 1)
            for i in range(n_turns)
        ],
        suggestion_count=count,
    )


def test_suggest_valid_request_converts():
    data = msg_convert.suggest_replies_from_pb(suggest_request(2, 4))
    assert data.turns == (Turn("u0", "hello 0", False), Turn("u1", "hello 1", True))
    assert data.suggestion_count == 4


def test_suggest_no_turns():
    bad = violations(msg_convert.suggest_replies_from_pb, suggest_request(0))
    assert set(bad) == {"turns"}


def test_suggest_too_many_turns():
    assert set(violations(msg_convert.suggest_replies_from_pb, suggest_request(31))) == {"turns"}


def test_suggest_empty_turn_text():
    request = suggest_request(2)
    request.turns[0].text = " \n "
    bad = violations(msg_convert.suggest_replies_from_pb, request)
    assert set(bad) == {"turns[0].text"}


@pytest.mark.parametrize("count", [0, 6, -1])
def test_suggest_count_out_of_range(count):
    bad = violations(msg_convert.suggest_replies_from_pb, suggest_request(1, count))
    assert set(bad) == {"suggestion_count"}
    assert str(count) in bad["suggestion_count"]


@pytest.mark.parametrize("count", [1, 5])
def test_suggest_count_edges_accepted(count):
    assert msg_convert.suggest_replies_from_pb(suggest_request(1, count)).suggestion_count == count


def test_suggest_all_bad_fields_reported():
    request = suggest_request(2, 0)
    request.turns[1].text = ""
    request.turns[0].author = "a" * 121
    bad = violations(msg_convert.suggest_replies_from_pb, request)
    assert set(bad) == {"turns[0].author", "turns[1].text", "suggestion_count"}


# --- messaging: rewrite --------------------------------------------------------


# The streaming RPC may take a request type of its own with the same fields.
REWRITE_REQUEST_TYPES = [msg_pb.RewriteDraftRequest] + (
    [msg_pb.StreamRewriteDraftRequest] if hasattr(msg_pb, "StreamRewriteDraftRequest") else []
)


def rewrite_request(cls=msg_pb.RewriteDraftRequest, **kwargs):
    fields = dict(draft="Hi, can we talk?", tone=msg_pb.TONE_FRIENDLY, max_length_chars=200)
    fields.update(kwargs)
    return cls(**fields)


@pytest.mark.parametrize("cls", REWRITE_REQUEST_TYPES)
def test_rewrite_valid_request_converts(cls):
    data = msg_convert.rewrite_draft_from_pb(rewrite_request(cls, draft="  Hi there  "))
    assert data.draft == "Hi there"
    assert data.tone is Tone.FRIENDLY
    assert data.max_length_chars == 200


def test_rewrite_every_proto_tone_maps():
    named = {v.number for v in msg_pb.Tone.DESCRIPTOR.values if v.number != 0}
    assert set(msg_convert.TONES) == named
    assert set(msg_convert.TONES.values()) == set(Tone)
    for number, tone in msg_convert.TONES.items():
        assert msg_convert.rewrite_draft_from_pb(rewrite_request(tone=number)).tone is tone


def test_rewrite_tone_unspecified():
    bad = violations(msg_convert.rewrite_draft_from_pb, rewrite_request(tone=msg_pb.TONE_UNSPECIFIED))
    assert bad == {"tone": "must be set"}


@pytest.mark.parametrize("cls", REWRITE_REQUEST_TYPES)
def test_rewrite_tone_unknown_number(cls):
    request = rewrite_request(cls, tone=99)  # proto3 open enum: 99 is accepted on the wire
    assert request.tone == 99
    bad = violations(msg_convert.rewrite_draft_from_pb, request)
    assert set(bad) == {"tone"}
    assert "unknown value 99" in bad["tone"]
    assert "TONE_FRIENDLY" in bad["tone"]


@pytest.mark.parametrize("limit", [19, 2001, 0])
def test_rewrite_length_limit_out_of_range(limit):
    bad = violations(msg_convert.rewrite_draft_from_pb, rewrite_request(max_length_chars=limit))
    assert set(bad) == {"max_length_chars"}
    assert str(limit) in bad["max_length_chars"]


@pytest.mark.parametrize("limit", [20, 2000])
def test_rewrite_length_limit_edges_accepted(limit):
    assert msg_convert.rewrite_draft_from_pb(rewrite_request(max_length_chars=limit)).max_length_chars == limit


def test_rewrite_empty_draft():
    bad = violations(msg_convert.rewrite_draft_from_pb, rewrite_request(draft="   "))
    assert set(bad) == {"draft"}


def test_rewrite_draft_too_long():
    bad = violations(msg_convert.rewrite_draft_from_pb, rewrite_request(draft="d" * 4001))
    assert set(bad) == {"draft"}


@pytest.mark.parametrize("cls", REWRITE_REQUEST_TYPES)
def test_rewrite_all_bad_fields_reported(cls):
    bad = violations(msg_convert.rewrite_draft_from_pb, cls(draft="", tone=0, max_length_chars=5))
    assert set(bad) == {"draft", "tone", "max_length_chars"}


# --- search ----------------------------------------------------------------------


def test_search_valid_request_converts():
    data = search_convert.understand_query_from_pb(
        search_pb.UnderstandQueryRequest(query=" java jobs berlin ", locale="en-US", expansion_count=5)
    )
    assert data == UnderstandQueryInput(query="java jobs berlin", locale="en-US", expansion_count=5)


def test_search_expansion_count_zero_becomes_default():
    data = search_convert.understand_query_from_pb(search_pb.UnderstandQueryRequest(query="java"))
    assert data.expansion_count == search_convert.DEFAULT_EXPANSIONS == 3
    assert data.locale == ""


@pytest.mark.parametrize("count", [1, 10])
def test_search_expansion_count_edges_accepted(count):
    data = search_convert.understand_query_from_pb(search_pb.UnderstandQueryRequest(query="java", expansion_count=count))
    assert data.expansion_count == count


def test_search_empty_query():
    bad = violations(search_convert.understand_query_from_pb, search_pb.UnderstandQueryRequest(query="  "))
    assert set(bad) == {"query"}


def test_search_query_too_long():
    assert len(search_convert.understand_query_from_pb(search_pb.UnderstandQueryRequest(query="q" * 256)).query) == 256
    bad = violations(search_convert.understand_query_from_pb, search_pb.UnderstandQueryRequest(query="q" * 257))
    assert set(bad) == {"query"}
    assert "257" in bad["query"]


@pytest.mark.parametrize("count", [11, -1])
def test_search_expansion_count_out_of_range(count):
    bad = violations(
        search_convert.understand_query_from_pb, search_pb.UnderstandQueryRequest(query="java", expansion_count=count)
    )
    assert set(bad) == {"expansion_count"}


@pytest.mark.parametrize("locale", ["not a locale!", "e", "en_US", "en-", "-US", "en-US-"])
def test_search_bad_locale(locale):
    bad = violations(search_convert.understand_query_from_pb, search_pb.UnderstandQueryRequest(query="java", locale=locale))
    assert set(bad) == {"locale"}


@pytest.mark.parametrize("locale", ["en-US", "de", "zh-Hant-TW", "es-419"])
def test_search_good_locale(locale):
    data = search_convert.understand_query_from_pb(search_pb.UnderstandQueryRequest(query="java", locale=locale))
    assert data.locale == locale


def test_search_all_bad_fields_reported():
    bad = violations(
        search_convert.understand_query_from_pb,
        search_pb.UnderstandQueryRequest(query="", locale="not a locale!", expansion_count=11),
    )
    assert set(bad) == {"query", "locale", "expansion_count"}


def test_search_to_pb():
    u = QueryUnderstanding(
        intent=Intent.PEOPLE,
        entities=(Entity(EntityType.COMPANY, "Acme", 10, 14),),
        corrected_query=None,
        expanded_queries=("acme staff",),
    )
    response = search_convert.understand_query_to_pb(u)
    assert response.intent == search_pb.QUERY_INTENT_PEOPLE
    assert response.entities[0].type == search_pb.ENTITY_TYPE_COMPANY
    assert (response.entities[0].start_offset_chars, response.entities[0].end_offset_chars) == (10, 14)
    assert not response.HasField("corrected_query")
    assert list(response.expanded_queries) == ["acme staff"]
    with_correction = search_convert.understand_query_to_pb(
        QueryUnderstanding(Intent.JOBS, (), "java jobs", ())
    )
    assert with_correction.HasField("corrected_query")
    assert with_correction.corrected_query == "java jobs"


def test_search_enum_maps_cover_the_protos():
    assert set(search_convert.INTENTS) == set(Intent)
    assert set(search_convert.INTENTS.values()) == {
        v.number for v in search_pb.QueryIntent.DESCRIPTOR.values if v.number
    }
    assert set(search_convert.ENTITY_TYPES) == set(EntityType)
    assert set(search_convert.ENTITY_TYPES.values()) == {
        v.number for v in search_pb.EntityType.DESCRIPTOR.values if v.number
    }
