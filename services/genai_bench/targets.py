"""What the benchmark sends load to, all behind one small interface.

- `raw`    (a) vLLM's AsyncLLM in this process, called directly with the prompt token ids
           and SamplingParams our engine builds: the ceiling for our service.
- `engine` our VllmEngine in this process (the wrapper, JSON parsing and validation,
           no gRPC); shares the engine start with `raw`.
- `grpc`   (b) our gRPC services end to end: a `genai serve` subprocess, or --address.
- `openai` (c) vLLM's OpenAI-compatible HTTP server as a subprocess (or --openai-url) with
           the same engine arguments, sent the same rendered prompts, budgets and JSON
           schemas through /v1/completions (streamed for the streaming rewrite only).
- `hf`     (d) the naive baseline: Hugging Face transformers `generate`, one request (or
           one static batch) at a time, with output lengths fixed to those the reference
           target produced for the same requests.

Every target measures the same things the same way (see `Sample`). For the streaming
rewrite, time to first token means the first text a caller sees: the service releases
text through `RewriteGuard` (held until it is not a copy of an example, or a repeat) and
then a whole word at a time through `LengthLimiter`, so the in-process and HTTP clients
run the same two over the token stream and stop where the service would.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from genai_core.config import EngineConfig, parse_config
from genai_core.engine.call import CallContext
from genai_core.engine.types import GenerationRequest
from genai_core.engine.vllm_engine import chat_prompt_text, load_chat_tokenizer, queue_time_s, sampling_params
from genai_testing.procs import LoggedProcess, ServerProcess, free_port, server_env, start_server

from genai_bench import http
from genai_bench.workload import WorkItem
from genai_services.messaging import prompts as messaging_prompts
from genai_services.messaging.domain import LengthLimiter, RewriteGuard
from genai_services.registry import REGISTRY

DEFAULT_HF_TOKENS = 64
"""Output length of the Hugging Face baseline when no reference length is known."""

BENCH_ADMISSION: dict[str, Any] = {
    "max_waiting_requests": 100_000,
    "max_waiting_prompt_tokens": 1 << 30,
    "max_request_time_s": 3600.0,
}
"""Our service's admission limits during benchmarks: never refuse, so every target
serves the same requests (the other targets have no admission control)."""


FRONTEND_CPU_KEY = "frontend_cpu_seconds"
"""Snapshot key: CPU seconds of the process that runs the engine's front end (the spawned
server's main process; for the in-process targets this benchmark process, load generator
included). The engine core runs in a child process and is not counted."""


def _with_cpu(snapshot: dict[str, float] | None, proc: LoggedProcess | None) -> dict[str, float] | None:
    if proc is None:
        return snapshot
    try:
        cpu = proc.cpu_seconds()
    except OSError:
        return snapshot
    return {**(snapshot or {}), FRONTEND_CPU_KEY: cpu}


def priority(item: WorkItem) -> int:
    """The vLLM priority our service gives this request's method (feed ranking yields)."""
    return REGISTRY.method_priorities().get(item.method.lstrip("/"), 0)


@dataclass
class Sample:
    """One request as the client saw it. Times are seconds; `start`/`end` are
    time.perf_counter() values, the others are relative to `start`."""

    index: int
    feature: str
    start: float
    end: float = 0.0
    ok: bool = True
    error: str | None = None
    # First text the caller sees (streaming features only).
    ttft: float | None = None
    # First output token of any kind, where the target exposes it (raw, openai, hf).
    first_token: float | None = None
    output_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    # Arrival of each piece of visible text (streaming features), relative to start.
    chunk_times: list[float] = field(default_factory=list)
    # Time spent waiting in the engine's (or the baseline's) queue, where exposed.
    queue_s: float | None = None

    @property
    def e2e(self) -> float:
        return self.end - self.start


