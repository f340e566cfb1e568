"""Write a Llama-architecture model directory for `engine.load_format: dummy`.

Only `config.json` and a tokenizer: vLLM's dummy loader makes random weights on the
GPUs, so a 70B-class shape needs no 140 GB of checkpoint files. Answers are noise; speed
does not depend on the weights' values.

Usage: python docs/bench/dummy_model.py OUT SHAPE TOKENIZER_DIR
  SHAPE: 1b (Llama-3.2-1B dimensions), 8b (Llama-3-8B) or 70b (Llama-3-70B)
  TOKENIZER_DIR: holds tokenizer.json and tokenizer_config.json (e.g. the default model's)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8),
    "70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8),
}


def write(out: Path, shape: str, tokenizer_dir: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    vocab = len(json.loads((tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"])
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": 1,
        "eos_token_id": 2,
        **SHAPES[shape],
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    params = _params(config)
    print(f"wrote {out}: {shape} Llama shape, {params / 1e9:.1f}B parameters, vocab {vocab}, "
          f"chat template {'yes' if 'chat_template' in tokenizer else 'no'}")
    return out


def _params(c: dict) -> int:
    h, i, n = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i
    return n * per_layer + 2 * c["vocab_size"] * h


if __name__ == "__main__":
    write(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
