"""Pick the compile unit for a runtime size: the exact compile size first, else the
range that holds it. Loaded dynamic artifacts do not check their own shape guards, so
this is where every size outside the entry's ranges is refused."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from aotcache.configuration import Range
from aotcache.errors import DispatchError


class SizeDispatcher:
    def __init__(self, units: Sequence[Range], refused: dict[int, str] | None = None) -> None:
        """`refused`: sizes the entry refuses, and why (the trace does not hold there)."""
        self.refused = dict(refused or {})
        self.exact: dict[int, int] = {}
        ranges: list[tuple[int, int, int]] = []
        for index, unit in enumerate(units):
            if unit.is_single_size():
                self.exact.setdefault(unit.start, index)
            else:
                ranges.append((unit.start, unit.end, index))
        ranges.sort()
        self._starts = [r[0] for r in ranges]
        self._ranges = ranges
        self.low = min([u.start for u in units], default=1)
        self.high = max([u.end for u in units], default=0)

    def __call__(self, size: int) -> int:
        if size in self.refused:
            raise DispatchError(
                f"size {size}: {self.refused[size]}", hint="make forward independent of the size and precompile again"
            )
        index = self.exact.get(size)
        if index is not None:
            return index
        position = bisect.bisect_right(self._starts, size) - 1
        if position >= 0:
            start, end, index = self._ranges[position]
            if start <= size <= end:
                return index
        raise DispatchError(
            f"size {size} is outside every compiled range of this entry ([{self.low}, {self.high}])",
            hint="raise max_num_batched_tokens (or add compile sizes) and precompile again",
        )
