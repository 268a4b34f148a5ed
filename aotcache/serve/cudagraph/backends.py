"""Capturing and replaying a graph: real CUDA graphs, or EmulatedGraphs, which gives the
same semantics on the CPU so that the runner's logic is tested without a GPU.

A backend is chosen by the model's device (a CPU model on a GPU host gets none: its
"graph" would be empty and replay the capture-time output forever), captures and
replays inside that device (a model on cuda:1 is captured on cuda:1), and captures in
one session at start-up: one synchronize, one garbage collection and one empty_cache
for all the captures, not one per capture as `torch.cuda.graph` does by itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from aotcache.formats import torch_internals

log = logging.getLogger("aotcache.serve.cudagraph")


class GraphBackend(Protocol):
    """Captures and replays graphs. The runner's logic is the same for every backend, so
    the CPU emulation proves it without a GPU."""

    name: str
    device: torch.device

    def pool(self) -> Any: ...
    def device_scope(self) -> contextlib.AbstractContextManager[Any]: ...
    def session(self) -> contextlib.AbstractContextManager[Any]: ...
    def capture(self, run: Callable[..., Any], args: tuple[Any, ...], pool: Any) -> tuple[Any, Any]: ...
    def replay(self, graph: Any) -> None: ...
    def forget(self, tensor: torch.Tensor) -> Any: ...
    def recall(self, forgotten: Any) -> torch.Tensor: ...


@contextlib.contextmanager
def _quiet_cleanup() -> Iterator[None]:
    """`torch.cuda.graph` collects garbage and empties the cache on every capture; inside
    a session that was done once, at its start (vLLM does the same)."""
    collect, empty = gc.collect, torch.cuda.empty_cache
    gc.collect = lambda *a, **k: 0  # type: ignore[assignment]
    torch.cuda.empty_cache = lambda: None  # type: ignore[assignment]
    try:
        yield
    finally:
        gc.collect, torch.cuda.empty_cache = collect, empty  # type: ignore[assignment]


class CUDAGraphs:
    """torch.cuda.CUDAGraph: capture records the kernels on the tensors it was given;
    replay re-runs them on exactly that memory."""

    name = "cuda"

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())

    def pool(self) -> Any:
        return torch.cuda.graph_pool_handle()

    def device_scope(self) -> contextlib.AbstractContextManager[Any]:
        return torch.cuda.device(self.device)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        with self.device_scope():
            torch.cuda.synchronize()
            gc.collect()
            torch.cuda.empty_cache()
            gc.freeze()  # what exists now is never collected during the captures
            try:
                with _quiet_cleanup():
                    yield
            finally:
                gc.unfreeze()

    def capture(self, run: Callable[..., Any], args: tuple[Any, ...], pool: Any) -> tuple[Any, Any]:
        graph = torch.cuda.CUDAGraph()
        with self.device_scope(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # thread_local: another thread using CUDA meanwhile does not break the capture
            with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                output = run(*args)
            if any("empty" in str(w.message).lower() for w in caught):
                raise RuntimeError("the captured CUDA graph is empty: the work ran on another device")
            graph.replay()  # the capture only recorded the work; run it for this call's result
        return graph, output

    def replay(self, graph: Any) -> None:
        with self.device_scope():
            graph.replay()

    def forget(self, tensor: torch.Tensor) -> Any:
        """A record of a graph-owned tensor that does not keep its memory: the graph's
        private pool does, and other graphs of the pool may reuse it (vLLM's weak refs)."""
        return torch_internals.non_owning_spec(tensor)

    def recall(self, forgotten: Any) -> torch.Tensor:
        return torch_internals.non_owning_tensor(forgotten)


# -- the emulation -----------------------------------------------------------------------


@dataclass
class _Recorded:
    run: Callable[..., Any]
    args: tuple[Any, ...]
    output: Any
    device: torch.device


@dataclass
class EmulatedPool:
    """A graph pool on the CPU: owns the memory graphs write (as CUDA's private pool
    does), and counts it, so that memory per pool can be asserted."""

    owned: dict[int, torch.Tensor] = field(default_factory=dict)

    def own(self, tensor: torch.Tensor) -> None:
        self.owned.setdefault(tensor.untyped_storage().data_ptr(), tensor)

    @property
    def bytes(self) -> int:
        return sum(t.untyped_storage().nbytes() for t in self.owned.values())


_emulated_device: contextvars.ContextVar[torch.device | None] = contextvars.ContextVar(
    "aotcache_emulated_device", default=None
)


class EmulatedGraphs:
    """CUDA-graph semantics on the CPU: capture records the work on the captured tensors
    and Python values; replay runs it again on exactly those (whatever the tensors hold
    now, and the Python values frozen at capture) and writes the result into the
    captured outputs. A runner that lets an input move, reads a stale one, changes a
    Python value, captures an empty graph or replays outside the graph's device computes
    wrong numbers or fails here just as it would on a GPU. `device` is the device it
    stands for ("cuda:1"); the tensors are on the CPU."""

    name = "emulated"

    def __init__(self, device: str | torch.device = "cuda:0") -> None:
        self.device = torch.device(device)
        self.sessions = 0  # start-up capture sessions (each one clean-up)
        self.pools: list[EmulatedPool] = []

    def pool(self) -> EmulatedPool:
        pool = EmulatedPool()
        self.pools.append(pool)
        return pool

    @contextlib.contextmanager
    def device_scope(self) -> Iterator[None]:
        token = _emulated_device.set(self.device)
        try:
            yield
        finally:
            _emulated_device.reset(token)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        self.sessions += 1
        with self.device_scope():
            yield

    def capture(self, run: Callable[..., Any], args: tuple[Any, ...], pool: Any) -> tuple[Any, Any]:
        if _emulated_device.get() != self.device:
            raise RuntimeError(f"capture outside {self.device}: the graph would record work on another device")
        if not any(isinstance(a, torch.Tensor) for a in args):
            raise RuntimeError("the captured graph is empty: it reads no tensor")
        output = run(*args)
        for leaf in torch.utils._pytree.tree_leaves(output):
            if isinstance(leaf, torch.Tensor) and pool is not None:
                pool.own(leaf)
        return _Recorded(run, args, output, self.device), output

    def replay(self, graph: Any) -> None:
        if _emulated_device.get() != graph.device:
            raise RuntimeError(f"a graph captured on {graph.device} replayed on {_emulated_device.get()}")
        fresh = graph.run(*graph.args)
        for static, value in zip(
            torch.utils._pytree.tree_leaves(graph.output), torch.utils._pytree.tree_leaves(fresh), strict=True
        ):
            static.copy_(value)

    def forget(self, tensor: torch.Tensor) -> Any:
        return torch_internals.non_owning_spec(tensor)  # the pool owns the memory (see own)

    def recall(self, forgotten: Any) -> torch.Tensor:
        return torch_internals.non_owning_tensor(forgotten)


# -- which backend ---------------------------------------------------------------------------

_override: contextvars.ContextVar[GraphBackend | None] = contextvars.ContextVar("aotcache_graphs", default=None)


@contextlib.contextmanager
def use_graph_backend(backend: GraphBackend) -> Iterator[GraphBackend]:
    """Use `backend` (e.g. EmulatedGraphs()) for graphs created inside the block."""
    token = _override.set(backend)
    try:
        yield backend
    finally:
        _override.reset(token)


_warned: set[str] = set()


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        log.warning("CUDA graphs are disabled: %s; calls run without them", reason)


def graph_backend(device: torch.device) -> GraphBackend | None:
    """The backend for a model on `device`: an override, else CUDA graphs for a CUDA
    model on a host with CUDA, else None (said once)."""
    override = _override.get()
    if override is not None:
        return override
    if device.type != "cuda":
        _warn_once(f"the model is on {device.type}, and CUDA graphs capture only CUDA work")
        return None
    if not torch.cuda.is_available():
        _warn_once("CUDA is not available")
        return None
    return CUDAGraphs(device)
