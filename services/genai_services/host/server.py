"""Composes the configured services on one gRPC server and one engine, and runs them.

Lifecycle: listen at once with health NOT_SERVING → load the engine → SERVING →
on SIGTERM/SIGINT: NOT_SERVING, Health.Watch streams ended, new calls refused
(UNAVAILABLE) → in-flight calls get
the grace period (a second signal ends it at once) → engine shutdown → exit 0.
If the engine dies or stalls: NOT_SERVING → in-flight calls fail UNAVAILABLE → exit 1,
so the orchestrator restarts us.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from genai_core.config import Config, ServerConfig
from genai_core.engine.base import Engine
from genai_core.errors import EngineDead
from genai_core.grpc_runtime.interceptor import MethodSpec, ServiceInterceptor
from genai_core.grpc_runtime.orca import OrcaLoadReporter
from genai_core.observability import gc_pauses, metrics
from genai_core.observability.metrics import register_engine_collectors, start_metrics_server
from genai_core.observability.tracing import configure_tracing
from genai_services.common import ServiceDefinition
from genai_services.registry import REGISTRY, ServiceRegistry

log = structlog.get_logger(__name__)

HEALTH_POLL_S = 2.0


class DrainableHealth(health.aio.HealthServicer):
    """grpc's health servicer, whose Watch streams end when the server drains.

    grpc's own never end: each open Watch (every load balancer and sidecar keeps one)
    held the drain until the grace period ran out.
    """

    # How long the last NOT_SERVING may wait for a watcher that does not read.
    FINAL_WRITE_S = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._draining = asyncio.Event()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        watching = asyncio.ensure_future(super().Watch(request, context))
        draining = asyncio.ensure_future(self._draining.wait())
        try:
            await asyncio.wait({watching, draining}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            draining.cancel()
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        # The parent may not have written NOT_SERVING yet when it was cancelled: say it
        # (again, which Watch allows), then end the stream with OK.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.FINAL_WRITE_S):
                await context.write(health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING))

    def end_watches(self) -> None:
        self._draining.set()


@dataclass
class RunningServer:
    server: grpc.aio.Server
    health: DrainableHealth
    port: int
    service_names: list[str]
    interceptor: ServiceInterceptor

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)
        metrics.SERVING.set(1 if serving else 0)

    async def start_draining(self) -> None:
        """Refuse new calls, NOT_SERVING everywhere, and end Health.Watch streams."""
        self.interceptor.draining = True
        await self.set_serving(False)
        self.health.end_watches()


def _credentials(config: Config) -> grpc.ServerCredentials | None:
    tls = config.server.tls
    if not tls.enabled:
        return None
    assert tls.cert_file is not None and tls.key_file is not None
    return grpc.ssl_server_credentials(
        [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
        root_certificates=Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None,
        require_client_auth=tls.require_client_auth,
    )


def connection_options(server: ServerConfig) -> list[tuple[str, int]]:
    """grpc's keepalive and connection-age options for `server`'s policy."""
    options = [
        # 0 strikes = never GOAWAY a client for pinging (vLLM's gRPC launcher does the same).
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", int(server.min_client_ping_interval_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if server.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(server.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(server.max_connection_age_grace_s * 1000)),
        ]
    return options


def method_specs(
    definitions: Sequence[ServiceDefinition], priorities: Mapping[str, int]
) -> dict[str, MethodSpec]:
    """What the interceptor applies to each method of `definitions`."""
    return {
        path: MethodSpec(
            priority=priorities.get(path, 0),
            log_fields={"prompt_version": d.prompt_version} if d.prompt_version else {},
        )
        for d in definitions
        for path in d.method_paths
    }


async def start_server(config: Config, engine: Engine, registry: ServiceRegistry = REGISTRY) -> RunningServer:
    """Start listening with the configured services mounted and health NOT_SERVING.

    Args:
        config: the root config; `server.services` picks from `registry` (all when None).
        engine: the shared engine every servicer calls.
        registry: the services this process can serve.
    Raises:
        ValueError: the config names a service the registry does not hold.
        OSError: the address cannot be listened on.
    """
    limit = config.server.max_message_bytes
    definitions = registry.select(config.server.services)
    priorities = config.admission.method_priorities
    interceptor = ServiceInterceptor(
        method_specs(definitions, registry.method_priorities() if priorities is None else priorities),
        trailers=[OrcaLoadReporter(engine, config.engine.max_num_seqs)],
        max_request_time_s=config.admission.max_request_time_s,
    )
    server = grpc.aio.server(
        interceptors=[interceptor],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            *connection_options(config.server),
        ],
    )
    for definition in definitions:
        definition.add_to_server(engine, server)
    health_servicer = DrainableHealth()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [d.full_name for d in definitions]
    if config.server.reflection:
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            server,
        )
    address = f"{config.server.host}:{config.server.port}"
    credentials = _credentials(config)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not listen on {address}")
    running = RunningServer(server, health_servicer, port, names, interceptor)
    await running.set_serving(False)
    await server.start()
    log.info("server_listening", port=port, services=names, tls=credentials is not None)
    return running


async def _watch_engine(engine: Engine) -> None:
    """Return when the engine stops answering health checks."""
    while True:
        await asyncio.sleep(HEALTH_POLL_S)
        try:
            await engine.check_health()
        except EngineDead:
            return


async def serve(config: Config, engine: Engine) -> int:
    """Run until SIGTERM/SIGINT (exit code 0) or an engine failure (exit code 1)."""
    gc_pauses.watch()
    if config.tracing.enabled:
        configure_tracing(config.tracing.service_name, config.tracing.otlp_endpoint, config.tracing.sample_ratio)
    if config.metrics.enabled:
        register_engine_collectors(engine.stats, lambda: engine.admission.waiting, engine.model_name)
        metrics_port = start_metrics_server(config.metrics.host, config.metrics.port)
        log.info("metrics_listening", port=metrics_port)
    running = await start_server(config, engine)
    stop = asyncio.Event()
    abort_now = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        # First signal: drain. Second: stop waiting for in-flight calls.
        (abort_now if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    exit_code = 0
    stopping = asyncio.create_task(stop.wait())
    starting = asyncio.create_task(engine.start())
    await asyncio.wait({stopping, starting}, return_when=asyncio.FIRST_COMPLETED)
    if starting.done() and starting.exception() is not None:
        log.error("engine_start_failed", error=repr(starting.exception()))
        exit_code = 1
    elif starting.done():
        # Start-up and warm-up are done: what lives now lives as long as the process.
        gc_pauses.freeze_heap()
        await running.set_serving(True)
        log.info("serving", port=running.port)
        watching = asyncio.create_task(_watch_engine(engine))
        await asyncio.wait({stopping, watching}, return_when=asyncio.FIRST_COMPLETED)
        if watching.done():
            log.error("engine_dead")
            exit_code = 1
        watching.cancel()
    else:
        starting.cancel()

    log.info("shutting_down", grace_s=config.server.shutdown_grace_s)
    await running.start_draining()
    # Our calls in flight get the grace period while new ones are refused by the
    # interceptor (UNAVAILABLE with reason SERVER_DRAINING, safe to retry elsewhere).
    # gRPC's own stop comes after: it refuses with no reason, and a call caught in its
    # GOAWAY race can even see CANCELLED, which clients do not retry.
    grace = config.server.shutdown_grace_s if exit_code == 0 else 0
    drain_started = time.monotonic()
    idle = asyncio.create_task(running.interceptor.wait_idle())
    second = asyncio.create_task(abort_now.wait())
    await asyncio.wait({idle, second}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
    if idle.done():
        # Handlers have returned; their responses (and any health check) get what is
        # left of the grace, and gRPC returns as soon as they are sent.
        await running.server.stop(max(grace - (time.monotonic() - drain_started), 1.0))
    else:
        log.warning("shutdown_forced", in_flight=running.interceptor.in_flight, second_signal=second.done())
        await running.server.stop(0)
    log.info("drained", drain_s=round(time.monotonic() - drain_started, 2))
    idle.cancel()
    second.cancel()
    stopping.cancel()
    await engine.shutdown()
    log.info("stopped", exit_code=exit_code)
    return exit_code
