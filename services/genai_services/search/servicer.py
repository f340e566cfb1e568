"""SearchService: validate → build prompt → call engine → map result."""

from __future__ import annotations

import grpc
from genai.search.v1 import search_service_pb2 as pb
from genai.search.v1 import search_service_pb2_grpc as pb_grpc

from genai_core.engine.base import Engine
from genai_core.grpc_runtime.interceptor import current_call
from genai_services.common import REQUIRED, ServiceDefinition, run_concurrently, total_usage_to_pb
from genai_services.search import convert, prompts


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def UnderstandQuery(
        self, request: pb.UnderstandQueryRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnderstandQueryResponse:
        data = convert.understand_query_from_pb(request)
        # Small independent steps, each with its own cached prefix of demonstrations.
        requests = prompts.build_understand_query_requests(data)
        # The intent is required; the correction and expansions are optional parts: one
        # the model could not finish within its budget is left out, not an error.
        fallbacks = (REQUIRED, "", [], *(REQUIRED for _ in requests.entity_readings))
        results = await run_concurrently(self.engine, requests.all(), current_call(), fallbacks)
        intent, correction, expansions, *readings = results
        understanding = prompts.parse_understand_query(
            data, requests, intent.parsed, correction.parsed, expansions.parsed, tuple(readings)
        )
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
