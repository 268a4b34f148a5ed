"""Capturing and replaying a graph: real CUDA graphs, or EmulatedGraphs, which gives the
same semantics on the CPU so that the runner's logic is tested without a GPU.

A backend is chosen by the model's device (a CPU model on a GPU host gets none: its
"graph" would be empty and replay the capture-time output forever), captures and
replays inside that device (a model on cuda:1 is captured on cuda:1, on a stream of
cuda:1), and captures in one session at start-up: one synchronize, one garbage
collection and one empty_cache for all the captures. Every runner of a device shares
one graph pool, one capture stream and one lock (`shared_graphs`), as vLLM's runners
share its global pool: parts of a model and several models in one process reuse each
other's graph memory, and never replay at the same time.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from aotcache.formats import torch_internals

log = logging.getLogger("aotcache.serve.cudagraph")


class GraphBackend(Protocol):
    """Captures and replays graphs. The runner's logic is the same for every backend, so
    the CPU emulation proves it without a GPU. `capture` returns graph None for an empty
    graph whose outputs are views of its inputs (a piece that launches no kernel): the
    runnable then runs at every call, which is what its replay would do."""

    name: str
    device: torch.device

    def new_pool(self) -> Any: ...
    def new_stream(self) -> Any: ...
    def device_scope(self) -> contextlib.AbstractContextManager[Any]: ...
    def session(self) -> contextlib.AbstractContextManager[Any]: ...
    def capture(self, run: Callable[..., Any], args: tuple[Any, ...], pool: Any, stream: Any) -> tuple[Any, Any]: ...
    def replay(self, graph: Any) -> None: ...
    def forget(self, tensor: torch.Tensor) -> Any: ...
    def recall(self, forgotten: Any) -> torch.Tensor: ...


@dataclass
class SharedGraphs:
    """What every runner of one backend on one device shares in this process: the graph
    pool, the stream graphs are captured on (torch's default capture stream belongs to
    the device that captured first), and the lock that makes a call (static buffers
    filled, graphs replayed, outputs read) one caller's at a time."""

    pool: Any
    stream: Any
    lock: threading.RLock = field(default_factory=threading.RLock)


_shared: dict[tuple[str, torch.device], SharedGraphs] = {}
_shared_lock = threading.Lock()


def shared_graphs(backend: GraphBackend) -> SharedGraphs:
    """The process's pool, stream and lock for `backend`'s kind and device."""
    key = (backend.name, backend.device)
    with _shared_lock:
        found = _shared.get(key)
        if found is None:
            found = _shared[key] = SharedGraphs(backend.new_pool(), backend.new_stream())
        return found


@contextlib.contextmanager
def startup_cleanup() -> Iterator[None]:
    """One garbage collection for all the captures of a session, and what exists now left
    out of collections while they run (gc.freeze). An application that froze objects
    itself keeps them frozen: gc.unfreeze would thaw its objects too, so then nothing is
    frozen here. Nothing process-wide (gc.collect, empty_cache) is patched."""
    gc.collect()
    if gc.get_freeze_count() > 0:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def views_of_inputs(args: tuple[Any, ...], output: Any) -> bool:
    """Whether every tensor `output` holds lives in the memory of a tensor of `args`: what
    a piece that launches no kernel returns (reshapes, slices of its inputs)."""
    inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
    leaves = [x for x in torch.utils._pytree.tree_leaves(output) if isinstance(x, torch.Tensor)]
    return all(x.untyped_storage().data_ptr() in inputs for x in leaves)


def _empty_graph(args: tuple[Any, ...], output: Any) -> None:
    """An empty graph whose outputs are not views of its inputs: the work ran elsewhere."""
    if not views_of_inputs(args, output):
        raise RuntimeError("the captured CUDA graph is empty: the work ran on another device or stream")


