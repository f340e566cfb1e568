"""What every feature service shares: its definition for the registry, usage at the proto boundary."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from genai.common.v1 import usage_pb2
from google.protobuf.descriptor import ServiceDescriptor

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
    """One feature service as the host, config, interceptor, health and reflection know it.

    Attributes:
        name: the short name used in config (`server.services`).
        descriptor: the proto service, from the generated `*_pb2` module.
        add_to_server: mounts the servicer, built on the shared engine, on a gRPC server.
        method_priorities: default vLLM priority per method name (lower runs first);
            methods not named get 0.
        prompt_version: the version of the service's prompts, logged on every
            `rpc_finished` line so answers can be traced to the prompt that made them.

    Raises:
        ValueError: a priority names no method of the service, or a method streams
            requests from the client (the interceptor wraps only unary requests).
    """

    name: str
    descriptor: ServiceDescriptor
    add_to_server: Callable[[Engine, Any], None]
    method_priorities: Mapping[str, int] = field(default_factory=dict)
    prompt_version: str = ""

    def __post_init__(self) -> None:
        methods = {m.name for m in self.descriptor.methods}
        unknown = sorted(set(self.method_priorities) - methods)
        if unknown:
            raise ValueError(f"{self.full_name}: method_priorities name no method of the service: {unknown}")
        streaming = sorted(m.name for m in self.descriptor.methods if m.client_streaming)
        if streaming:
            raise ValueError(
                f"{self.full_name}: client-streaming methods {streaming} are not supported "
                "(the interceptor wraps unary and server-streaming methods only)"
            )

    @property
    def full_name(self) -> str:
        """The proto service name ("package.Service"): health, reflection, ErrorInfo domain."""
        return self.descriptor.full_name

    @property
    def method_paths(self) -> tuple[str, ...]:
        """Each method as "package.Service/Method", the form config and metrics use."""
        return tuple(f"{self.full_name}/{m.name}" for m in self.descriptor.methods)
