"""The library face: a model class that loads its verified entry on its first call, or
compiles, saves and loads it when there is none (VLLM_COMPILE mode).

    python -m examples.decorated --cache-dir .aotcache/decorated   # compiles once, then loads

In CI the entry is built ahead of time from the class itself, with the config the class
declares, so the first call of every replica is a load:

    aotcache precompile examples/decorated.py:ServedTinyLlama --cache-dir .aotcache/decorated
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python examples/decorated.py`: import as the package it is
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

import aotcache
from examples import tiny_llama


@aotcache.support_compile(dynamic_arg_dims={"input_ids": 0}, config=tiny_llama.CONFIG)
class ServedTinyLlama(tiny_llama.TinyLlama):
    def __init__(self, layers: int = 2) -> None:
        super().__init__(layers=layers)
        self.eval()

    def example_inputs(self, num_tokens: int) -> tuple[torch.Tensor]:
        return tiny_llama.example_inputs(num_tokens)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=".aotcache/decorated")
    args = parser.parse_args()
    torch.manual_seed(0)
    with aotcache.config(cache_dir=args.cache_dir):
        model = ServedTinyLlama()
    reference = tiny_llama.build(2)
    started = time.perf_counter()
    (ids,) = tiny_llama.example_inputs(5)
    first = model(ids)
    snapshot = aotcache.counters.snapshot()
    how = "loaded the entry" if snapshot["entries_loaded"] and not snapshot["compiles"] else "compiled and saved"
    print(f"first call: {how} in {time.perf_counter() - started:.2f} s; output {tuple(first.shape)}")
    worst = 0.0
    for size in (1, 3, 8, 20, 64):
        (ids,) = tiny_llama.example_inputs(size)
        with torch.no_grad():
            worst = max(worst, float((model(ids) - reference(ids)).abs().max()))
    print(f"worst difference from eager over 5 sizes: {worst:.2e}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