class _Visible:
    """The text a caller of the streaming rewrite would see, with its arrival times."""

    def __init__(self, sample: Sample, item: WorkItem) -> None:
        self.sample = sample
        self.guard = RewriteGuard(item.request.draft, messaging_prompts.REWRITE_EXAMPLE_ANSWERS)
        self.limiter = LengthLimiter(item.max_length_chars or 0)

    @property
    def done(self) -> bool:
        # A copied example ends the baselines' stream too: the service would ask again,
        # which they do not, so such a request is not comparable (rare: long drafts).
        return self.limiter.done or self.guard.done or self.guard.copied is not None

    def _seen(self, text: str, now: float) -> None:
        if text:
            rel = now - self.sample.start
            if self.sample.ttft is None:
                self.sample.ttft = rel
            self.sample.chunk_times.append(rel)

    def feed(self, delta: str, now: float) -> None:
        self._seen(self.limiter.feed(self.guard.feed(delta)), now)

    def finish(self, now: float) -> None:
        self._seen(self.limiter.feed(self.guard.finish()) + self.limiter.finish(), now)


def engine_config(engine: dict[str, Any], model_path: str) -> EngineConfig:
    """Our EngineConfig for an `engine:` section (as in the YAML file) and a model dir.

    Raises:
        ConfigError: a bad key or value.
    """
    return parse_config({"engine": {**engine, "model": model_path}}, "bench engine settings").engine


def _error(e: BaseException) -> str:
    import grpc

    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {(e.details() or '')[:200]}"
    return f"{type(e).__name__}: {str(e)[:200]}"


class Target(abc.ABC):
    """A system under load. `call` never raises: failures are recorded in the Sample."""

    name: str = ""
    startup_s: float | None = None

    def settings(self) -> dict[str, Any]:
        return {}

    async def start(self) -> None:
        """Bring the system up (may take minutes); returns when it serves."""

    async def prepare(self, items: Sequence[WorkItem]) -> None:
        """Untimed per-run preparation (e.g. rendering prompts)."""

    @abc.abstractmethod
    async def call(self, item: WorkItem) -> Sample: ...

    async def snapshot(self) -> dict[str, float] | None:
        """Server-side counters (Prometheus), read before and after each run."""
        return None

    async def stop(self) -> None:
        """Stop and free everything `start` took."""


# --- (a) raw AsyncLLM and our engine, in this process --------------------------------------


