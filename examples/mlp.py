"""A model with no splitting ops: the whole graph is a single compiled piece.

aotcache precompile examples/mlp.py:spec
"""

from __future__ import annotations

import torch
from torch import nn

from aotcache.target import ModelSpec

FEATURES = 16


class MLP(nn.Module):
    def __init__(self, features: int = FEATURES, hidden: int = 64) -> None:
        super().__init__()
        self.up = nn.Linear(features, hidden)
        self.down = nn.Linear(hidden, features)
        self.register_buffer("scale", torch.full((features,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(nn.functional.gelu(self.up(x))) * self.scale + x


def example_inputs(batch: int) -> tuple[torch.Tensor]:
    return (torch.randn(batch, FEATURES, generator=torch.Generator().manual_seed(batch)),)


def build(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP().eval()


CONFIG = {"compile_sizes": [1, 4], "compile_ranges_split_points": [8], "max_num_batched_tokens": 32}

spec = ModelSpec(model=build, example_inputs=example_inputs, config=CONFIG)
