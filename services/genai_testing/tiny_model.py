"""A tiny random-weight Llama for tests and the benchmark: a real vLLM engine, no download.

Not product code: the server only ever loads the default model or a directory it is
given (`genai_core.models`).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from genai_core.models import make_tokenizer_config_portable

log = structlog.get_logger(__name__)

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""Chat template of the tiny test model: one role marker line, then the content."""

TINY_ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")


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
    make_tokenizer_config_portable(out_dir)

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
