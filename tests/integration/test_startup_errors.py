"""A bad config file stops the server before any engine starts, naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_serve(tmp_path: Path, yaml_text: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    return subprocess.run(
        [sys.executable, "-m", "genai_services.host.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unknown_key_refused(tmp_path: Path) -> None:
    result = run_serve(tmp_path, "engine:\n  tensor_paralel_size: 2\n")
    assert result.returncode == 2
    assert "engine.tensor_paralel_size: unknown key (did you mean 'tensor_parallel_size'?)" in result.stderr


def test_bad_values_all_named(tmp_path: Path) -> None:
    result = run_serve(tmp_path, "engine:\n  gpu_memory_utilization: 3\nserver:\n  port: -1\n  services: [feed, chat]\n")
    assert result.returncode == 2
    for key in ("engine.gpu_memory_utilization", "server.port", "server.services"):
        assert key in result.stderr


def test_missing_model_directory_refused(tmp_path: Path) -> None:
    result = run_serve(tmp_path, f"engine:\n  model: {tmp_path / 'nope'}\n")
    assert result.returncode == 2
    assert "engine.model" in result.stderr
