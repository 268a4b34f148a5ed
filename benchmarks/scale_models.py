"""Transformers configs with real models' shapes (no weights, no network): what
bench_scale measures, written as a `hf:` directory holds them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

QWEN2_0_5B: dict[str, Any] = {  # Qwen/Qwen2-0.5B's config.json, in fp32
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 131072,
    "max_window_layers": 24,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "sliding_window": 131072,
    "use_sliding_window": False,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "dtype": "float32",
}
LLAMA_3_1_8B: dict[str, Any] = {  # meta-llama/Llama-3.1-8B's config.json, in bf16
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "dtype": "bfloat16",
}
MODELS = {"qwen2-0.5b": QWEN2_0_5B, "llama-3.1-8b": LLAMA_3_1_8B}


def write_config(name: str, folder: Path, layers: int | None = None) -> Path:
    """`folder` holding config.json of model `name` (with `layers` layers if given)."""
    config = dict(MODELS[name])
    if layers is not None:
        config["num_hidden_layers"] = layers
        if "max_window_layers" in config:
            config["max_window_layers"] = layers
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder
