"""What the self-check runs at, within a memory budget.

Checking a range at its largest size would hold that size's activations several times
over: at 8192 tokens one logits tensor of a 150k-vocabulary model is 5 GB. So each range
is checked at its smallest size and one mid size whose tensors fit `AOTCACHE_CHECK_BYTES`
(an estimate from the traced shapes); a concrete compile size over the budget is
compiled but not run, and precompile says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import aotcache.envs as envs
from aotcache.configuration import Range
from aotcache.errors import ConfigError

DEFAULT_CHECK_BYTES = 1 << 30
HELD_COPIES = 4  # the largest tensor, held at once: the eager run's, ours, Inductor's, one spare


def check_budget() -> int:
    value = envs.text(envs.AOTCACHE_CHECK_BYTES)
    if not value:
        return DEFAULT_CHECK_BYTES
    try:
        budget = int(value)
    except ValueError:
        budget = 0
    if budget <= 0:
        raise ConfigError(envs.AOTCACHE_CHECK_BYTES, value, "a positive number of bytes")
    return budget


@dataclass
class CheckMemory:
    """An estimate of what the self-check holds at a size: the activations recorded for
    every unique piece, plus a few copies of the largest tensor any piece makes."""

    recorded: list[tuple[int, tuple[Any, ...]]]  # (bytes per element, shape) of each recorded input
    tensors: list[tuple[int, tuple[Any, ...]]]  # of every tensor a unique piece makes or takes
    symbol: Any

    @classmethod
    def of(cls, graphs: list[torch.fx.GraphModule], symbol: Any) -> CheckMemory:
        recorded, tensors = [], []
        for graph in graphs:
            for node in graph.graph.nodes:
                value = node.meta.get("example_value", node.meta.get("val"))
                for tensor in torch.utils._pytree.tree_leaves(value):
                    if not isinstance(tensor, torch.Tensor):
                        continue
                    shape = tuple(_expr(d) for d in tensor.shape)
                    item = (tensor.element_size(), shape)
                    if any(not isinstance(d, int) for d in shape):  # depends on the size: an activation
                        tensors.append(item)
                        if node.op == "placeholder":
                            recorded.append(item)
        return cls(recorded, tensors, symbol)

    def bytes_at(self, size: int) -> int:
        largest = max((self._bytes(item, size) for item in self.tensors), default=0)
        return sum(self._bytes(item, size) for item in self.recorded) + HELD_COPIES * largest

    def largest_size(self, budget: int, top: int) -> int:
        """The largest size in 1..top whose check fits the budget (1 if none does)."""
        low, high = 1, top
        while low < high:
            mid = (low + high + 1) // 2
            if self.bytes_at(mid) <= budget:
                low = mid
            else:
                high = mid - 1
        return low

    def _bytes(self, item: tuple[int, tuple[Any, ...]], size: int) -> int:
        element, shape = item
        count = 1
        for dim in shape:
            try:
                count *= dim_at(dim, self.symbol, size)
            except TypeError:  # another symbol (an unbacked size): count it as the size
                count *= size
        return element * count


def dim_at(dim: Any, symbol: Any, size: int) -> int:
    """A traced dimension (an int, a SymInt or its sympy expression) where the dynamic
    size is `size`; TypeError if it depends on another symbol."""
    if isinstance(dim, torch.SymInt):
        dim = dim.node.expr
    return dim if isinstance(dim, int) else int(dim.subs(symbol, size))


def _expr(dim: Any) -> Any:
    return dim.node.expr if isinstance(dim, torch.SymInt) else int(dim)


def range_check_sizes(unit: Range, singles: set[int], cap: int) -> list[int]:
    """Where a range's artifacts are checked: its smallest size and one mid size (at most
    `cap`), never a size that has a concrete compile of its own (the range's guards may
    exclude it). Empty if every size of the range has one."""
    low = next((s for s in range(unit.start, unit.end + 1) if s not in singles), None)
    if low is None:
        return []
    mid = max(low, min((unit.start + unit.end) // 2, cap))
    while mid > low and mid in singles:
        mid -= 1
    return sorted({low, mid})
