"""The example configs in config/ parse, and each says what it promises."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from genai_core.config import load_config
from genai_services.registry import REGISTRY

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "config").glob("*.yaml"))


def test_every_example_config_is_found() -> None:
    assert {p.name for p in CONFIGS} >= {"cpu.yaml", "gpu.yaml", "gpu-tp2-fp8.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_parses(path: Path) -> None:
    config = load_config(path, known_services=REGISTRY.names)
    # Every example names its model and its tensor parallelism explicitly.
    raw = yaml.safe_load(path.read_text())["engine"]
    assert config.engine.model == raw["model"]
    assert config.engine.tensor_parallel_size == raw.get("tensor_parallel_size", 1)


def test_multi_gpu_example_is_tensor_parallel_fp8_with_cuda_graphs() -> None:
    config = load_config(CONFIGS[0].parent / "gpu-tp2-fp8.yaml", known_services=REGISTRY.names)
    engine = config.engine
    assert (engine.tensor_parallel_size, engine.quantization, engine.enforce_eager) == (2, "fp8", False)
