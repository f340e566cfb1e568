"""Our config → vLLM's engine arguments (no engine started)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from genai_core.config import parse_config
from genai_core.engine.types import ChatMessage
from genai_core.engine.vllm_engine import chat_prompt_text, cpu_rank_binding, engine_args, queue_time_s


def test_engine_args_carry_every_setting() -> None:
    config = parse_config({"engine": {
        "model": "/m", "tensor_parallel_size": 2, "max_num_batched_tokens": 4096, "gpu_memory_utilization": 0.8,
        "quantization": "fp8", "kv_cache_dtype": "fp8", "dtype": "bfloat16", "max_model_len": 2048,
        "enable_prefix_caching": False, "enforce_eager": True, "served_model_name": "prod-model",
        "speculative": {"method": "ngram", "num_speculative_tokens": 3}, "load_format": "dummy",
        "disable_custom_all_reduce": True,
    }})
    args = engine_args(config.engine, "/m")
    assert (args.model, args.tensor_parallel_size, args.max_num_batched_tokens) == ("/m", 2, 4096)
    assert (args.quantization, args.kv_cache_dtype, args.dtype) == ("fp8", "fp8", "bfloat16")
    assert args.gpu_memory_utilization == 0.8 and args.max_model_len == 2048
    assert args.enable_prefix_caching is False and args.enforce_eager is True
    assert args.served_model_name == "prod-model"
    assert args.speculative_config["method"] == "ngram" and args.speculative_config["num_speculative_tokens"] == 3
    assert args.scheduling_policy == "priority"
    assert args.load_format == "dummy" and args.disable_custom_all_reduce is True
    assert args.structured_outputs_config.disable_any_whitespace is True


def test_weights_load_from_the_checkpoint_unless_asked() -> None:
    args = engine_args(parse_config({}).engine, "/m")
    assert args.load_format == "auto" and args.disable_custom_all_reduce is False


def test_cpu_rank_binding_splits_cores_evenly() -> None:
    assert cpu_rank_binding([0, 1], 2) == "0|1"
    assert cpu_rank_binding([0, 1, 2, 3, 4], 2) == "0,1|2,3"
    with pytest.raises(ValueError, match="at least 4 CPU cores"):
        cpu_rank_binding([0, 1], 4)


def test_queue_time_from_the_engine_core_timestamps() -> None:
    def output(**m: float) -> SimpleNamespace:
        return SimpleNamespace(metrics=SimpleNamespace(**m))

    assert queue_time_s(output(queued_ts=10.0, scheduled_ts=10.25)) == 0.25
    assert queue_time_s(output(queued_ts=10.0, scheduled_ts=10.0)) == 0.0
    # Missing, unset or out-of-order timestamps give no queue time rather than a wrong one.
    assert queue_time_s(output(queued_ts=10.0, scheduled_ts=9.0)) is None
    assert queue_time_s(output(queued_ts=0.0, scheduled_ts=3.0)) is None
    assert queue_time_s(SimpleNamespace(metrics=None)) is None
    assert queue_time_s(SimpleNamespace()) is None


def test_chat_prompt_text_renders_every_message_and_the_answer_prompt() -> None:
    class Tokenizer:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):  # noqa: ANN001, ANN202
            assert tokenize is False and add_generation_prompt is True
            return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"

    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"))
    assert chat_prompt_text(Tokenizer(), messages) == "system:Be brief.|user:Hi|assistant:"


def test_unary_generations_ask_for_the_final_output_only_and_streams_for_deltas() -> None:
    from vllm.sampling_params import RequestOutputKind

    from genai_core.engine.types import GenerationRequest
    from genai_core.engine.vllm_engine import sampling_params

    request = GenerationRequest(messages=(ChatMessage("user", "hi"),), max_output_tokens=8, json_schema={"type": "object"})
    assert sampling_params(request).output_kind == RequestOutputKind.DELTA
    final = sampling_params(dataclasses.replace(request, final_only=True))
    assert final.output_kind == RequestOutputKind.FINAL_ONLY
    assert final.max_tokens == 8 and final.structured_outputs is not None


def test_first_token_latency_from_vllms_request_metrics() -> None:
    from genai_core.engine.vllm_engine import first_token_s

    assert first_token_s(SimpleNamespace(metrics=SimpleNamespace(first_token_latency=0.125))) == 0.125
    # Not yet set (0.0), not reported, or no metrics at all: unknown, never 0.
    assert first_token_s(SimpleNamespace(metrics=SimpleNamespace(first_token_latency=0.0))) is None
    assert first_token_s(SimpleNamespace(metrics=SimpleNamespace())) is None
    assert first_token_s(SimpleNamespace(metrics=None)) is None
