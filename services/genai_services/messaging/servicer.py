"""MessagingService: validate → build prompt → call engine → map result."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
import structlog
from genai.messaging.v1 import messaging_service_pb2 as pb
from genai.messaging.v1 import messaging_service_pb2_grpc as pb_grpc

from genai_core.engine.base import Engine
from genai_core.engine.types import GenerationChunk
from genai_core.errors import ModelOutputInvalid
from genai_core.grpc_runtime.interceptor import current_call
from genai_services.common import ServiceDefinition, run_concurrently, total_usage_to_pb
from genai_services.messaging import convert, prompts
from genai_services.messaging.domain import LengthLimiter, RewriteGuard

log = structlog.get_logger(__name__)


class MessagingServicer(pb_grpc.MessagingServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def SuggestReplies(
        self, request: pb.SuggestRepliesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SuggestRepliesResponse:
        data = convert.suggest_replies_from_pb(request)
        call = current_call()
        request = prompts.build_suggest_replies_request(data)
        results = [await self.engine.generate(request, call)]
        suggestions = prompts.parse_suggest_replies(results[0].text, results[0].finish_reason, data)
        if len(suggestions) < data.suggestion_count:
            more = prompts.build_more_replies_requests(data, request, suggestions)
            extra = await run_concurrently(self.engine, more.requests, call)
            suggestions = prompts.parse_more_replies(data, suggestions, more, [(r.text, r.finish_reason) for r in extra])
            results += extra
        if len(suggestions) < data.suggestion_count:
            # Fewer, never junk: the caller was told so in the proto; this shows how often.
            log.info("suggestions_short", asked=data.suggestion_count, returned=len(suggestions))
        response = convert.suggest_replies_to_pb(suggestions)
        response.usage.CopyFrom(total_usage_to_pb(results, self.engine.model_name))
        return response

    async def _rewrite(
        self, request: pb.RewriteDraftRequest | pb.StreamRewriteDraftRequest
    ) -> AsyncIterator[pb.StreamRewriteDraftResponse]:
        """The rewrite as a stream of deltas; the last message carries usage.

        When the first answer opens as a copy of one of the prompt's example rewrites
        (nothing of it has been sent), the draft is asked for once more without that
        example.
        """
        data = convert.rewrite_draft_from_pb(request)
        limiter = LengthLimiter(data.max_length_chars)
        attempts: list[GenerationChunk] = []
        engine_request = prompts.build_rewrite_draft_request(data)
        for attempt in range(2):
            guard = RewriteGuard(data.draft, prompts.REWRITE_EXAMPLE_ANSWERS)
            last: GenerationChunk | None = None
            # aclosing: leaving early (limit reached, a copy or a loop, caller gone)
            # aborts the generation, so no tokens are paid for that would be dropped.
            async with contextlib.aclosing(self.engine.stream(engine_request, current_call())) as stream:
                async for last in stream:
                    text = limiter.feed(guard.feed(last.text_delta))
                    if text:
                        yield pb.StreamRewriteDraftResponse(text_delta=text)
                    if guard.copied is not None or guard.done or limiter.done:
                        break
            if last is not None:
                attempts.append(last)
            if guard.copied is None:
                break
            log.info("rewrite_copied_example", example=guard.copied, attempt=attempt)
            engine_request = prompts.build_rewrite_draft_request(data, without_example=guard.copied)
        if guard.copied is not None:
            raise ModelOutputInvalid("the model answered with an example instead of rewriting the draft")
        text = limiter.feed(guard.finish())
        yield pb.StreamRewriteDraftResponse(
            text_delta=text + limiter.finish(),
            truncated=limiter.truncated,
            usage=total_usage_to_pb(attempts, self.engine.model_name) if attempts else None,
        )

    async def RewriteDraft(
        self, request: pb.RewriteDraftRequest, context: grpc.aio.ServicerContext
    ) -> pb.RewriteDraftResponse:
        response = pb.RewriteDraftResponse()
        async for part in self._rewrite(request):
            response.text += part.text_delta
            response.truncated = part.truncated
            if part.HasField("usage"):
                response.usage.CopyFrom(part.usage)
        return response

    async def StreamRewriteDraft(
        self, request: pb.StreamRewriteDraftRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamRewriteDraftResponse]:
        async for part in self._rewrite(request):
            yield part


SERVICE = ServiceDefinition(
    name="messaging",
    descriptor=pb.DESCRIPTOR.services_by_name["MessagingService"],
    add_to_server=lambda engine, server: pb_grpc.add_MessagingServiceServicer_to_server(
        MessagingServicer(engine), server
    ),
    prompt_version=prompts.PROMPT_VERSION,
)