class InProcessEngine:
    """One VllmEngine started in this process, shared by the `raw` and `engine` targets."""

    def __init__(self, config: EngineConfig, model_path: str) -> None:
        from genai_core.engine.vllm_engine import VllmEngine

        self.engine = VllmEngine(
            config, model_path, admission=parse_config({"admission": BENCH_ADMISSION}).admission
        )
        self.startup_s: float | None = None
        self._users = 0
        self._started = False

    async def acquire(self) -> None:
        self._users += 1
        if not self._started:
            t0 = time.perf_counter()
            await self.engine.start()
            self.startup_s = time.perf_counter() - t0
            self._started = True

    async def reset_prefix_cache(self) -> None:
        """Forget cached prompts, so a second target on this engine starts as cold as the first."""
        await self.engine.reset_prefix_cache()

    async def release(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._started:
            await self.engine.shutdown()
            self._started = False


class RawTarget(Target):
    """(a) AsyncLLM.generate with pre-rendered prompt ids: no wrapper, no gRPC, no parsing."""

    name = "raw"

    def __init__(self, shared: InProcessEngine) -> None:
        self.shared = shared
        self._ids: dict[int, list[int]] = {}

    async def start(self) -> None:
        await self.shared.acquire()
        await self.shared.reset_prefix_cache()
        self.startup_s = self.shared.startup_s

    async def prepare(self, items: Sequence[WorkItem]) -> None:
        render = self.shared.engine.render_prompt
        self._ids = {id(i): render(i.generation) for i in items}

    async def call(self, item: WorkItem) -> Sample:
        engine = self.shared.engine
        ids = self._ids.get(id(item)) or self.shared.engine.render_prompt(item.generation)
        # As our engine and vLLM's server: whole answers for unary calls, deltas for streams.
        params = sampling_params(replace(item.generation, final_only=not item.streaming))
        sample = Sample(item.index, item.feature, time.perf_counter(), prompt_tokens=len(ids))
        visible = (
            _Visible(sample, item)
            if item.streaming and item.max_length_chars
            else None
        )
        try:
            async with contextlib.aclosing(
                engine.generate_raw(ids, params, f"bench-{uuid.uuid4().hex}", priority=priority(item))
            ) as outputs:
                async for out in outputs:
                    now = time.perf_counter()
                    completion = out.outputs[0]
                    sample.output_tokens += len(completion.token_ids)
                    if sample.first_token is None and completion.token_ids:
                        sample.first_token = now - sample.start
                    sample.cached_tokens = out.num_cached_tokens or 0
                    queued = queue_time_s(out)
                    if queued is not None:
                        sample.queue_s = queued
                    if visible is not None:
                        visible.feed(completion.text, now)
                        if visible.done:
                            break
            if visible is not None:
                visible.finish(time.perf_counter())
        except Exception as e:  # noqa: BLE001 - recorded, never raised
            sample.ok, sample.error = False, _error(e)
        sample.end = time.perf_counter()
        return sample

    async def snapshot(self) -> dict[str, float] | None:
        return {FRONTEND_CPU_KEY: time.process_time()}

    async def stop(self) -> None:
        await self.shared.release()


class EngineTarget(Target):
    """Our VllmEngine in-process: what the servicer calls, minus gRPC and proto mapping."""

    name = "engine"

    def __init__(self, shared: InProcessEngine) -> None:
        self.shared = shared

    async def start(self) -> None:
        await self.shared.acquire()
        await self.shared.reset_prefix_cache()
        self.startup_s = self.shared.startup_s

    async def call(self, item: WorkItem) -> Sample:
        engine = self.shared.engine
        sample = Sample(item.index, item.feature, time.perf_counter())
        call = CallContext(request_id=f"bench-{uuid.uuid4().hex}", priority=priority(item))
        try:
            if item.streaming and item.max_length_chars:
                visible = _Visible(sample, item)
                async with contextlib.aclosing(engine.stream(item.generation, call)) as stream:
                    async for chunk in stream:
                        now = time.perf_counter()
                        if sample.first_token is None:
                            sample.first_token = now - sample.start
                        sample.output_tokens = chunk.output_token_count
                        sample.prompt_tokens = chunk.prompt_token_count
                        sample.cached_tokens = chunk.cached_prompt_token_count
                        visible.feed(chunk.text_delta, now)
                        if visible.done:
                            break
                visible.finish(time.perf_counter())
            else:
                result = await engine.generate_json(item.generation, call)
                sample.output_tokens = result.output_token_count
                sample.prompt_tokens = result.prompt_token_count
                sample.cached_tokens = result.cached_prompt_token_count
        except Exception as e:  # noqa: BLE001
            sample.ok, sample.error = False, _error(e)
        sample.end = time.perf_counter()
        return sample

    async def stop(self) -> None:
        await self.shared.release()


# --- server metrics -----------------------------------------------------------------------


async def _scrape(url: str | None) -> dict[str, float] | None:
    if not url:
        return None
    try:
        status, text = await http.get(url, timeout=10)
    except (TimeoutError, OSError):
        return None
    if status != 200:
        return None
    return {
        k: v for k, v in http.parse_prometheus(text).items() if k.startswith(("vllm:", "genai_"))
    }


# --- (b) our gRPC server ------------------------------------------------------------------


class GrpcTarget(Target):
    """(b) Our services over gRPC: a `genai serve` subprocess, or an existing address."""

    name = "grpc"

    def __init__(
        self,
        engine: dict[str, Any] | None,
        model_path: str | None,
        workdir: Path,
        address: str | None = None,
        metrics_url: str | None = None,
        channels: int = 4,
        start_timeout_s: float = 900,
    ) -> None:
        self.engine = engine or {}
        self.model_path = model_path
        self.workdir = workdir
        self.address = address
        self.metrics_url = metrics_url
        self.n_channels = channels
        self.start_timeout_s = start_timeout_s
        self.proc: ServerProcess | None = None
        self._channels: list[Any] = []
        self._next = 0

    def settings(self) -> dict[str, Any]:
        return {"address": self.address, "engine": self.engine, "spawned": self.proc is not None}

    async def start(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        t0 = time.perf_counter()
        if self.address is None:
            assert self.model_path is not None
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.proc = start_server(
                self.workdir,
                {**self.engine, "model": self.model_path},
                sections={
                    "admission": BENCH_ADMISSION,
                    "logging": {"level": os.environ.get("BENCH_SERVER_LOG", "warning")},
                },
                shutdown_grace_s=5,
                env=server_env(self.workdir),
            )
            self.address = self.proc.address
            self.metrics_url = f"http://127.0.0.1:{self.proc.metrics_port}/metrics"
        options = [("grpc.max_receive_message_length", 16 << 20)]
        self._channels = [
            grpc.aio.insecure_channel(self.address, options=options) for _ in range(self.n_channels)
        ]
        health = health_pb2_grpc.HealthStub(self._channels[0])
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc is not None:
                self.proc.check_alive()
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"gRPC server at {self.address} not SERVING after {self.start_timeout_s}s"
                )
            await asyncio.sleep(0.5)
        self.startup_s = time.perf_counter() - t0

    def _stubs(self) -> Any:
        # Typed stubs: each workload feature calls its own RPC with its own request type.
        from genai.feed.v1 import feed_service_pb2_grpc
        from genai.messaging.v1 import messaging_service_pb2_grpc
        from genai.search.v1 import search_service_pb2_grpc

        channel = self._channels[self._next % len(self._channels)]
        self._next += 1
        return (
            feed_service_pb2_grpc.FeedServiceStub(channel),
            messaging_service_pb2_grpc.MessagingServiceStub(channel),
            search_service_pb2_grpc.SearchServiceStub(channel),
        )

    async def call(self, item: WorkItem) -> Sample:
        feed, messaging, search = self._stubs()
        metadata = (("x-request-id", f"bench-{uuid.uuid4().hex}"),)
        sample = Sample(item.index, item.feature, time.perf_counter())
        usage = None
        try:
            if item.feature == "rewrite":
                async for part in messaging.StreamRewriteDraft(item.request, metadata=metadata):
                    if part.text_delta:
                        rel = time.perf_counter() - sample.start
                        if sample.ttft is None:
                            sample.ttft = rel
                        sample.chunk_times.append(rel)
                    if part.HasField("usage"):
                        usage = part.usage
            else:
                rpc = {
                    "feed": feed.RankPosts,
                    "suggest": messaging.SuggestReplies,
                    "search": search.UnderstandQuery,
                }[item.feature]
                usage = (await rpc(item.request, metadata=metadata)).usage
        except Exception as e:  # noqa: BLE001
            sample.ok, sample.error = False, _error(e)
        sample.end = time.perf_counter()
        if usage is not None:
            sample.output_tokens = usage.output_token_count
            sample.prompt_tokens = usage.prompt_token_count
            sample.cached_tokens = usage.cached_prompt_token_count
        return sample

    async def snapshot(self) -> dict[str, float] | None:
        return _with_cpu(await _scrape(self.metrics_url), self.proc)

    async def stop(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels = []
        if self.proc is not None:
            code = await self.proc.stop_async()
            if code != 0:
                print(
                    f"bench: genai serve exited with {code}; log tail:\n{self.proc.log_tail(1500)}",
                    file=sys.stderr,
                )
            self.proc = None
            self.address = None


# --- (c) vLLM's OpenAI-compatible server ---------------------------------------------------


def openai_server_args(config: EngineConfig, model_path: str) -> list[str]:
    """`vllm serve` flags for the same engine settings our engine_args() gives AsyncLLM."""
    from genai_core.engine.vllm_engine import engine_args

    a = engine_args(config, model_path)
    flags = [
        "--model",
        a.model,
        "--tokenizer",
        a.tokenizer,
        "--served-model-name",
        "bench",
        "--dtype",
        str(a.dtype),
        "--max-model-len",
        str(a.max_model_len),
        "--max-num-seqs",
        str(a.max_num_seqs),
        "--tensor-parallel-size",
        str(a.tensor_parallel_size),
        "--gpu-memory-utilization",
        str(a.gpu_memory_utilization),
        "--seed",
        str(a.seed),
        "--kv-cache-dtype",
        str(a.kv_cache_dtype),
        "--scheduling-policy",
        str(a.scheduling_policy),
        "--enable-prefix-caching" if a.enable_prefix_caching else "--no-enable-prefix-caching",
        # Same structured-output backend and whitespace rule as our engine.
        "--structured-outputs-config",
        json.dumps(_structured_outputs(a.structured_outputs_config)),
        # Sampling defaults from the model's generation_config would differ from ours.
        "--generation-config",
        "vllm",
    ]
    if a.enforce_eager:
        flags.append("--enforce-eager")
    if a.quantization:
        flags += ["--quantization", str(a.quantization)]
    if a.max_num_batched_tokens:
        flags += ["--max-num-batched-tokens", str(a.max_num_batched_tokens)]
    if a.speculative_config:
        flags += ["--speculative-config", json.dumps(a.speculative_config)]
    return flags


OPTIONAL_SERVER_FLAGS = ["--disable-uvicorn-access-log", "--enable-prompt-tokens-details"]
"""Flags that only change what the server reports; dropped if a vLLM version lacks them."""


def _structured_outputs(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    keys = (
        "backend",
        "disable_any_whitespace",
        "disable_fallback",
        "disable_additional_properties",
    )
    return {k: getattr(config, k) for k in keys if hasattr(config, k)}


def render_text(tokenizer: Any, request: GenerationRequest) -> str:
    """The prompt text our engine would render for `request`."""
    return chat_prompt_text(tokenizer, request.messages, request.answer_prefix)


class OpenAITarget(Target):
    """(c) vLLM's OpenAI-compatible server: /v1/completions, same prompt text (the server
    tokenizes it without adding special tokens, as our engine does). Like our services,
    it streams only the rewrite; the JSON features get whole answers."""

    name = "openai"

    def __init__(
        self,
        engine: dict[str, Any] | None,
        model_path: str,
        workdir: Path,
        url: str | None = None,
        start_timeout_s: float = 900,
    ) -> None:
        self.engine = engine or {}
        self.model_path = model_path
        self.workdir = workdir
        self.base_url = url.rstrip("/") if url else None
        self.start_timeout_s = start_timeout_s
        self.proc: LoggedProcess | None = None
        self.tokenizer: Any = None
        self._text: dict[int, str] = {}
        self.token_ids = True
        self.command: list[str] = []

    def settings(self) -> dict[str, Any]:
        return {"url": self.base_url, "command": self.command, "api": "/v1/completions (streamed for rewrite)"}

    async def start(self) -> None:
        t0 = time.perf_counter()
        self.tokenizer = await asyncio.to_thread(load_chat_tokenizer, self.model_path)
        optional = list(OPTIONAL_SERVER_FLAGS)
        if self.base_url is None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            config = engine_config(self.engine, self.model_path)
            port = free_port()
            base = [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                *openai_server_args(config, self.model_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
            self.command = base + optional
            env = server_env(self.workdir)
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{config.cpu_kv_cache_space_gib:g}")
            self.proc = LoggedProcess.start(self.command, self.workdir / "openai-server.log", env)
            self.base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if (
                self.proc is not None
                and self.proc.process.poll() is not None
                and optional
                and "unrecognized arguments" in self.proc.log_tail()
            ):
                # An older vLLM: start again without the reporting-only flags.
                optional = []
                self.command = base
                self.proc = LoggedProcess.start(self.command, self.workdir / "openai-server.log", env)
            if self.proc is not None:
                self.proc.check_alive()
            try:
                status, _ = await http.get(self.base_url + "/health", timeout=2)
                if status == 200:
                    break
            except (TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.base_url} not healthy after {self.start_timeout_s}s")
            await asyncio.sleep(0.5)
        # Older servers may refuse return_token_ids; then output tokens of a stream cut
        # short are counted as chunks.
        probe = {
            "model": "bench",
            "prompt": "Hello",
            "max_tokens": 2,
            "stream": True,
            "return_token_ids": True,
        }
        try:
            async for _ in http.post_sse(self.base_url + "/v1/completions", probe):
                pass
        except http.HttpError:
            self.token_ids = False
        self.startup_s = time.perf_counter() - t0

    async def prepare(self, items: Sequence[WorkItem]) -> None:
        self._text = {id(i): render_text(self.tokenizer, i.generation) for i in items}

    def payload(self, item: WorkItem) -> dict[str, Any]:
        g = item.generation
        body: dict[str, Any] = {
            "model": "bench",
            "prompt": self._text.get(id(item)) or render_text(self.tokenizer, g),
            "max_tokens": g.max_output_tokens,
            "temperature": g.temperature,
            "top_p": g.top_p,
            # Unary features are asked for whole answers, as their callers would; only the
            # streaming rewrite streams (with usage in its last event).
            "stream": item.streaming,
            "add_special_tokens": False,
        }
        if item.streaming:
            body["stream_options"] = {"include_usage": True}
        if self.token_ids:
            body["return_token_ids"] = True
        if g.seed is not None:
            body["seed"] = g.seed
        if g.stop:
            body["stop"] = list(g.stop)
        if g.json_schema is not None:
            body["structured_outputs"] = {"json": g.json_schema}
        if priority(item):
            body["priority"] = priority(item)
        return body

    async def call(self, item: WorkItem) -> Sample:
        assert self.base_url is not None
        sample = Sample(item.index, item.feature, time.perf_counter())
        visible = (
            _Visible(sample, item)
            if item.streaming and item.max_length_chars
            else None
        )
        chunks = 0
        seen_tokens = 0
        usage: dict[str, Any] | None = None
        try:
            async with contextlib.aclosing(
                http.post_sse(self.base_url + "/v1/completions", self.payload(item))
            ) as events:
                async for event in events:
                    now = time.perf_counter()
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        text = choice.get("text") or ""
                        ids = choice.get("token_ids") or []
                        if text or ids:
                            chunks += 1
                            seen_tokens += len(ids)
                            if sample.first_token is None:
                                sample.first_token = now - sample.start
                        if visible is not None:
                            visible.feed(text, now)
                    if visible is not None and visible.done:
                        break
            if visible is not None:
                visible.finish(time.perf_counter())
        except Exception as e:  # noqa: BLE001
            sample.ok, sample.error = False, _error(e)
        sample.end = time.perf_counter()
        if usage is not None:
            sample.output_tokens = int(usage.get("completion_tokens") or 0)
            sample.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            details = usage.get("prompt_tokens_details") or {}
            sample.cached_tokens = int(details.get("cached_tokens") or 0)
        else:
            sample.output_tokens = seen_tokens or chunks
        return sample

    async def snapshot(self) -> dict[str, float] | None:
        return _with_cpu(await _scrape(self.base_url + "/metrics" if self.base_url else None), self.proc)

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop_async()
            self.proc = None
            self.base_url = None


# --- (d) Hugging Face transformers generate ------------------------------------------------


def _streamer_base() -> type:
    try:
        from transformers.generation.streamers import BaseStreamer

        return BaseStreamer
    except ImportError:  # pragma: no cover - very old transformers
        return object


class _TokenTimes(_streamer_base()):  # type: ignore[misc]
    """A transformers streamer that only notes when each new token arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first puts the prompt
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class HFTarget(Target):
    """(d) transformers `generate`, serving one request (batch_size 1) or one static
    batch at a time from a FIFO queue; each request generates exactly its reference
    output length (EOS suppressed), so it does the same decoding work as the engine did.
    A static batch answers all its requests when the longest one is done."""

    name = "hf"

    def __init__(
        self, model_path: str, dtype: str = "auto", batch_size: int = 1, device: str | None = None
    ) -> None:
        self.model_path = model_path
        self.dtype = dtype
        self.batch_size = max(1, batch_size)
        self.device = device
        self.tokenizer: Any = None
        self.model: Any = None
        self._queue: asyncio.Queue[tuple[WorkItem, asyncio.Future[Sample], float]] | None = None
        self._worker: asyncio.Task[None] | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "device": self.device,
            "dtype": self.dtype,
            "attention": getattr(getattr(self.model, "config", None), "_attn_implementation", None),
        }

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = {
            "float32": torch.float32,
            "float16": torch.float16,
            "bfloat16": torch.bfloat16,
        }.get(self.dtype, torch.bfloat16 if self.device == "cuda" else torch.float32)
        self.dtype = str(dtype).removeprefix("torch.")
        if self.device == "cpu" and os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        self.tokenizer = load_chat_tokenizer(self.model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # dtype= (transformers 5) or torch_dtype= (4.x); .to() makes sure either way.
        try:
            model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
        except TypeError:
            model = AutoModelForCausalLM.from_pretrained(self.model_path, torch_dtype=dtype)
        self.model = model.to(device=self.device, dtype=dtype).eval()

    async def start(self) -> None:
        t0 = time.perf_counter()
        await asyncio.to_thread(self._load)
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._serve())
        self.startup_s = time.perf_counter() - t0

    async def call(self, item: WorkItem) -> Sample:
        assert self._queue is not None
        future: asyncio.Future[Sample] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future, time.perf_counter()))
        return await future

    async def _serve(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                samples = await asyncio.to_thread(
                    self._generate, [(item, t0) for item, _, t0 in batch]
                )
            except Exception as e:  # noqa: BLE001
                now = time.perf_counter()
                samples = [
                    Sample(item.index, item.feature, t0, end=now, ok=False, error=_error(e))
                    for item, _, t0 in batch
                ]
            for (_, future, _), sample in zip(batch, samples):
                if not future.done():
                    future.set_result(sample)

    def _generate(self, batch: list[tuple[WorkItem, float]]) -> list[Sample]:
        import torch

        tok = self.tokenizer
        texts = [render_text(tok, item.generation) for item, _ in batch]
        lengths = [
            max(
                1,
                min(item.ref_output_tokens or DEFAULT_HF_TOKENS, item.generation.max_output_tokens),
            )
            for item, _ in batch
        ]
        new_tokens = max(lengths)
        began = time.perf_counter()
        encoded = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.device
        )
        times = _TokenTimes()
        with torch.inference_mode():
            out = self.model.generate(
                **encoded,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                streamer=times,
            )
        if self.device == "cuda":
            torch.cuda.synchronize()
        end = time.perf_counter()
        prompt_width = encoded["input_ids"].shape[1]
        samples: list[Sample] = []
        for row, ((item, t0), n) in enumerate(zip(batch, lengths)):
            sample = Sample(
                item.index,
                item.feature,
                t0,
                end=end,
                output_tokens=n,
                prompt_tokens=int(encoded["attention_mask"][row].sum()),
                queue_s=began - t0,
            )
            if times.times:
                sample.first_token = times.times[0] - t0
            if len(batch) == 1:
                # One request streams: replay its tokens through the limiter at their times.
                sample.end = times.times[n - 1] if len(times.times) >= n else end
                if item.streaming and item.max_length_chars:
                    visible = _Visible(sample, item)
                    ids = out[row, prompt_width : prompt_width + n].tolist()
                    previous = ""
                    for k in range(n):
                        text = tok.decode(ids[: k + 1], skip_special_tokens=True)
                        visible.feed(
                            text[len(previous) :], times.times[k] if k < len(times.times) else end
                        )
                        previous = text
                        if visible.done:
                            break
                    visible.finish(sample.end)
            elif item.streaming:
                # A static batch returns whole answers: the first text arrives at the end.
                sample.ttft = end - t0
                sample.chunk_times = [end - t0]
            samples.append(sample)
        return samples

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self.model = None
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
