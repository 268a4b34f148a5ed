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


# -- issue 38: what the third review found ----------------------------------------------------

_lib = torch.library.Library("cgtest", "DEF")
_lib.define("mix(Tensor x) -> Tensor")
_lib.define("double(Tensor x) -> Tensor")
_lib.define("autotunes(Tensor x) -> Tensor")
_lib.impl("mix", lambda x: x - x.mean(0, keepdim=True), "CompositeExplicitAutograd")
_lib.impl("double", lambda x: x * 2, "CompositeExplicitAutograd")

# Set by a test: the next call of cgtest::autotunes synchronizes, as an Inductor kernel
# with several configs does on its first launch after a load.
AUTOTUNE_PENDING = {"value": False}


def _autotunes(x: torch.Tensor) -> torch.Tensor:
    if AUTOTUNE_PENDING["value"]:
        AUTOTUNE_PENDING["value"] = False
        torch.cuda.synchronize()
    return x + 1


_lib.impl("autotunes", _autotunes, "CompositeExplicitAutograd")
for _name in ("mix", "double", "autotunes"):
    torch.library.register_fake(f"cgtest::{_name}", lambda x: torch.empty_like(x), lib=_lib)


def _features(n: int) -> tuple[torch.Tensor]:
    return (torch.randn(n, 8, generator=torch.Generator().manual_seed(n)),)


class MixesLast(nn.Module):
    """Its last op is a splitting op that mixes tokens: no compiled piece differs when
    padded, only that op's output (the model's output) does."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.cgtest.mix(self.proj(x).relu())


class ViewsBetween(nn.Module):
    """The piece between its two splitting ops only reshapes and slices: its graph
    launches no kernel (an empty CUDA graph)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(8, 8)
        self.out = nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.cgtest.double(self.proj(x))
        z = torch.ops.cgtest.double(y.view(-1, 2, 4)[:, 1])
        return self.out(z)


class Autotunes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.cgtest.autotunes(self.proj(x)).relu()


def _spec(model: type[nn.Module], splitting_op: str, **config: object) -> ModelSpec:
    return ModelSpec(
        model=lambda: model().eval(),
        example_inputs=_features,
        config={"compile_sizes": [], "max_num_batched_tokens": 16, "splitting_ops": [splitting_op], **config},
        dynamic_arg_dims={"x": 0},
    )


MIXES_LAST = _spec(MixesLast, "cgtest::mix")
VIEWS_BETWEEN = _spec(ViewsBetween, "cgtest::double")
AUTOTUNES = _spec(Autotunes, "cgtest::autotunes", backend="eager")


def _llama_bf16() -> nn.Module:
    from examples.tiny_llama import TinyLlama

    torch.manual_seed(0)
    return TinyLlama(layers=2, vocab=256, hidden=512, heads=8).to(torch.bfloat16).eval()


def llama_bf16(backend: str) -> ModelSpec:
    """A causal bf16 Llama of hidden 512: more rows make its kernels round differently
    (by bf16's 2**-8), which is not tokens mixing."""
    return ModelSpec(
        model=_llama_bf16,
        example_inputs=lambda n: (torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(n)),),
        config={
            "compile_sizes": [],
            "max_num_batched_tokens": 16,
            "splitting_ops": ["tinyllama::attention"],
            "backend": backend,
        },
        dynamic_arg_dims={"input_ids": 0},
    )
