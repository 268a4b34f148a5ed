"""TARGETs that misbehave, for tests/test_hostile.py: user code that raises, a custom op
whose fake implementation lies about strides, and a module that leaves a mark when it
is imported (to prove that nothing runs before an entry passed its checks)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from aotcache.target import ModelSpec

if os.environ.get("AOTCACHE_TEST_MARKER"):
    Path(os.environ["AOTCACHE_TEST_MARKER"]).write_text("imported")

TINY = {"compile_sizes": [4], "max_num_batched_tokens": 8}


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).relu()


def _inputs(n: int) -> tuple[torch.Tensor]:
    return (torch.randn(n, 8),)


def _broken_factory() -> nn.Module:
    raise RuntimeError("weights file missing")


def _broken_inputs(n: int) -> tuple[torch.Tensor]:
    raise KeyError(f"no example for size {n}")


class Refuses(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 5:
            raise ValueError(f"expected 5 features, got {x.shape[1]}")
        return x


# A custom op whose real kernel returns a column-major tensor while its fake promises a
# row-major one: the bug torch.library.opcheck finds, and the precompile self-check names.
_lib = torch.library.Library("aotcache_lying", "DEF")
_lib.define("colmajor(Tensor x) -> Tensor")


def _colmajor(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_strided(tuple(x.shape), (1, x.shape[0]), dtype=x.dtype)
    return out.copy_(x)


def _colmajor_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


_lib.impl("colmajor", _colmajor, "CPU")
_lib._register_fake("colmajor", _colmajor_fake)


class Lying(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aotcache_lying.colmajor(self.lin(x)).relu() + 1


@torch.library.custom_op("aotcache_slow::double", mutates_args=())
def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_double.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class WithCustomOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aotcache_slow.double(self.lin(x)).relu()


with_custom_op = ModelSpec(
    model=WithCustomOp,
    example_inputs=_inputs,
    config={**TINY, "backend": "eager", "splitting_ops": ["aotcache_slow::double"]},
)
small = ModelSpec(model=Small, example_inputs=_inputs, config={**TINY, "backend": "eager"})
broken_factory = ModelSpec(model=_broken_factory, example_inputs=_inputs, config=TINY)
broken_inputs = ModelSpec(model=Small, example_inputs=_broken_inputs, config=TINY)
refuses = ModelSpec(model=Refuses, example_inputs=_inputs, config=TINY)
lying = ModelSpec(model=Lying, example_inputs=_inputs, config=TINY)


def factory_that_raises() -> ModelSpec:
    raise OSError("config.json not found")


class ShapeBug(nn.Module):
    """A shape mistake that only shows under the trace: Inductor's fake tensors run the
    matmul's meta function, which raises (and torch logs the traceback at ERROR)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(5, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


shape_bug = ModelSpec(model=ShapeBug, example_inputs=_inputs, config=TINY)
