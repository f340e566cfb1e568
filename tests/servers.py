"""Run a real gRPC server in a background thread, for tests with synchronous stubs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from genai_core.config import Config, parse_config
from genai_core.engine.base import Engine
from genai_services.host.server import RunningServer, start_server
from genai_services.registry import REGISTRY, ServiceRegistry


@contextmanager
def in_process_server(
    engine: Engine, config: Config | None = None, serving: bool = True, registry: ServiceRegistry = REGISTRY
) -> Iterator[tuple[grpc.Channel, RunningServer]]:
    """Start our server on a free port with `engine` and `registry`'s services; yield a channel to it."""
    config = config or parse_config({"server": {"host": "127.0.0.1", "port": 0}})
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, RunningServer] = {}

    async def main() -> None:
        running = await start_server(config, engine, registry)
        await engine.start()
        if serving:
            await running.set_serving(True)
        holder["server"] = running
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(main(), loop).result(timeout=30)
    ready.wait(30)
    running = holder["server"]
    running.loop = loop  # type: ignore[attr-defined]  # for tests that act on the server
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield channel, running
    finally:
        channel.close()
        asyncio.run_coroutine_threadsafe(running.server.stop(0), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
