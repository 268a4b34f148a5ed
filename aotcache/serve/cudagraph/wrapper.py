"""CUDAGraphWrapper: one graph per batch key for one runnable (a piece, or the whole
model), after vLLM's CUDAGraphWrapper.

Memory, as vLLM keeps it: every graph is captured into the device's one pool, largest
size first; no graph output is held (`backend.forget`): the pool keeps that memory,
smaller sizes captured later reuse it, and replay hands out tensors over it
(`backend.recall`, built once per graph), so graph memory is about the largest size's,
not the sum over sizes, in PIECEWISE and FULL alike. An input a graph reads that no one
else keeps (a splitting op's output, allocated outside any graph) is copied into a
buffer of the wrapper's own, one per input slot, made at the largest size and viewed at
the smaller ones. Model weights are never cloned: with `copy_inputs`, only the inputs
that are not weights (`is_weight`) get private copies.

Per replay the host work does not grow with the weight count: inputs that stay put
(weights, static buffers, other graphs' outputs) are compared by identity, all at once;
only the inputs that move are copied, and only Python values are compared by value.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from aotcache.modes import CUDAGraphMode

from .backends import GraphBackend
from .dispatcher import BatchDescriptor

log = logging.getLogger("aotcache.serve.cudagraph")


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
    captured: bool = False
    graph: Any = None  # None once captured: an empty graph (views only), the runnable runs
    statics: list[Any] = field(default_factory=list)  # per argument: where the graph reads it (or forgotten)
    forgotten: list[bool] = field(default_factory=list)
    signatures: list[Any] = field(default_factory=list)  # per tensor argument at capture
    moving: list[int] = field(default_factory=list)  # copied in on every replay
    values: list[tuple[int, Any]] = field(default_factory=list)  # Python values, replayed as captured
    fixed: list[int] = field(default_factory=list)  # read in place: weights, static buffers, graph outputs
    seen: tuple[Any, ...] = ()  # the objects last passed for `fixed`, checked by identity
    output: Any = None  # (treespec, forgotten leaves): the pool keeps the memory
    recalled: Any = None  # the output over graph memory, built at the first replay


def _pick(indices: list[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """The arguments at `indices`, as one tuple (itemgetter, without its one-item quirk)."""
    if not indices:
        return lambda args: ()
    if len(indices) == 1:
        index = indices[0]
        return lambda args: (args[index],)
    return operator.itemgetter(*indices)  # type: ignore[return-value]


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
        stream: Any = None,
        memory: GraphMemory | None = None,
        copy_inputs: bool = False,
        num_warmups: int = 0,
        name: str = "",
        weak_ref_output: bool = False,
        log_captures: bool = True,
    ) -> None:
        if mode not in (CUDAGraphMode.PIECEWISE, CUDAGraphMode.FULL):
            raise ValueError(f"a graph wrapper runs in PIECEWISE or FULL mode, not {mode.name}")
        self.runnable = runnable
        self.mode = mode
        self.backend = backend
        self.pool = pool if pool is not None else backend.new_pool()
        self.stream = stream if stream is not None else backend.new_stream()
        self.memory = memory or GraphMemory()
        self.copy_inputs = copy_inputs
        self.num_warmups = num_warmups
        self.name = name
        # vLLM's per-partition options: the last partition's capture-time output is handed
        # back over pool memory too (nothing outside the pool holds it), and only the
        # first partition logs its captures
        self.weak_ref_output = weak_ref_output
        self.log_captures = log_captures
        self.graphs: dict[BatchDescriptor, _Graph] = {}
        self.captures = self.replays = self.input_copies = self.cloned_inputs = self.uncaptured = 0
        self.empty = 0  # keys whose graph was empty (views only): the runnable runs
        self.fixed_checks = 0  # replays that compared in-place inputs one by one

    def __call__(self, *args: Any) -> Any:
        context = _context.get() or _NO_GRAPH
        if context.mode != self.mode or context.descriptor is None:
            return self.runnable(*args)
        entry = self.graphs.get(context.descriptor)
        if entry is None or not entry.captured:
            if not context.capturing:  # capture happens at start-up only
                self.uncaptured += 1
                return self.runnable(*args)
            entry = self.graphs.setdefault(context.descriptor, _Graph())
            if entry.warmups < self.num_warmups:
                entry.warmups += 1
                return self.runnable(*args)
            if self.log_captures:
                log.debug("aotcache: capturing %s for %s", self.name or self.mode.name, context.descriptor)
            return self._capture(entry, args)
        if entry.graph is None:
            return self.runnable(*args)
        return self._replay(entry, args)

    def _needs_copy(self, tensor: torch.Tensor) -> bool:
        kept = self.memory.is_kept(tensor) or self.memory.is_graph_memory(tensor)
        return not kept or (self.copy_inputs and not self.memory.is_weight(tensor))

    def _static_input(self, index: int, tensor: torch.Tensor) -> torch.Tensor:
        """Where the graph reads input `index` from: the tensor itself when someone keeps
        it (a weight, a static buffer, another graph's output); otherwise a buffer of
        this wrapper's (shared by every size), holding a copy."""
        if not self._needs_copy(tensor):
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
        moving = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and self._needs_copy(a)]
        inputs = tuple(self._static_input(i, a) if isinstance(a, torch.Tensor) else a for i, a in enumerate(args))
        entry.graph, output = self.backend.capture(self.runnable, inputs, self.pool, self.stream)
        entry.captured = True
        self.captures += 1
        if entry.graph is None:
            self.empty += 1
            return output
        entry.forgotten = [isinstance(a, torch.Tensor) and self.memory.is_graph_memory(a) for a in inputs]
        entry.statics = [
            self.backend.forget(a) if forgotten else a for a, forgotten in zip(inputs, entry.forgotten, strict=True)
        ]
        entry.signatures = [_signature(a) if isinstance(a, torch.Tensor) else None for a in inputs]
        entry.moving = moving
        entry.values = [(i, a) for i, a in enumerate(args) if not isinstance(a, torch.Tensor)]
        entry.fixed = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and i not in moving]
        leaves, spec = torch.utils._pytree.tree_flatten(output)
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                self.memory.graph_storages.add(storage_of(leaf))
        entry.output = (spec, [self.backend.forget(x) if isinstance(x, torch.Tensor) else x for x in leaves])
        return self._output(entry) if self.weak_ref_output else output

    def _output(self, entry: _Graph) -> Any:
        if entry.recalled is None:
            spec, leaves = entry.output
            entry.recalled = torch.utils._pytree.tree_unflatten(
                [self.backend.recall(x) if isinstance(x, tuple) else x for x in leaves], spec
            )
        return entry.recalled

    def _copy_in(self, entry: _Graph, index: int, live: torch.Tensor) -> None:
        static = entry.statics[index]
        static = self.backend.recall(static) if entry.forgotten[index] else static
        same_memory = live.untyped_storage().data_ptr() == static.untyped_storage().data_ptr()
        static.copy_(live.clone() if same_memory else live)  # another layout of the same memory
        self.input_copies += 1

    def _replay(self, entry: _Graph, args: tuple[Any, ...]) -> Any:
        for index in entry.moving:
            self._copy_in(entry, index, args[index])
        for index, recorded in entry.values:
            if args[index] != recorded:
                raise RuntimeError(
                    f"graph {self.name}: argument {index} is {args[index]!r} at replay, {recorded!r} at capture; a "
                    "graph replays the Python values it was captured with"
                )
        live = _pick(entry.fixed)(args)
        if not all(map(operator.is_, live, entry.seen)) or len(live) != len(entry.seen):
            self._check_fixed(entry, live)
            entry.seen = live
        self.backend.replay(entry.graph)
        self.replays += 1
        return self._output(entry)

    def _check_fixed(self, entry: _Graph, live: tuple[Any, ...]) -> None:
        """Inputs read in place that arrive as other objects than last time: the same
        memory and layout is what the graph reads; anything else is copied in."""
        self.fixed_checks += 1
        seen = entry.seen if len(entry.seen) == len(live) else (None,) * len(live)
        for index, now, before in zip(entry.fixed, live, seen, strict=True):
            if now is not before and _signature(now) != entry.signatures[index]:
                self._copy_in(entry, index, now)

    def held_bytes(self) -> int:
        """Bytes this wrapper keeps alive besides the pool: its copy targets, and any
        output it holds (none: outputs are forgotten, the pool keeps them)."""
        held = {
            storage_of(buffer): buffer.untyped_storage().nbytes()
            for (owner, _), buffer in self.memory.copy_targets.items()
            if owner == id(self)
        }
        for entry in self.graphs.values():
            leaves = entry.output[1] if entry.output is not None else []
            for leaf in leaves:
                if isinstance(leaf, torch.Tensor):
                    held[storage_of(leaf)] = leaf.untyped_storage().nbytes()
        return sum(held.values())
