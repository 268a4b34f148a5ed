"""Padding a batch to a capture size, and the check that it is safe.

Graphs replay at fixed sizes, so a batch is padded with zero tokens up to the capture
size that holds it. That is right only for a model whose tokens do not mix outside a
masked splitting op (vLLM's models are built so): non-causal attention without a mask,
pooling, `x - x.mean(0)` see the padding, and the real rows change. So before a graph is
captured for a padded size, the pieces run eagerly on the smallest batch that pads to it,
padded and not; the first piece whose real rows differ is named, and the size refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from aotcache.errors import DispatchError


class PaddingError(DispatchError):
    """Padding a batch to a capture size changes its real rows: the model mixes tokens."""


def pad_tensor(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Grow `dim` to `size` with zeros (graphs replay on the padded size)."""
    missing = size - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


def unpad_tensor(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    return tensor.narrow(dim, 0, size) if tensor.shape[dim] > size else tensor


def _real_rows(padded: torch.Tensor, real: torch.Tensor, size: int, padded_size: int) -> torch.Tensor | None:
    """`padded` cut to `real`'s shape along the dims that grew with the padding."""
    if padded.ndim != real.ndim:
        return None
    for dim, (p, r) in enumerate(zip(padded.shape, real.shape, strict=True)):
        if p != r:
            if (p, r) != (padded_size, size):
                return None
            padded = padded.narrow(dim, 0, size)
    return padded


def recording(pieces: Any, names: list[str], seen: dict[str, Any]) -> Any:
    """`pieces` (a unit's namespace of runnables) with each named piece's outputs kept."""

    def record(name: str, run: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any) -> Any:
            output = run(*args)
            seen[name] = torch.utils._pytree.tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, output)
            return output

        return recorded

    members = {name: record(name, fn) if name in names else fn for name, fn in vars(pieces).items()}
    return type(pieces)(**members)


def _same_real_rows(real: torch.Tensor, cut: torch.Tensor) -> bool:
    """Equal up to the rounding of `real`'s dtype: a kernel may sum in another order for
    more rows (bf16 rounds at 2**-8), while tokens that mix change rows by far more. Each
    element may differ by a few units of rounding of the tensor's largest magnitude."""
    if not real.dtype.is_floating_point:
        return torch.equal(cut, real)
    rtol = max(1e-3, 4 * torch.finfo(real.dtype).eps)
    real, cut = real.float(), cut.float()
    scale = float(real.abs().max()) if real.numel() else 0.0
    return bool(torch.allclose(cut, real, rtol=rtol, atol=max(1e-4, rtol * scale)))


def first_difference(
    unpadded: dict[str, Any], padded: dict[str, Any], order: list[str], size: int, padded_size: int
) -> str | None:
    """The first piece (in `order`) whose real rows differ between the two runs."""
    for name in order:
        if name not in unpadded or name not in padded:
            continue
        ours = torch.utils._pytree.tree_leaves(unpadded[name])
        theirs = torch.utils._pytree.tree_leaves(padded[name])
        for real, grown in zip(ours, theirs, strict=False):
            if not isinstance(real, torch.Tensor):
                continue
            cut = _real_rows(grown, real, size, padded_size)
            if cut is None or not _same_real_rows(real, cut):
                return name
    return None


def refuse(piece: str, size: int, padded_size: int) -> PaddingError:
    where = "the model's output" if piece == "output" else f"piece {piece}"
    return PaddingError(
        f"padding a batch of {size} tokens to the capture size {padded_size} changes the real rows of {where}: "
        "the model mixes tokens outside a masked splitting op, so a padded CUDA graph would compute wrong numbers",
        hint="capture only the sizes you serve (cudagraph_capture_sizes, no padding then), or cudagraph_mode NONE",
    )
