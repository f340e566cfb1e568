"""Adding a feature = its folder + one registry line: a throwaway fourth service proves it.

The service comes from a test-only proto in another package (`testonly.echo.v1`),
compiled here; it is mounted through the registry, with no change to the host, the
interceptor or the config, and gets health, metrics, error mapping and deadlines.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import grpc
import pytest
from doubles import FakeEngine, congest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from prometheus_client import REGISTRY as METRICS
from servers import in_process_server

from genai_core.engine.base import Engine
from genai_core.engine.types import ChatMessage, GenerationRequest
from genai_core.errors import InvalidRequest
from genai_core.grpc_runtime.interceptor import MethodSpec, ServiceInterceptor, UnsupportedHandler, current_call
from genai_core.validation import Violations
from genai_services.common import ServiceDefinition
from genai_services.registry import REGISTRY

PROTOS = Path(__file__).resolve().parents[1] / "protos"
ECHO = "testonly.echo.v1.EchoService"


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The generated modules of the test-only proto, compiled into a temporary folder."""
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("echo_gen")
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["grpc_tools.protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
    assert protoc.main([*args, "testonly/echo/v1/echo_service.proto"]) == 0
    sys.path.insert(0, str(out))
    try:
        pb: ModuleType = importlib.import_module("testonly.echo.v1.echo_service_pb2")
        pb_grpc: ModuleType = importlib.import_module("testonly.echo.v1.echo_service_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    yield SimpleNamespace(pb=pb, pb_grpc=pb_grpc, definition=_definition(pb, pb_grpc))


def _definition(pb: ModuleType, pb_grpc: ModuleType) -> ServiceDefinition:
    """The whole feature, in the shape of feed/messaging/search: convert, prompt, servicer."""

    def echo_from_pb(request: object) -> str:
        v = Violations()
        text = v.text("text", request.text, max_chars=100)  # type: ignore[attr-defined]
        v.raise_if_any()
        return text

    def build_echo_request(text: str) -> GenerationRequest:
        return GenerationRequest(messages=(ChatMessage("user", text),), max_output_tokens=16)

    class EchoServicer(pb_grpc.EchoServiceServicer):  # type: ignore[misc, name-defined]
        def __init__(self, engine: Engine) -> None:
            self.engine = engine

        async def Echo(self, request: object, context: grpc.aio.ServicerContext) -> object:
            result = await self.engine.generate(build_echo_request(echo_from_pb(request)), current_call())
            return pb.EchoResponse(text=result.text)

        async def StreamEcho(self, request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
            async for chunk in self.engine.stream(build_echo_request(echo_from_pb(request)), current_call()):
                yield pb.EchoResponse(text=chunk.text_delta)

    return ServiceDefinition(
        name="echo",
        descriptor=pb.DESCRIPTOR.services_by_name["EchoService"],
        add_to_server=lambda engine, server: pb_grpc.add_EchoServiceServicer_to_server(EchoServicer(engine), server),
        method_priorities={"Echo": 7},
        prompt_version="echo-v1",
    )


@pytest.fixture()
def fake() -> FakeEngine:
    return FakeEngine(lambda request: "echo " + request.messages[-1].content)


def test_a_fourth_service_gets_health_metrics_errors_and_deadlines(echo: SimpleNamespace, fake: FakeEngine) -> None:
    registry = REGISTRY.extended(echo.definition)
    labels = {"service": ECHO, "method": "Echo"}
    ok0 = METRICS.get_sample_value("genai_requests_total", {**labels, "code": "OK"}) or 0.0
    bad0 = METRICS.get_sample_value("genai_requests_total", {**labels, "code": "INVALID_ARGUMENT"}) or 0.0
    with in_process_server(fake, registry=registry, serving=False) as (channel, running):
        health = health_pb2_grpc.HealthStub(channel)
        check = lambda name: health.Check(health_pb2.HealthCheckRequest(service=name)).status  # noqa: E731
        assert check(ECHO) == health_pb2.HealthCheckResponse.NOT_SERVING
        import asyncio

        loop = running.server._loop  # type: ignore[attr-defined]
        asyncio.run_coroutine_threadsafe(running.set_serving(True), loop).result(5)
        for name in ("", ECHO, *REGISTRY.full_names):
            assert check(name) == health_pb2.HealthCheckResponse.SERVING, name
        assert ECHO in set(ProtoReflectionDescriptorDatabase(channel).get_services())

        stub = echo.pb_grpc.EchoServiceStub(channel)
        before = time.monotonic()
        assert stub.Echo(echo.pb.EchoRequest(text="hello there"), timeout=5).text == "echo hello there"
        assert "".join(r.text for r in stub.StreamEcho(echo.pb.EchoRequest(text="hi"))) == "echo hi"

        with pytest.raises(grpc.RpcError) as info:
            stub.Echo(echo.pb.EchoRequest(text="  "))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(info.value)
        errors = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
        error_info = error_details_pb2.ErrorInfo()
        errors[0].Unpack(error_info)
        assert (error_info.reason, error_info.domain) == ("INVALID_REQUEST", ECHO)

        held = congest(fake, wait_s=10)
        try:
            with pytest.raises(grpc.RpcError) as info:
                stub.Echo(echo.pb.EchoRequest(text="late"), timeout=5)
        finally:
            held.release()
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    unary, streamed = fake.calls
    assert (unary.service, unary.method, unary.priority) == (ECHO, "Echo", 7)
    assert unary.deadline is not None and before < unary.deadline <= before + 5.5
    assert (streamed.method, streamed.priority) == ("StreamEcho", 0)
    assert streamed.deadline is not None  # the server's maximum request time
    assert METRICS.get_sample_value("genai_requests_total", {**labels, "code": "OK"}) - ok0 == 1
    assert METRICS.get_sample_value("genai_requests_total", {**labels, "code": "INVALID_ARGUMENT"}) - bad0 == 1
    assert METRICS.get_sample_value(
        "genai_requests_total", {"service": ECHO, "method": "StreamEcho", "code": "OK"}
    ) >= 1


def test_config_may_serve_only_the_new_service(echo: SimpleNamespace, fake: FakeEngine) -> None:
    from genai_core.config import parse_config

    registry = REGISTRY.extended(echo.definition)
    config = parse_config({"server": {"host": "127.0.0.1", "port": 0, "services": "echo"}}, "t", registry.names)
    with in_process_server(fake, config, registry=registry) as (channel, running):
        assert running.service_names == [ECHO]
        assert echo.pb_grpc.EchoServiceStub(channel).Echo(echo.pb.EchoRequest(text="x")).text == "echo x"


def test_a_client_streaming_service_is_refused_at_definition(echo: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="client-streaming"):
        ServiceDefinition(
            name="upload",
            descriptor=echo.pb.DESCRIPTOR.services_by_name["EchoUploadService"],
            add_to_server=lambda engine, server: None,
        )


def test_a_priority_for_a_missing_method_is_refused(echo: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="Ehco"):
        ServiceDefinition(
            name="echo",
            descriptor=echo.pb.DESCRIPTOR.services_by_name["EchoService"],
            add_to_server=lambda engine, server: None,
            method_priorities={"Ehco": 1},
        )


def test_a_service_registered_twice_is_refused(echo: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        REGISTRY.extended(echo.definition, echo.definition)


def test_the_interceptor_refuses_a_handler_kind_it_cannot_wrap() -> None:
    import asyncio

    async def upload(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        return b""

    handler = grpc.stream_unary_rpc_method_handler(upload)
    interceptor = ServiceInterceptor({"testonly.echo.v1.EchoUploadService/Upload": MethodSpec()})

    async def continuation(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return handler

    details = SimpleNamespace(method="/testonly.echo.v1.EchoUploadService/Upload", invocation_metadata=())
    with pytest.raises(UnsupportedHandler, match="client-streaming"):
        asyncio.run(interceptor.intercept_service(continuation, details))  # type: ignore[arg-type]
    # Methods it was not given (health, reflection) pass through untouched.
    details.method = "/grpc.health.v1.Health/Check"
    interceptor.methods = {}
    assert asyncio.run(interceptor.intercept_service(continuation, details)) is handler  # type: ignore[arg-type]


def test_unregistered_methods_are_not_wrapped_whatever_their_package() -> None:
    import asyncio

    async def ping(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b""

    handler = grpc.unary_unary_rpc_method_handler(ping)
    interceptor = ServiceInterceptor({"testonly.echo.v1.EchoService/Echo": MethodSpec()})

    async def continuation(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return handler

    def intercept(method: str) -> grpc.RpcMethodHandler:
        return asyncio.run(interceptor.intercept_service(continuation, SimpleNamespace(method=method)))  # type: ignore[arg-type]

    assert intercept("/testonly.echo.v1.EchoService/Echo").unary_unary is not ping
    # A method in our own proto package that was not registered is not ours.
    assert intercept("/genai.other.v1.X/Y") is handler
