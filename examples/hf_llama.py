"""A small Llama-style transformers model, end to end, offline: write a checkpoint
directory with random weights (`save_pretrained`), precompile it as an `hf:` TARGET, and
serve it the way a serving process would (`from_pretrained` + `aotcache.load`).

    python examples/hf_llama.py [DIR]

In CI the precompile is one command: `aotcache precompile hf:DIR --cache-dir aot-cache`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

import aotcache

# Sizes for the example: ranges [1, 16] and [17, 64], and 1, 2, 4 compiled apart.
SIZES = {"compile_sizes": [1, 2, 4], "compile_ranges_split_points": [16], "max_num_batched_tokens": 64}


def write_checkpoint(folder: Path, layers: int = 2, seed: int = 0) -> Path:
    """A tiny Llama-style checkpoint (config.json + safetensors weights), made offline."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="hf-llama-"))
    cache = folder / "aot-cache"
    write_checkpoint(folder)
    config = aotcache.hf.default_config(folder, **SIZES)
    result = aotcache.precompile(f"hf:{folder}", config, cache_dir=cache)
    print(f"precompiled {result.entry_id}: {result.summary['pieces_unique']} unique pieces, "
          f"{result.summary['units_compiled']} units")  # fmt: skip

    # --- what a serving process does ---
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    runner = aotcache.load(model, config, cache_dir=cache, strict=True)
    ids = torch.randint(0, 256, (1, 11))
    output = runner(input_ids=ids, attention_mask=torch.ones_like(ids))
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
    difference = float((output.logits - expected).abs().max())
    print(f"{type(output).__name__}.logits {tuple(output.logits.shape)}; max |aotcache - eager| = {difference:.1e}")
    return 0 if difference <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
