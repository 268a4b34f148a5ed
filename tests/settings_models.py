"""A tiny model whose forward reads a plain setting of each kind the trace bakes into
the graph (test_traced_state.py): a norm's eps (float), the activation's name (str), a
scale (float), a residual flag (bool), a module-level constant, and a torch.backends
flag. Each changes the output when it changes."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from aotcache.target import ModelSpec

HIDDEN = 16
OFFSET = 0.25  # a module-level constant forward reads: baked into the graph as a number


class Norm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SettingsModel(nn.Module):
    def __init__(self, eps: float = 1e-6, act: str = "gelu", scale: float = 1.0, residual: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = Norm(HIDDEN, eps)
        self.proj = nn.Linear(HIDDEN, HIDDEN)
        self.act = act
        self.scale = scale
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.norm(x))
        h = nn.functional.gelu(h) if self.act == "gelu" else torch.relu(h)
        h = h * self.scale + OFFSET
        if torch.backends.mkldnn.enabled:  # a torch.backends flag: another path when it is off
            h = h * 2.0
        if self.residual:
            h = h + x
        return h


class Marker:
    """An object of no plain form."""


MARKER = Marker()


class ObjectKeyModel(nn.Module):
    """forward reads a dict by an object key: aotcache has no plain check for "the key is
    that object", so precompiling it is refused, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(HIDDEN, HIDDEN)
        self.scales = {MARKER: 2.0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * self.scales[MARKER]


class Doubler(nn.Module):
    """What the `kernels` package makes of a function: a module-level singleton module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


DOUBLE = Doubler()


def routed_through(*singletons: nn.Module) -> Any:
    """What `kernels.use_kernelized_func` does to transformers' attention classes (>= 5.25):
    forward wrapped in a closure that holds module-level singletons and reads their id(),
    so Dynamo guards on which objects they are."""

    def decorate(cls: Any) -> Any:
        inner = cls.forward

        @functools.wraps(inner)
        def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
            chosen = {id(s): s for s in singletons}
            for s in singletons:
                x = chosen[id(s)](x)
            return inner(self, x)

        cls.forward = forward
        return cls

    return decorate


@routed_through(DOUBLE)
class SingletonModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def example_inputs(num_tokens: int) -> tuple[torch.Tensor]:
    generator = torch.Generator().manual_seed(num_tokens)
    return (torch.randn(num_tokens, HIDDEN, generator=generator),)


CONFIG: dict[str, Any] = {"compile_sizes": [], "max_num_batched_tokens": 16, "splitting_ops": []}


def spec(**settings: Any) -> ModelSpec:
    return ModelSpec(
        model=lambda: SettingsModel(**settings).eval(),
        example_inputs=example_inputs,
        config=CONFIG,
        dynamic_arg_dims={"x": 0},
    )
