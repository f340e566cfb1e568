"""FeedService: validate → score every candidate → (reasons for the top K) → map result."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
from genai.feed.v1 import feed_service_pb2 as pb
from genai.feed.v1 import feed_service_pb2_grpc as pb_grpc

from genai_core.engine.base import Engine
from genai_core.engine.call import CallContext, CallStats
from genai_core.engine.types import GenerationResult
from genai_core.grpc_runtime.interceptor import current_call
from genai_services.common import ServiceDefinition
from genai_services.feed import convert, prompts
from genai_services.feed.domain import RankedPost, RankPostsInput


async def explain(engine: Engine, data: RankPostsInput, top: list[RankedPost], call: CallContext) -> list[GenerationResult]:
    """Reasons for `top`, generated concurrently; a failure cancels (aborts) the others.

    Each generation gets its own CallContext (request id and stats), so the engine's
    per-request bookkeeping never mixes; their usage is added to `call.stats`.
    """
    posts = {p.post_id: p for p in data.candidates}
    contexts = [
        dataclasses.replace(call, request_id=f"{call.request_id}-reason-{i}", stats=CallStats())
        for i in range(len(top))
    ]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    engine.generate_json(prompts.build_reason_request(data.member, posts[r.post_id]), ctx)
                )
                for r, ctx in zip(top, contexts)
            ]
    except ExceptionGroup as errors:
        # The interceptor maps our typed errors, not groups: the first failure stands.
        raise errors.exceptions[0] from None
    finally:
        for ctx in contexts:
            call.stats.prompt_tokens += ctx.stats.prompt_tokens
            call.stats.cached_prompt_tokens += ctx.stats.cached_prompt_tokens
            call.stats.output_tokens += ctx.stats.output_tokens
    return [t.result() for t in tasks]


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
        reasons = await explain(self.engine, data, ranked[: data.explain_top_k], call) if data.explain_top_k else []
        ranked[: len(reasons)] = [
            dataclasses.replace(r, reason=prompts.parse_reason(g.parsed)) for r, g in zip(ranked, reasons)
        ]
        return pb.RankPostsResponse(
            ranked_posts=convert.rank_posts_to_pb(ranked),
            usage=convert.usage_to_pb(scores, reasons, self.engine.model_name),
        )


SERVICE = ServiceDefinition(
    name="feed",
    descriptor=pb.DESCRIPTOR.services_by_name["FeedService"],
    add_to_server=lambda engine, server: pb_grpc.add_FeedServiceServicer_to_server(FeedServicer(engine), server),
    # Ranking is batch-like: interactive features overtake it.
    method_priorities={"RankPosts": 10},
    prompt_version=prompts.PROMPT_VERSION,
)
