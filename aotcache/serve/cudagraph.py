"""CUDA graphs: which graph serves a batch (the dispatcher), and capturing/replaying one
(the wrapper), after vLLM's CudagraphDispatcher and CUDAGraphWrapper.

The dispatcher and the padding are plain Python, tested exhaustively on CPU. Capture and
replay go through a graph backend: real CUDA graphs, or EmulatedGraphs, which gives the
same semantics on the CPU so that the runner's logic is tested without a GPU. Without
CUDA (and without an emulation in effect) the wrapper passes calls through and says so
once.

Right by construction, as vLLM's model runner: the runner owns static input buffers and
copies each call in; graphs are captured on those buffers, never on throwaway tensors;
any piece input that is not where its graph reads it is copied there on replay.

It lives on the serving side (not in aotcache.backend) because graphs are captured
after an entry is loaded, by the loader, which must not import the compile side.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch

from aotcache.config import CompilationConfig
from aotcache.errors import DispatchError
from aotcache.key.identity import model_device
from aotcache.modes import CUDAGraphMode

log = logging.getLogger("aotcache.serve.cudagraph")


class BatchDescriptor(NamedTuple):
    """What a batch looks like to the graph cache: its (padded) token count, and whether
    it is a uniform decode batch (every request has uniform_decode_query_len tokens)."""

    num_tokens: int
    uniform_decode: bool = False

    @property
    def non_uniform(self) -> BatchDescriptor:
        return BatchDescriptor(self.num_tokens, uniform_decode=False)


class CudagraphDispatcher:
    """Holds the keys of the graphs that may exist, one set per runtime mode; the keys are
    the only source of truth for what can be dispatched."""

    def __init__(self, config: CompilationConfig) -> None:
        self.config = config
        self.capture_sizes = list(config.cudagraph_capture_sizes or [])
        self.padded = config.compute_bs_to_padded_graph_size() if self.capture_sizes else []
        self.keys: dict[CUDAGraphMode, set[BatchDescriptor]] = {
            CUDAGraphMode.PIECEWISE: set(),
            CUDAGraphMode.FULL: set(),
        }
        self.initialize_keys(config.cudagraph_mode, config.uniform_decode_query_len)

    def add_key(self, mode: CUDAGraphMode, descriptor: BatchDescriptor) -> None:
        if mode not in self.keys:
            raise ValueError(f"graphs are captured in PIECEWISE or FULL mode, not {mode.name}")
        self.keys[mode].add(descriptor)

    def initialize_keys(self, mode: CUDAGraphMode, uniform_decode_query_len: int) -> None:
        for key_set in self.keys.values():
            key_set.clear()
        mixed = mode.mixed_mode()
        if mixed != CUDAGraphMode.NONE:
            for size in self.capture_sizes:
                self.add_key(mixed, BatchDescriptor(size, uniform_decode=False))
        if mode.separate_routine() and mode.decode_mode() == CUDAGraphMode.FULL:
            # a uniform decode batch holds whole requests of uniform_decode_query_len tokens
            for size in self.capture_sizes:
                if size >= uniform_decode_query_len and size % uniform_decode_query_len == 0:
                    self.add_key(CUDAGraphMode.FULL, BatchDescriptor(size, uniform_decode=True))

    def padded_size(self, num_tokens: int) -> int | None:
        if num_tokens < 1 or num_tokens >= len(self.padded):
            return None
        return self.padded[num_tokens]

    def dispatch(self, descriptor: BatchDescriptor) -> tuple[CUDAGraphMode, BatchDescriptor | None]:
        """Pad num_tokens to the graph size, then prefer FULL (the exact key, then relaxed
        to non-uniform), then PIECEWISE, else NONE (sizes above the largest capture size,
        and empty batches, run without a graph)."""
        padded = self.padded_size(descriptor.num_tokens)
        if padded is None:
            return CUDAGraphMode.NONE, None
        key = BatchDescriptor(padded, descriptor.uniform_decode)
        full = self.keys[CUDAGraphMode.FULL]
        if key in full:
            return CUDAGraphMode.FULL, key
        if key.non_uniform in full:
            return CUDAGraphMode.FULL, key.non_uniform
        if key.non_uniform in self.keys[CUDAGraphMode.PIECEWISE]:
            return CUDAGraphMode.PIECEWISE, key.non_uniform
        return CUDAGraphMode.NONE, None

    def all_keys(self) -> list[tuple[CUDAGraphMode, BatchDescriptor]]:
        """Every (mode, key) to capture, largest first (as vLLM captures)."""
        items = [(mode, key) for mode, keys in self.keys.items() for key in keys]
        return sorted(items, key=lambda item: (-item[1].num_tokens, item[0].value, item[1].uniform_decode))


# -- the dispatched batch, as the wrappers see it (vLLM's forward context) ---------------


@dataclass(frozen=True)
class GraphContext:
    mode: CUDAGraphMode
    descriptor: BatchDescriptor | None


_NO_GRAPH = GraphContext(CUDAGraphMode.NONE, None)
_context: contextvars.ContextVar[GraphContext | None] = contextvars.ContextVar("aotcache_cudagraph", default=None)


@contextlib.contextmanager
def graph_context(mode: CUDAGraphMode, descriptor: BatchDescriptor | None) -> Iterator[None]:
    token = _context.set(GraphContext(mode, descriptor))
    try:
        yield
    finally:
        _context.reset(token)


# -- padding ----------------------------------------------------------------------------


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


# -- the graph backend: real CUDA graphs, or a faithful CPU emulation ---------------------


class GraphBackend(Protocol):
    """Captures and replays graphs. The runner's logic is the same for every backend, so
    the CPU emulation proves it without a GPU."""

    name: str

    def pool(self) -> Any: ...
    def capture(self, run: Callable[..., Any], args: tuple[Any, ...], pool: Any) -> tuple[Any, Any]: ...
    def replay(self, graph: Any) -> None: ...


class CUDAGraphs:
    """torch.cuda.CUDAGraph: capture records the kernels on the tensors it was given;
    replay re-runs them on exactly that memory."""

    name = "cuda"

    def pool(self) -> Any:
        return torch.cuda.graph_pool_handle()

    def capture(self, run: Callable[..., Any], args: tuple[Any, ...], pool: Any) -> tuple[Any, Any]:
        # One run on a side stream first, as torch's docs ask: lazy initialisation (cuBLAS
        # handles, autotuning) must not happen inside a capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            run(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            output = run(*args)
        graph.replay()  # the capture only recorded the work; run it for this call's result
        return graph, output

    def replay(self, graph: Any) -> None:
        graph.replay()


@dataclass
class _Recorded:
    run: Callable[..., Any]
    args: tuple[Any, ...]
    output: Any


class EmulatedGraphs:
    """CUDA-graph semantics on the CPU: capture records the work on the captured tensors;
    replay runs it again on exactly those tensors (whatever they hold now) and writes the
    result into the captured outputs. A runner that lets an input move, or reads a stale
    one, computes wrong numbers here just as it would on a GPU."""

    name = "emulated"

    def pool(self) -> Any:
        return None

    def capture(self, run: Callable[..., Any], args: tuple[Any, ...], pool: Any) -> tuple[Any, Any]:
        output = run(*args)
        return _Recorded(run, args, output), output

    def replay(self, graph: Any) -> None:
        fresh = graph.run(*graph.args)
        for static, value in zip(
            torch.utils._pytree.tree_leaves(graph.output), torch.utils._pytree.tree_leaves(fresh), strict=True
        ):
            static.copy_(value)


_override: contextvars.ContextVar[GraphBackend | None] = contextvars.ContextVar("aotcache_graphs", default=None)


@contextlib.contextmanager
def use_graph_backend(backend: GraphBackend) -> Iterator[GraphBackend]:
    """Use `backend` (e.g. EmulatedGraphs()) for graphs created inside the block."""
    token = _override.set(backend)
    try:
        yield backend
    finally:
        _override.reset(token)


_warned_no_cuda = False


def _warn_no_cuda_once() -> None:
    global _warned_no_cuda
    if not _warned_no_cuda:
        _warned_no_cuda = True
        log.warning("CUDA is not available: CUDA graphs are disabled and calls run without them")


def graph_backend() -> GraphBackend | None:
    """The backend in effect: an override, else CUDA where available, else None."""
    override = _override.get()
    if override is not None:
        return override
    return CUDAGraphs() if torch.cuda.is_available() else None


# -- capture and replay -----------------------------------------------------------------


@dataclass
class _Graph:
    warmups: int = 0
    graph: Any = None
    inputs: list[Any] = field(default_factory=list)
    output: Any = None


class CUDAGraphWrapper:
    """Captures `runnable` once per batch key in its runtime mode, then replays.

    Calls whose dispatched mode is not this wrapper's pass straight through. On replay,
    every tensor input that is not where the graph reads it (a splitting op's output
    allocated outside any graph, a new call argument) is copied there first, so a graph
    never reads a stale input; inputs already in place (static buffers, parameters,
    outputs of earlier graphs) cost nothing. `copy_inputs` clones every input at capture
    and copies every input on replay (private buffers, at a cost)."""

    def __init__(
        self,
        runnable: Callable[..., Any],
        mode: CUDAGraphMode,
        *,
        num_warmups: int = 0,
        copy_inputs: bool = False,
        pool: Any = None,
        name: str = "",
        backend: GraphBackend | None = None,
    ) -> None:
        if mode not in (CUDAGraphMode.PIECEWISE, CUDAGraphMode.FULL):
            raise ValueError(f"a graph wrapper runs in PIECEWISE or FULL mode, not {mode.name}")
        self.runnable = runnable
        self.mode = mode
        self.num_warmups = num_warmups
        self.copy_inputs = copy_inputs
        self.name = name
        self.graphs: dict[BatchDescriptor, _Graph] = {}
        self.captures = 0
        self.replays = 0
        self.input_copies = 0
        self.backend = backend if backend is not None else graph_backend()
        self.pool = pool if pool is not None or self.backend is None else self.backend.pool()
        if self.backend is None:
            _warn_no_cuda_once()

    def __call__(self, *args: Any) -> Any:
        context = _context.get() or _NO_GRAPH
        if self.backend is None or context.mode != self.mode or context.descriptor is None:
            return self.runnable(*args)
        entry = self.graphs.setdefault(context.descriptor, _Graph())
        if entry.graph is None:
            if entry.warmups < self.num_warmups:
                entry.warmups += 1
                return self.runnable(*args)
            return self._capture(entry, args)
        return self._replay(entry, args)

    def _capture(self, entry: _Graph, args: tuple[Any, ...]) -> Any:
        assert self.backend is not None
        inputs = tuple(a.clone() if self.copy_inputs and isinstance(a, torch.Tensor) else a for a in args)
        entry.graph, entry.output = self.backend.capture(self.runnable, inputs, self.pool)
        entry.inputs = list(inputs)  # held, so the memory the graph reads stays its own
        self.captures += 1
        return entry.output

    def _replay(self, entry: _Graph, args: tuple[Any, ...]) -> Any:
        assert self.backend is not None
        for static, live in zip(entry.inputs, args, strict=True):
            if isinstance(live, torch.Tensor) and (self.copy_inputs or live.data_ptr() != static.data_ptr()):
                static.copy_(live)
                self.input_copies += 1
        self.backend.replay(entry.graph)
        self.replays += 1
        return entry.output


# -- wiring graphs into a loaded entry ----------------------------------------------------


class PiecewiseModel(Protocol):
    """What the graph runner needs of a loaded entry (LoadedModel implements it)."""

    model: torch.nn.Module
    spec: Any  # the entry's InputSpec: which argument dims are dynamic
    binder: Any  # binds arguments and the model's tensors to graph inputs
    unit_pieces: list[Any]  # per compile unit, the runnable of every piece by name
    splitting_op_pieces: frozenset[str]  # pieces that stay outside piecewise graphs
    output_dims: list[list[int]]  # per graph output, the dims of the dynamic size

    def unit_index(self, size: int) -> int: ...
    def stitch(self, pieces: Any, *values: Any) -> tuple[Any, ...]: ...
    def graph_values(self, arguments: dict[str, Any], size: int) -> list[Any]: ...
    def run_unit(self, arguments: dict[str, Any], size: int, unit: int) -> tuple[Any, ...]: ...
    def finish(self, outputs: Any) -> Any: ...


class StaticInputs:
    """One persistent buffer per tensor argument, sized for the largest capture size
    (vLLM's persistent input buffers): each call copies its arguments in and pads with
    zeros, so every graph reads its inputs from the same memory on every call."""

    def __init__(self, spec: Any, max_size: int, device: torch.device) -> None:
        self.buffers: dict[str, tuple[torch.Tensor, list[int]]] = {}
        for arg in spec.args:
            if arg.kind != "tensor":
                continue
            shape = [max_size if d is None else d for d in arg.shape]
            dynamic = [i for i, d in enumerate(arg.shape) if d is None]
            self.buffers[arg.name] = (torch.zeros(shape, dtype=getattr(torch, arg.dtype), device=device), dynamic)

    def fill(self, arguments: dict[str, Any], size: int, padded: int) -> dict[str, Any]:
        """The call's arguments as views of the static buffers at the padded size."""
        filled = dict(arguments)
        for name, (buffer, dynamic) in self.buffers.items():
            view = buffer
            for dim in dynamic:
                view = view.narrow(dim, 0, padded)
            target = view
            for dim in dynamic:
                target = target.narrow(dim, 0, size)
            target.copy_(arguments[name])
            for dim in dynamic:
                if padded > size:
                    view.narrow(dim, size, padded - size).zero_()
            filled[name] = view
        return filled


class GraphRunner:
    """Runs a LoadedModel's calls through graphs: dispatch, copy into static buffers,
    pad, replay, and return outputs trimmed to the real size. Outputs alias the graphs'
    static memory until the next call unless `copy_outputs` (then they are copies)."""

    def __init__(
        self, loaded: PiecewiseModel, config: CompilationConfig, backend: GraphBackend, *, copy_outputs: bool = False
    ) -> None:
        self.loaded = loaded
        self.config = config
        self.backend = backend
        self.copy_outputs = copy_outputs
        self.dispatcher = CudagraphDispatcher(config)
        device = model_device(loaded.model)
        self.static = StaticInputs(loaded.spec, config.max_cudagraph_capture_size or 1, device)
        self.bound = loaded.binder.bound_addresses()
        options = {
            "num_warmups": config.cudagraph_num_of_warmups,
            "copy_inputs": config.cudagraph_copy_inputs,
            "pool": backend.pool(),
            "backend": backend,
        }
        self.piecewise: list[Any] = []
        self.full: list[CUDAGraphWrapper | None] = []
        mode = config.cudagraph_mode
        for index, variant in enumerate(loaded.unit_pieces):
            if mode.has_piecewise_cudagraphs():
                members = {
                    name: fn
                    if name in loaded.splitting_op_pieces
                    else CUDAGraphWrapper(fn, CUDAGraphMode.PIECEWISE, name=name, **options)
                    for name, fn in vars(variant).items()
                }
                self.piecewise.append(type(variant)(**members))
            if mode.has_full_cudagraphs():
                run = _bind_stitch(loaded.stitch, variant)
                self.full.append(CUDAGraphWrapper(run, CUDAGraphMode.FULL, name=f"unit {index}", **options))

    @classmethod
    def create(cls, loaded: PiecewiseModel, config: CompilationConfig, **options: Any) -> GraphRunner | None:
        if config.cudagraph_mode == CUDAGraphMode.NONE:
            return None
        backend = graph_backend()
        if backend is None:
            _warn_no_cuda_once()
            return None
        return cls(loaded, config, backend, **options)

    def wrappers(self) -> list[CUDAGraphWrapper]:
        pieces = [w for variant in self.piecewise for w in vars(variant).values() if isinstance(w, CUDAGraphWrapper)]
        return [w for w in self.full if w is not None] + pieces

    def run(self, arguments: dict[str, Any], size: int, *, uniform_decode: bool) -> Any:
        loaded = self.loaded
        mode, key = self.dispatcher.dispatch(BatchDescriptor(size, uniform_decode))
        if mode == CUDAGraphMode.NONE or key is None:
            return loaded.finish(loaded.run_unit(arguments, size, loaded.unit_index(size)))
        if loaded.binder.bound_addresses() != self.bound:
            raise DispatchError(
                "the model's parameters or buffers were replaced after CUDA graphs were captured",
                hint="update weights in place (load_state_dict), or load the entry again",
            )
        padded = key.num_tokens
        unit = loaded.unit_index(padded)
        values = loaded.graph_values(self.static.fill(arguments, size, padded), padded)
        with torch.no_grad(), graph_context(mode, key):
            if mode == CUDAGraphMode.FULL:
                outputs = self.full[unit](*values)  # type: ignore[misc]
            else:
                outputs = loaded.stitch(self.piecewise[unit], *values)
        return loaded.finish(tuple(self._trim(outputs, size)))

    def _trim(self, outputs: Any, size: int) -> list[Any]:
        dims = self.loaded.output_dims
        trimmed = []
        for index, output in enumerate(outputs):
            for dim in dims[index] if index < len(dims) else []:
                output = unpad_tensor(output, dim, size)
            trimmed.append(output.clone() if self.copy_outputs else output)
        return trimmed

    def capture_all(self, progress: Callable[[int, int, str], None] | None = None) -> int:
        keys = self.dispatcher.all_keys()
        device = model_device(self.loaded.model)
        for done, (mode, key) in enumerate(keys, start=1):
            arguments = dummy_arguments(self.loaded.spec, key.num_tokens, device)
            for _ in range(self.config.cudagraph_num_of_warmups + 1):
                self.run(arguments, key.num_tokens, uniform_decode=key.uniform_decode)
            if progress is not None:
                progress(done, len(keys), f"{mode.name} {key.num_tokens}{' decode' if key.uniform_decode else ''}")
        return len(keys)


def dummy_arguments(spec: Any, size: int, device: torch.device) -> dict[str, Any]:
    """Zero inputs of a given size for capture (zeros are valid token ids too); they are
    copied into the static buffers, which is where the graphs are captured."""
    arguments: dict[str, Any] = {}
    for arg in spec.args:
        if arg.kind == "tensor":
            shape = [size if d is None else d for d in arg.shape]
            arguments[arg.name] = torch.zeros(shape, dtype=getattr(torch, arg.dtype), device=device)
        else:
            arguments[arg.name] = arg.value
    return arguments


def _bind_stitch(stitch: Callable[..., Any], variant: Any) -> Callable[..., Any]:
    def run(*values: Any) -> Any:
        return stitch(variant, *values)

    return run
