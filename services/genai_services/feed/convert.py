"""The one place where feed protos and feed domain types meet."""

from __future__ import annotations

from collections.abc import Sequence

from genai.feed.v1 import feed_service_pb2 as pb

from genai_core.validation import Violations
from genai_services.feed.domain import Member, Post, RankedPost, RankPostsInput

MAX_CANDIDATES = 500
"""Most candidates one RankPosts call may carry (each is scored as one engine request)."""
MAX_EXPLAIN_TOP_K = 10
"""Most reasons one call may ask for (each is a short generation)."""


def rank_posts_from_pb(request: pb.RankPostsRequest) -> RankPostsInput:
    """Validate and convert a request.

    Raises:
        InvalidRequest: naming every bad field.
    """
    v = Violations()
    if not request.HasField("member"):
        v.add("member", "must be set")
    m = request.member
    member = Member(
        member_id=v.opaque("member.member_id", m.member_id, max_chars=128),
        headline=v.text("member.headline", m.headline, max_chars=300),
        interests=tuple(v.texts("member.interests", m.interests, max_items=20, max_chars=60)),
        recent_activity=tuple(
            v.texts("member.recent_activity", m.recent_activity, max_items=10, max_chars=300)
        ),
    )
    v.count("candidates", len(request.candidates), minimum=1, maximum=MAX_CANDIDATES, what="posts")
    posts: list[Post] = []
    seen: set[str] = set()
    for i, c in enumerate(request.candidates[:MAX_CANDIDATES]):
        field = f"candidates[{i}]"
        post_id = v.opaque(f"{field}.post_id", c.post_id, max_chars=128)
        if post_id and post_id in seen:
            v.add(f"{field}.post_id", f"duplicate post_id {post_id!r}")
        seen.add(post_id)
        posts.append(
            Post(
                post_id=post_id,
                author=v.text(f"{field}.author", c.author, max_chars=120),
                text=v.text(f"{field}.text", c.text, max_chars=2000),
                topics=tuple(v.texts(f"{field}.topics", c.topics, max_items=10, max_chars=60)),
            )
        )
    if not 0 <= request.explain_top_k <= MAX_EXPLAIN_TOP_K:
        v.add("explain_top_k", f"must be between 0 and {MAX_EXPLAIN_TOP_K}, got {request.explain_top_k}")
    v.raise_if_any()
    return RankPostsInput(member=member, candidates=tuple(posts), explain_top_k=request.explain_top_k)


def rank_posts_to_pb(ranked: Sequence[RankedPost]) -> list[pb.RankedPost]:
    return [
        pb.RankedPost(post_id=r.post_id, relevance_score=r.relevance_score, reason=r.reason)
        for r in ranked
    ]
