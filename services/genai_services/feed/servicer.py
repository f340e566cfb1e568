"""FeedService: validate → score every candidate → (reasons for the top K) → map result."""

from __future__ import annotations

import dataclasses

import grpc
from genai.feed.v1 import feed_service_pb2 as pb
from genai.feed.v1 import feed_service_pb2_grpc as pb_grpc

from genai_core.engine.base import Engine
from genai_core.grpc_runtime.interceptor import current_call
from genai_services.common import ServiceDefinition, run_concurrently, total_usage_to_pb
from genai_services.feed import convert, prompts


class FeedServicer(pb_grpc.FeedServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def RankPosts(
        self, request: pb.RankPostsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RankPostsResponse:
        data = convert.rank_posts_from_pb(request)
        call = current_call()
        scores = await self.engine.score(prompts.build_score_request(data), call)
        ranked = prompts.rank(data, scores)
        top = ranked[: data.explain_top_k]
        posts = {p.post_id: p for p in data.candidates}
        # Reasons are extras: one the model cannot finish is left empty, the ranking stands.
        reasons = await run_concurrently(
            self.engine,
            [prompts.build_reason_request(data.member, posts[r.post_id]) for r in top],
            call,
            fallbacks=[{"reason": ""}] * len(top),
        ) if top else []
        ranked[: len(reasons)] = [
            dataclasses.replace(r, reason=prompts.parse_reason(g.parsed)) for r, g in zip(ranked, reasons)
        ]
        return pb.RankPostsResponse(
            ranked_posts=convert.rank_posts_to_pb(ranked),
            usage=total_usage_to_pb([scores, *reasons], self.engine.model_name),
        )


SERVICE = ServiceDefinition(
    name="feed",
    descriptor=pb.DESCRIPTOR.services_by_name["FeedService"],
    add_to_server=lambda engine, server: pb_grpc.add_FeedServiceServicer_to_server(FeedServicer(engine), server),
    # Ranking is batch-like: interactive features overtake it.
    method_priorities={"RankPosts": 10},
    prompt_version=prompts.PROMPT_VERSION,
)
