"""Precompiling without weights.

An entry binds weights by name, shape and dtype, so nothing in a precompile needs their
values: Dynamo traces fake tensors and Inductor compiles from shapes. A model whose
parameters are on the meta device (every `hf:` TARGET; your own spec, built under
`aotcache.without_weights()` (model_spec.py) or on `torch.device("meta")`) gets uninitialised CPU
tensors in their place, which nothing reads, so the kernel never maps their memory.

Only the self-check needs numbers. It gets small random values of its own, shared by
every piece with the same code: the 32 identical layers of a decoder run on one layer's
worth of random weights (`check_values`), built on demand and freed with the build.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import fx

_UNSET: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()


def fill_meta_tensors(model: torch.nn.Module) -> int:
    """Put an uninitialised CPU tensor in place of every parameter and buffer on the
    meta device (tied ones stay tied): how many were replaced."""
    made: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for name, tensor in list(table.items()):
                if tensor is None or not tensor.is_meta:
                    continue
                if id(tensor) not in made:
                    empty = torch.empty_like(tensor, device="cpu")
                    if isinstance(tensor, torch.nn.Parameter):
                        empty = torch.nn.Parameter(empty, requires_grad=tensor.requires_grad)
                    made[id(tensor)] = empty
                    _UNSET[id(empty)] = empty
                table[name] = made[id(tensor)]
    return len(made)


def is_unset(value: Any) -> bool:
    """Whether a tensor is one of fill_meta_tensors' placeholders (its values are garbage)."""
    return isinstance(value, torch.Tensor) and _UNSET.get(id(value)) is value


def has_unset(model: torch.nn.Module) -> bool:
    return any(is_unset(t) for t in (*model.parameters(), *model.buffers()))


def check_values(stitch: fx.GraphModule, template: list[Any], digests: dict[str, str]) -> list[Any]:
    """The graph's bound inputs for the self-check: `template` (the model's tensors, one
    per stitch placeholder) with every placeholder replaced by random values. The
    inputs a piece takes at one position share one tensor across all pieces of the same
    code (`digests`: piece name -> digest), so N identical layers cost one layer."""
    index = {node.name: i for i, node in enumerate(n for n in stitch.graph.nodes if n.op == "placeholder")}
    values = list(template)
    shared: dict[tuple[str, int], torch.Tensor] = {}
    filled: set[int] = set()
    for node in stitch.graph.nodes:
        if node.op != "call_module":
            continue
        for position, arg in enumerate(node.args):
            if not isinstance(arg, fx.Node) or arg.op != "placeholder":
                continue
            slot = index[arg.name]
            if slot in filled or not is_unset(template[slot]):
                continue
            key = (digests[str(node.target)], position)
            same = shared.get(key)
            if same is None or same.shape != template[slot].shape or same.dtype != template[slot].dtype:
                same = shared[key] = random_like(template[slot], seed=len(shared))
            values[slot] = same
            filled.add(slot)
    for slot, value in enumerate(template):
        if slot not in filled and is_unset(value):
            values[slot] = random_like(value, seed=len(shared) + slot)
    return values


def random_like(tensor: torch.Tensor, seed: int) -> torch.Tensor:
    """Values that keep activations of order one through many layers: a matrix scaled by
    its fan-in, a vector (a norm's scale, a bias) near one; integers and bools zero."""
    if not tensor.dtype.is_floating_point:
        return torch.zeros(tensor.shape, dtype=tensor.dtype)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
    if tensor.ndim >= 2:
        return noise.mul_(tensor.shape[-1] ** -0.5)
    return noise.mul_(0.1).add_(1.0)
