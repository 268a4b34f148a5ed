"""CUDAGraphWrapper: one graph per batch key for one runnable (a piece, or the whole
model), after vLLM's CUDAGraphWrapper.

Memory, as vLLM keeps it: every graph of a runner is captured into one pool, largest
size first; a graph's outputs are not held (`backend.forget`): the pool keeps that
memory, smaller sizes captured later reuse it, and replay hands out tensors over it
(`backend.recall`), so graph memory is about the largest size's, not the sum over sizes.
Only the outputs the caller receives (`keep_output`) are held. An input a graph reads
that no one else keeps (a splitting op's output, allocated outside any graph) is copied
into a buffer of the wrapper's own, one per input slot, made at the largest size and
viewed at the smaller ones. Model weights are never cloned: with `copy_inputs`, only the
inputs that are not weights (`is_weight`) get private copies.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from aotcache.modes import CUDAGraphMode

from .backends import GraphBackend
from .dispatcher import BatchDescriptor


class GraphContext(NamedTuple):
    """The dispatched batch, as the wrappers see it (vLLM's forward context)."""

    mode: CUDAGraphMode
    descriptor: BatchDescriptor | None
    capturing: bool = False  # inside the start-up capture session


_NO_GRAPH = GraphContext(CUDAGraphMode.NONE, None)
_context: contextvars.ContextVar[GraphContext | None] = contextvars.ContextVar("aotcache_cudagraph", default=None)


@contextlib.contextmanager
def graph_context(
    mode: CUDAGraphMode, descriptor: BatchDescriptor | None, *, capturing: bool = False
) -> Iterator[None]:
    token = _context.set(GraphContext(mode, descriptor, capturing))
    try:
        yield
    finally:
        _context.reset(token)


def storage_of(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


@dataclass
class GraphMemory:
    """What the graphs of one runner share: the storages their outputs live in (pool
    memory, reused across sizes), the storages someone else keeps for the runner's life
    (the model's weights, the runner's static input buffers), and the copy targets of
    inputs that no one keeps."""

    weights: set[int] = field(default_factory=set)
    kept: set[int] = field(default_factory=set)  # weights and static buffers
    graph_storages: set[int] = field(default_factory=set)
    copy_targets: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def is_graph_memory(self, tensor: torch.Tensor) -> bool:
        return storage_of(tensor) in self.graph_storages

    def is_weight(self, tensor: torch.Tensor) -> bool:
        return storage_of(tensor) in self.weights

    def is_kept(self, tensor: torch.Tensor) -> bool:
        return storage_of(tensor) in self.kept or storage_of(tensor) in self.weights


def _signature(tensor: torch.Tensor) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    return tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride())


def _view_for(buffer: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """`buffer` narrowed to `shape` along the dims that differ, if that view is what a
    contiguous tensor of `shape` looks like (the token dim outermost); else None."""
    if buffer.ndim != len(shape):
        return None
    view = buffer
    for dim, (have, want) in enumerate(zip(buffer.shape, shape, strict=True)):
        if want > have:
            return None
        if want < have:
            view = view.narrow(dim, 0, want)
    return view if view.is_contiguous() else None


@dataclass
class _Graph:
    warmups: int = 0
    graph: Any = None
    inputs: list[Any] = field(default_factory=list)  # held strongly, or forgotten (graph memory)
    input_signatures: list[Any] = field(default_factory=list)
    forgotten_inputs: list[bool] = field(default_factory=list)
    output: Any = None  # held (keep_output), else forgotten (the pool keeps the memory)


class CUDAGraphWrapper:
    """Captures `runnable` once per batch key in its runtime mode (only inside the
    start-up capture session), then replays. Calls whose dispatched mode is not this
    wrapper's, or keys with no graph after start-up, run without a graph."""

    def __init__(
        self,
        runnable: Callable[..., Any],
        mode: CUDAGraphMode,
        *,
        backend: GraphBackend,
        pool: Any = None,
        memory: GraphMemory | None = None,
        keep_output: bool = True,
        copy_inputs: bool = False,
        num_warmups: int = 0,
        name: str = "",
    ) -> None:
        if mode not in (CUDAGraphMode.PIECEWISE, CUDAGraphMode.FULL):
            raise ValueError(f"a graph wrapper runs in PIECEWISE or FULL mode, not {mode.name}")
        self.runnable = runnable
        self.mode = mode
        self.backend = backend
        self.pool = pool if pool is not None else backend.pool()
        self.memory = memory or GraphMemory()
        self.keep_output = keep_output
        self.copy_inputs = copy_inputs
        self.num_warmups = num_warmups
        self.name = name
        self.graphs: dict[BatchDescriptor, _Graph] = {}
        self.captures = self.replays = self.input_copies = self.cloned_inputs = self.uncaptured = 0

    def __call__(self, *args: Any) -> Any:
        context = _context.get() or _NO_GRAPH
        if context.mode != self.mode or context.descriptor is None:
            return self.runnable(*args)
        entry = self.graphs.get(context.descriptor)
        if entry is None or entry.graph is None:
            if not context.capturing:  # capture happens at start-up only
                self.uncaptured += 1
                return self.runnable(*args)
            entry = self.graphs.setdefault(context.descriptor, _Graph())
            if entry.warmups < self.num_warmups:
                entry.warmups += 1
                return self.runnable(*args)
            return self._capture(entry, args)
        return self._replay(entry, args)

    def _static_input(self, index: int, tensor: torch.Tensor) -> torch.Tensor:
        """Where the graph reads input `index` from: the tensor itself when someone keeps
        it (a weight, a static buffer, another graph's output); otherwise a buffer of
        this wrapper's (shared by every size), holding a copy."""
        kept = self.memory.is_kept(tensor) or self.memory.is_graph_memory(tensor)
        needs_copy = not kept or (self.copy_inputs and not self.memory.is_weight(tensor))
        if not needs_copy:  # a weight, a static buffer, another graph's output
            return tensor
        key = (id(self), index)
        buffer = self.memory.copy_targets.get(key)
        view = _view_for(buffer, tensor.shape) if buffer is not None and buffer.dtype == tensor.dtype else None
        if view is None:
            view = self.memory.copy_targets[key] = tensor.clone()
            self.cloned_inputs += 1
        else:
            view.copy_(tensor)
        return view

    def _capture(self, entry: _Graph, args: tuple[Any, ...]) -> Any:
        inputs = tuple(self._static_input(i, a) if isinstance(a, torch.Tensor) else a for i, a in enumerate(args))
        entry.graph, output = self.backend.capture(self.runnable, inputs, self.pool)
        entry.forgotten_inputs = [isinstance(a, torch.Tensor) and self.memory.is_graph_memory(a) for a in inputs]
        entry.inputs = [
            self.backend.forget(a) if forgotten else a
            for a, forgotten in zip(inputs, entry.forgotten_inputs, strict=True)
        ]
        entry.input_signatures = [_signature(a) if isinstance(a, torch.Tensor) else a for a in inputs]
        leaves, spec = torch.utils._pytree.tree_flatten(output)
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                self.memory.graph_storages.add(storage_of(leaf))
        if self.keep_output:
            entry.output = output
        else:
            entry.output = (spec, [self.backend.forget(x) if isinstance(x, torch.Tensor) else x for x in leaves])
        self.captures += 1
        return output

    def _output(self, entry: _Graph) -> Any:
        if self.keep_output:
            return entry.output
        spec, leaves = entry.output
        return torch.utils._pytree.tree_unflatten(
            [self.backend.recall(x) if not isinstance(x, (int, float, bool)) and x is not None else x for x in leaves],
            spec,
        )

    def _replay(self, entry: _Graph, args: tuple[Any, ...]) -> Any:
        for index, (recorded, live) in enumerate(zip(entry.input_signatures, args, strict=True)):
            if isinstance(live, torch.Tensor):
                if (self.copy_inputs and not self.memory.is_weight(live)) or _signature(live) != recorded:
                    static = entry.inputs[index]
                    static = self.backend.recall(static) if entry.forgotten_inputs[index] else static
                    same_memory = live.untyped_storage().data_ptr() == static.untyped_storage().data_ptr()
                    static.copy_(live.clone() if same_memory else live)  # another layout of the same memory
                    self.input_copies += 1
            elif live != recorded:
                raise RuntimeError(
                    f"graph {self.name}: argument {index} is {live!r} at replay, {recorded!r} at capture; a graph "
                    "replays the Python values it was captured with"
                )
        self.backend.replay(entry.graph)
        self.replays += 1
        return self._output(entry)

    def held_bytes(self) -> int:
        """Bytes this wrapper keeps alive: outputs it holds, and its copy targets."""
        held: dict[int, int] = {}
        for entry in self.graphs.values():
            leaves = torch.utils._pytree.tree_leaves(entry.output) if self.keep_output else []
            for leaf in leaves:
                if isinstance(leaf, torch.Tensor):
                    held[storage_of(leaf)] = leaf.untyped_storage().nbytes()
        for (owner, _), buffer in self.memory.copy_targets.items():
            if owner == id(self):
                held[storage_of(buffer)] = buffer.untyped_storage().nbytes()
        return sum(held.values())
