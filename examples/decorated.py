"""The library face: a model class that compiles or loads itself on its first call.

aotcache precompile examples/decorated.py:ServedTinyLlama --splitting-ops tinyllama::attention

with aotcache.config(splitting_ops=["tinyllama::attention"]):
    model = ServedTinyLlama()
logits = model(input_ids)   # VLLM_COMPILE: loads the verified entry, or compiles and saves it
"""

from __future__ import annotations

import torch

import aotcache
from examples import tiny_llama


@aotcache.support_compile(dynamic_arg_dims={"input_ids": 0})
class ServedTinyLlama(tiny_llama.TinyLlama):
    def __init__(self, layers: int = 2) -> None:
        super().__init__(layers=layers)
        self.eval()

    def example_inputs(self, num_tokens: int) -> tuple[torch.Tensor]:
        return tiny_llama.example_inputs(num_tokens)
