"""Inductor's graph partitions of a loaded artifact, as slots a CUDA-graph runner fills.

Under use_inductor_graph_partition the graph is not cut before Inductor: Inductor cuts it
itself, after every fusion, at the splitting ops, and runs each partition as
`partition(args)` (one list, which the partition clears). With piecewise CUDA graphs each
partition is captured as its own graph (vLLM's partition wrapper). The stored artifact
records how many partitions it has; a load hands each one to a PartitionSlot, which
calls the partition as it is until a graph runner installs a graph wrapper in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aotcache.errors import CorruptEntry


@dataclass
class PartitionSlot:
    """One partition of one artifact: `index` of `count` (the last, count - 1, returns the
    artifact's outputs)."""

    partition: Callable[[list[Any]], Any]
    index: int
    count: int
    label: str
    wrapper: Callable[..., Any] | None = None  # a CUDA-graph wrapper of `call`, installed by a runner

    @property
    def first(self) -> bool:
        return self.index == 0

    @property
    def last(self) -> bool:
        return self.index == self.count - 1

    def __call__(self, args: list[Any]) -> Any:
        if self.wrapper is None:
            return self.partition(args)
        values = list(args)
        args.clear()  # Inductor's convention: the callee frees its arguments
        return self.wrapper(*values)

    def call(self, *values: Any) -> Any:
        """The partition with its arguments spread (what a graph wrapper captures)."""
        return self.partition(list(values))


class PartitionCollector:
    """`wrap` for torch_internals.partition_wrapper: a slot per partition Inductor hands
    over, checked against the number the artifact records."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.slots: list[PartitionSlot] = []

    def __call__(self, partition: Callable[[list[Any]], Any], metadata: Any) -> PartitionSlot:
        slot = PartitionSlot(
            partition, int(metadata.partition_index), int(metadata.num_partitions), f"{self.label} partition"
        )
        slot.label = f"{self.label} partition {slot.index}"
        self.slots.append(slot)
        return slot

    def check(self, recorded: int) -> list[PartitionSlot]:
        found = sorted(slot.index for slot in self.slots)
        if found != list(range(recorded)) or any(slot.count != recorded for slot in self.slots):
            raise CorruptEntry(
                f"artifact {self.label} records {recorded} graph partition(s); loading it gave {len(found)} ({found})",
                hint="precompile the entry again with this torch",
            )
        return sorted(self.slots, key=lambda slot: slot.index)
