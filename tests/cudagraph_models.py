"""Models for the CUDA-graph tests: one that mixes tokens outside any masked op, so
padding a batch changes its real rows."""

from __future__ import annotations

import torch
from torch import nn

from aotcache.target import ModelSpec


class Mixing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        return y - y.mean(0)  # every token sees every other: padding shows


MIXING = ModelSpec(
    model=lambda: Mixing().eval(),
    example_inputs=lambda n: (torch.randn(n, 8),),
    config={"compile_sizes": [], "max_num_batched_tokens": 8},
    dynamic_arg_dims={"x": 0},
)
