"""SearchService: validate → build prompt → call engine → map result."""

from __future__ import annotations

import grpc
from genai.search.v1 import search_service_pb2 as pb
from genai.search.v1 import search_service_pb2_grpc as pb_grpc

from genai_core.engine.base import Engine
from genai_core.grpc_runtime.interceptor import current_call
from genai_services.common import REQUIRED, ServiceDefinition, generate_concurrently, total_usage_to_pb
from genai_services.search import convert, prompts


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def UnderstandQuery(
        self, request: pb.UnderstandQueryRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnderstandQueryResponse:
        data = convert.understand_query_from_pb(request)
        # Four small independent steps, each with its own cached prefix of demonstrations.
        requests = prompts.build_understand_query_requests(data).all()
        # The intent is required; entities, correction and expansions are optional parts:
        # one the model could not finish within its budget is left out, not an error.
        fallbacks = (REQUIRED, {}, "", [])
        results = await generate_concurrently(self.engine, requests, current_call(), fallbacks)
        understanding = prompts.parse_understand_query(data, *(r.parsed for r in results))
        response = convert.understand_query_to_pb(understanding)
        response.usage.CopyFrom(total_usage_to_pb(results, self.engine.model_name))
        return response


SERVICE = ServiceDefinition(
    name="search",
    descriptor=pb.DESCRIPTOR.services_by_name["SearchService"],
    add_to_server=lambda engine, server: pb_grpc.add_SearchServiceServicer_to_server(
        SearchServicer(engine), server
    ),
    prompt_version=prompts.PROMPT_VERSION,
)
