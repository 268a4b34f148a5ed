"""A model with a CustomOp layer (rms_norm: a native forward and a CPU forward of its
own) between two Linears (which Inductor compiles as addmm), for the custom_ops and
inductor_passes tests."""

from __future__ import annotations

import torch
from torch import nn

from aotcache.custom_op import CustomOp
from aotcache.target import ModelSpec


@CustomOp.register("rms_norm")
class RMSNorm(CustomOp):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, dim))
        self.eps = eps

    def forward_native(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    def forward_cpu(self, x: torch.Tensor) -> torch.Tensor:
        # the same numbers another way (a division by sqrt, no rsqrt): which of the two a
        # trace ran shows in the compiled kernels
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.up = nn.Linear(16, 32)
        self.norm = RMSNorm(32)
        self.down = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.norm(self.up(x))))


def example_inputs(n: int) -> tuple[torch.Tensor]:
    return (torch.randn(n, 16, generator=torch.Generator().manual_seed(n)),)


CONFIG = {"compile_sizes": [], "max_num_batched_tokens": 16}
SPEC = ModelSpec(model=lambda: Block().eval(), example_inputs=example_inputs, config=CONFIG, dynamic_arg_dims={"x": 0})