class CUDAGraphs:
    """torch.cuda.CUDAGraph: capture records the kernels on the tensors it was given;
    replay re-runs them on exactly that memory. Captured with capture_begin/capture_end
    on the device's own stream (torch.cuda.graph would take the process's default
    capture stream, made on whichever device captured first, and would empty the cache
    on every capture)."""

    name = "cuda"

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())

    def new_pool(self) -> Any:
        with self.device_scope():
            return torch.cuda.graph_pool_handle()

    def new_stream(self) -> Any:
        return torch.cuda.Stream(device=self.device)

    def device_scope(self) -> contextlib.AbstractContextManager[Any]:
        return torch.cuda.device(self.device)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        with self.device_scope():
            torch.cuda.synchronize(self.device)
            with startup_cleanup():
                torch.cuda.empty_cache()
                yield

    def capture(self, run: Callable[..., Any], args: tuple[Any, ...], pool: Any, stream: Any) -> tuple[Any, Any]:
        graph = torch.cuda.CUDAGraph()
        with self.device_scope(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.synchronize(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                # thread_local: another thread using CUDA meanwhile does not break the capture
                graph.capture_begin(pool=pool, capture_error_mode="thread_local")
                try:
                    output = run(*args)
                finally:
                    graph.capture_end()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            if any("empty" in str(w.message).lower() for w in caught):
                _empty_graph(args, output)
                return None, output
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


@dataclass(frozen=True)
class EmulatedStream:
    device: torch.device


_emulated_device: contextvars.ContextVar[torch.device | None] = contextvars.ContextVar(
    "aotcache_emulated_device", default=None
)
_emulated_capturing: contextvars.ContextVar[bool] = contextvars.ContextVar("aotcache_emulated_capturing", default=False)


def _emulated_synchronize(device: Any = None) -> None:
    """torch.cuda.synchronize inside an emulated session: a no-op, and an error while a
    graph is being captured (CUDA refuses it: an Inductor kernel that autotunes on its
    first launch synchronizes, so it must be warmed up before its capture)."""
    if _emulated_capturing.get():
        raise RuntimeError("torch.cuda.synchronize() while a CUDA graph is being captured (operation not permitted)")


class EmulatedGraphs:
    """CUDA-graph semantics on the CPU: capture records the work on the captured tensors
    and Python values; replay runs it again on exactly those (whatever the tensors hold
    now, and the Python values frozen at capture) and writes the result into the
    captured outputs. A runner that lets an input move, reads a stale one, changes a
    Python value, synchronizes during a capture, captures without a stream of its device,
    or replays outside the graph's device computes wrong numbers or fails here just as it
    would on a GPU. `device` is the device it stands for ("cuda:1"); the tensors are on
    the CPU."""

    name = "emulated"
    # torch.cuda.graph's default capture stream: made once, on the device that captured first
    default_stream_device: ClassVar[torch.device | None] = None

    def __init__(self, device: str | torch.device = "cuda:0") -> None:
        self.device = torch.device(device)
        self.sessions = 0  # start-up capture sessions (each one clean-up)
        self.empty_graphs = 0

    def new_pool(self) -> EmulatedPool:
        return EmulatedPool()

    def new_stream(self) -> EmulatedStream:
        return EmulatedStream(self.device)

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
        synchronize = torch.cuda.synchronize
        torch.cuda.synchronize = _emulated_synchronize  # type: ignore[assignment]
        try:
            with self.device_scope(), startup_cleanup():
                yield
        finally:
            torch.cuda.synchronize = synchronize  # type: ignore[assignment]

    def capture(self, run: Callable[..., Any], args: tuple[Any, ...], pool: Any, stream: Any) -> tuple[Any, Any]:
        if _emulated_device.get() != self.device:
            raise RuntimeError(f"capture outside {self.device}: the graph would record work on another device")
        if stream is None:
            if EmulatedGraphs.default_stream_device is None:
                EmulatedGraphs.default_stream_device = self.device
            stream = EmulatedStream(EmulatedGraphs.default_stream_device)
        if stream.device != self.device:
            raise RuntimeError(f"a graph of {self.device} captured on a stream of {stream.device}")
        counter = torch_internals.KernelCount()
        token = _emulated_capturing.set(True)
        try:
            with counter:
                output = run(*args)
        finally:
            _emulated_capturing.reset(token)
        if counter.kernels == 0 and views_of_inputs(args, output):
            self.empty_graphs += 1
            return None, output
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
