"""Smoke tests of `genai bench`, so the harness never rots. No timing assertions.

The fast test runs the whole client, statistics and report path against our gRPC server
in-process on an engine double (seconds). The engine test runs the raw AsyncLLM target,
a `genai serve` subprocess and the Hugging Face baseline on the tiny random model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from doubles import FakeEngine
from genai_core.engine.types import GenerationRequest
from genai_bench import cli
from genai_bench.workload import FEATURES, build_workload, parse_mix
from servers import in_process_server

RUN_FIELDS = {
    "target",
    "load",
    "requests",
    "completed",
    "errors",
    "wall_s",
    "req_per_s",
    "output_tok_per_s",
    "e2e_s",
    "ttft_s",
    "tpot_s",
    "itl_s",
    "per_feature",
    "samples",
}


def minimal_instance(schema: dict[str, Any]) -> Any:
    """The smallest value valid under one of our bounded response schemas."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {
            k: minimal_instance(v)
            for k, v in schema.get("properties", {}).items()
            if k in schema.get("required", [])
        }
    if kind == "array":
        return [minimal_instance(schema["items"]) for _ in range(schema.get("minItems", 0))]
    if kind == "integer":
        return schema.get("minimum", 0)
    if kind == "string":
        return "ok" if schema.get("maxLength", 2) >= 2 else "o"
    raise AssertionError(f"unexpected schema {schema}")


def respond(request: GenerationRequest) -> str:
    if request.json_schema is not None:
        return json.dumps(minimal_instance(request.json_schema), separators=(",", ":"))
    return "Could you please send me the report by the end of the day? Thank you very much."


def test_workload_is_deterministic_and_valid():
    a = build_workload(12, seed=3)
    b = build_workload(12, seed=3)
    assert [i.request.SerializeToString() for i in a] == [i.request.SerializeToString() for i in b]
    assert {i.feature for i in a} == set(FEATURES)
    assert (
        build_workload(12, seed=4)[0].request != a[0].request
        or build_workload(12, seed=4)[1].request != a[1].request
    )
    assert parse_mix("rewrite=2,search") == {"rewrite": 2.0, "search": 1.0}
    for item in a:  # built through the services' own validation and prompts
        assert item.generation.max_output_tokens > 0
        assert item.generation.messages[0].role == "system"


def test_bench_against_in_process_grpc_server(tmp_path: Path):
    with in_process_server(FakeEngine(respond)) as (_, running):
        code = cli.main(
            [
                "--targets",
                "grpc",
                "--address",
                f"127.0.0.1:{running.port}",
                "--concurrency",
                "1,3",
                "--rates",
                "20",
                "--requests",
                "8",
                "--warmup",
                "2",
                "--out",
                str(tmp_path),
                "--name",
                "smoke",
            ]
        )
    assert code == 0
    results = json.loads((tmp_path / "smoke.json").read_text())
    assert [r["load"] for r in results["runs"]] == [
        {"mode": "closed", "concurrency": 1},
        {"mode": "closed", "concurrency": 3},
        {"mode": "open", "rate": 20.0},
    ]
    for run in results["runs"]:
        assert RUN_FIELDS <= run.keys()
        assert run["errors"] == 0, run["error_kinds"]
        assert run["completed"] == run["requests"] >= 8
        assert set(run["per_feature"]) == set(FEATURES)
        assert run["ttft_s"]["p50"] is not None  # the streaming rewrite
        assert run["output_tokens"] > 0
    markdown = (tmp_path / "smoke.md").read_text()
    assert "| grpc | c=1 |" in markdown and "genai bench" in markdown
    if importlib.util.find_spec("matplotlib") is not None:  # plots need the dev extra
        for plot in ("latency", "throughput", "open-loop"):
            assert (tmp_path / f"smoke-{plot}.png").stat().st_size > 0


@pytest.mark.engine
def test_bench_raw_grpc_and_hf_on_the_tiny_model(tmp_path: Path):
    env = dict(
        os.environ,
        OMP_NUM_THREADS="2",
        VLLM_CACHE_ROOT=str(tmp_path / "vllm-cache"),
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "genai_bench",
            "--model",
            "tiny",
            "--engine",
            "dtype=float32",
            "--engine",
            "max_num_seqs=8",
            "--engine",
            "max_model_len=4096",
            "--engine",
            "cpu_kv_cache_space_gib=1",
            "--targets",
            "raw,grpc,hf",
            "--concurrency",
            "2",
            "--requests",
            "4",
            "--warmup",
            "1",
            "--out",
            str(tmp_path),
            "--name",
            "tiny",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "tiny.json").read_text())
    assert {r["target"] for r in results["runs"]} == {"raw", "grpc", "hf"}
    for run in results["runs"]:
        assert RUN_FIELDS <= run.keys()
        assert run["errors"] == 0, (run["target"], run["error_kinds"])
        assert run["completed"] == 4
    by_target = {r["target"]: r for r in results["runs"]}
    # The baseline replays the reference's output lengths, request by request.
    assert [row[5] for row in by_target["hf"]["samples"]["rows"]] == [
        row[5] for row in by_target["raw"]["samples"]["rows"]
    ]
    # The spawned server's own CPU time per output token (its engine core not counted).
    assert by_target["grpc"]["frontend_cpu_per_output_token_s"] > 0
    assert by_target["raw"]["frontend_cpu_per_output_token_s"] > 0
    assert {x["name"] for x in results["ratios"]} >= {
        "b_over_a_throughput",
        "b_over_d_throughput_at_p99",
    }
    assert "b_over_a_throughput" in (tmp_path / "tiny.md").read_text()
