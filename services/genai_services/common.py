"""What all three services share at the proto boundary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from genai.common.v1 import usage_pb2

from genai_core.engine.base import Engine
from genai_core.engine.types import GenerationChunk, GenerationResult


def usage_to_pb(result: GenerationResult | GenerationChunk, model: str) -> usage_pb2.Usage:
    return usage_pb2.Usage(
        prompt_token_count=result.prompt_token_count,
        output_token_count=result.output_token_count,
        cached_prompt_token_count=result.cached_prompt_token_count,
        model=model,
    )


@dataclass(frozen=True)
class ServiceDefinition:
    """How the host mounts one feature service on the shared server and engine."""

    name: str  # short name used in config: feed, messaging, search
    full_name: str  # proto service name, used by health and reflection
    add_to_server: Callable[[Engine, Any], None]
