"""FeedService: validate → build prompt → call engine → map result."""

from __future__ import annotations

import grpc
from genai.feed.v1 import feed_service_pb2 as pb
from genai.feed.v1 import feed_service_pb2_grpc as pb_grpc

from genai_core.engine.base import Engine
from genai_core.grpc_runtime.interceptor import current_call
from genai_services.common import ServiceDefinition, usage_to_pb
from genai_services.feed import convert, prompts


class FeedServicer(pb_grpc.FeedServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def RankPosts(
        self, request: pb.RankPostsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RankPostsResponse:
        data = convert.rank_posts_from_pb(request)
        result = await self.engine.generate_json(prompts.build_rank_posts_request(data), current_call())
        response = convert.rank_posts_to_pb(prompts.parse_rank_posts(data, result.parsed))
        response.usage.CopyFrom(usage_to_pb(result, self.engine.model_name))
        return response


SERVICE = ServiceDefinition(
    name="feed",
    descriptor=pb.DESCRIPTOR.services_by_name["FeedService"],
    add_to_server=lambda engine, server: pb_grpc.add_FeedServiceServicer_to_server(FeedServicer(engine), server),
    # Ranking is batch-like: interactive features overtake it.
    method_priorities={"RankPosts": 10},
    prompt_version=prompts.PROMPT_VERSION,
)
