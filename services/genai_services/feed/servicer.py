"""FeedService: validate → build prompt → call engine → map result."""

from __future__ import annotations

from typing import Any

import grpc
from genai.feed.v1 import feed_service_pb2 as pb
from genai.feed.v1 import feed_service_pb2_grpc as pb_grpc

from genai_core.engine.base import Engine
from genai_core.grpc_runtime.interceptor import current_call
from genai_services.common import ServiceDefinition, usage_to_pb
from genai_services.feed import convert, prompts
from genai_services.feed.domain import RankedPost, RankPostsInput


def rank(data: RankPostsInput, parsed: dict[str, Any]) -> list[RankedPost]:
    """Order the candidates by the model's scores; ties keep the request's order."""
    ranked = [
        RankedPost(
            post_id=post.post_id,
            relevance_score=parsed[prompts.post_label(i)]["score"] / prompts.SCORE_MAX,
            reason=" ".join(parsed[prompts.post_label(i)]["reason"].split()),
        )
        for i, post in enumerate(data.candidates)
    ]
    return sorted(ranked, key=lambda r: -r.relevance_score)


class FeedServicer(pb_grpc.FeedServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def RankPosts(
        self, request: pb.RankPostsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RankPostsResponse:
        data = convert.from_pb(request)
        result = await self.engine.generate_json(prompts.build_request(data), current_call())
        return pb.RankPostsResponse(
            ranked_posts=convert.to_pb(rank(data, result.parsed)),
            usage=usage_to_pb(result, self.engine.model_name),
        )


SERVICE = ServiceDefinition(
    name="feed",
    full_name=pb.DESCRIPTOR.services_by_name["FeedService"].full_name,
    add_to_server=lambda engine, server: pb_grpc.add_FeedServiceServicer_to_server(
        FeedServicer(engine), server
    ),
)
