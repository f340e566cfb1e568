"""RankPosts requests shared by the integration tests (one member, numbered candidates)."""

from __future__ import annotations

from genai.feed.v1 import feed_service_pb2 as feed_pb


def rank_request(n: int, explain_top_k: int = 0, text: str = "Lessons from migrating job") -> feed_pb.RankPostsRequest:
    return feed_pb.RankPostsRequest(
        member=feed_pb.MemberProfile(
            member_id="m-1",
            headline="Senior data engineer at Acme",
            interests=["spark", "kubernetes"],
            recent_activity=["liked a post about Rust async"],
        ),
        candidates=[
            feed_pb.CandidatePost(post_id=f"post-{i}", author=f"Author {i}", text=f"{text} {i}", topics=["data"])
            for i in range(n)
        ],
        explain_top_k=explain_top_k,
    )
