"""CUDA graphs: which graph serves a batch (the dispatcher), and capturing/replaying one
(the wrapper), after vLLM's CudagraphDispatcher and CUDAGraphWrapper.

The dispatcher and the padding are plain Python, tested exhaustively on CPU. The wrapper
is small: on a machine without CUDA it passes calls through and says so once.

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


# -- capture and replay -----------------------------------------------------------------


_warned_no_cuda = False


def _warn_no_cuda_once() -> None:
    global _warned_no_cuda
    if not _warned_no_cuda:
        _warned_no_cuda = True
        log.warning("CUDA is not available: CUDA graphs are disabled and calls run without them")


@dataclass
class _Graph:
    warmups: int = 0
    graph: Any = None
    inputs: list[Any] = field(default_factory=list)
    output: Any = None


class CUDAGraphWrapper:
    """Captures `runnable` once per batch key in its runtime mode, then replays.

    Calls whose dispatched mode is not this wrapper's pass straight through. Inputs are
    copied into static buffers when copy_inputs is set; otherwise their addresses must
    not change between calls (checked on replay)."""

    def __init__(
        self,
        runnable: Callable[..., Any],
        mode: CUDAGraphMode,
        *,
        num_warmups: int = 0,
        copy_inputs: bool = False,
        pool: Any = None,
        name: str = "",
    ) -> None:
        if mode not in (CUDAGraphMode.PIECEWISE, CUDAGraphMode.FULL):
            raise ValueError(f"a graph wrapper runs in PIECEWISE or FULL mode, not {mode.name}")
        self.runnable = runnable
        self.mode = mode
        self.num_warmups = num_warmups
        self.copy_inputs = copy_inputs
        self.pool = pool
        self.name = name
        self.graphs: dict[BatchDescriptor, _Graph] = {}
        self.captures = 0
        self.replays = 0
        self.enabled = torch.cuda.is_available()
        if not self.enabled:
            _warn_no_cuda_once()

    def __call__(self, *args: Any) -> Any:
        context = _context.get() or _NO_GRAPH
        if not self.enabled or context.mode != self.mode or context.descriptor is None:
            return self.runnable(*args)
        entry = self.graphs.setdefault(context.descriptor, _Graph())
        if entry.graph is None:
            if entry.warmups < self.num_warmups:
                entry.warmups += 1
                return self.runnable(*args)
            return self._capture(entry, args)
        return self._replay(entry, args)

    def _capture(self, entry: _Graph, args: tuple[Any, ...]) -> Any:
        inputs = [a.clone() if self.copy_inputs and isinstance(a, torch.Tensor) else a for a in args]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            output = self.runnable(*inputs)
        entry.graph, entry.inputs, entry.output = graph, inputs, output
        self.captures += 1
        graph.replay()  # the capture recorded the work; run it once for this call's result
        return output

    def _replay(self, entry: _Graph, args: tuple[Any, ...]) -> Any:
        for static, live in zip(entry.inputs, args, strict=True):
            if not isinstance(live, torch.Tensor):
                continue
            if self.copy_inputs:
                static.copy_(live)
            elif static.data_ptr() != live.data_ptr():
                raise RuntimeError(
                    f"CUDA graph {self.name or ''} replayed with an input at another address; "
                    "set cudagraph_copy_inputs=True"
                )
        entry.graph.replay()
        self.replays += 1
        return entry.output


# -- wiring graphs into a loaded entry ----------------------------------------------------


def dummy_arguments(spec: Any, size: int, device: torch.device) -> dict[str, Any]:
    """Zero inputs of a given size for capture (zeros are valid token ids too)."""
    arguments: dict[str, Any] = {}
    for arg in spec.args:
        if arg.kind == "tensor":
            shape = [size if d is None else d for d in arg.shape]
            arguments[arg.name] = torch.zeros(shape, dtype=getattr(torch, arg.dtype), device=device)
        else:
            arguments[arg.name] = arg.value
    return arguments


class PiecewiseModel(Protocol):
    """What the graph runner needs of a loaded entry (LoadedModel implements it)."""

    model: torch.nn.Module
    spec: Any  # the entry's InputSpec: which argument dims are dynamic
    manifest: Any  # the entry's Manifest: its config says which graphs to capture
    unit_pieces: list[Any]  # per compile unit, the runnable of every piece by name
    splitting_op_pieces: frozenset[str]  # pieces that stay outside piecewise graphs
    output_dims: list[list[int]]  # per graph output, the dims of the dynamic size

    def unit_index(self, size: int) -> int: ...
    def stitch(self, pieces: Any, *values: Any) -> tuple[Any, ...]: ...
    def graph_values(self, arguments: dict[str, Any], size: int) -> list[Any]: ...
    def run_unit(self, arguments: dict[str, Any], size: int, unit: int) -> tuple[Any, ...]: ...
    def finish(self, outputs: Any) -> Any: ...


class GraphRunner:
    """Runs a LoadedModel's calls through CUDA graphs: dispatch, pad, replay, unpad."""

    def __init__(self, loaded: PiecewiseModel, config: CompilationConfig) -> None:
        self.loaded = loaded
        self.config = config
        self.dispatcher = CudagraphDispatcher(config)
        self.pool = torch.cuda.graph_pool_handle()
        mode = config.cudagraph_mode
        options = {
            "num_warmups": config.cudagraph_num_of_warmups,
            "copy_inputs": config.cudagraph_copy_inputs,
            "pool": self.pool,
        }
        self.piecewise: list[Any] = []
        self.full: list[CUDAGraphWrapper | None] = []
        opaque = loaded.splitting_op_pieces
        for index, variant in enumerate(loaded.unit_pieces):
            if mode.has_piecewise_cudagraphs():
                members = {
                    name: fn if name in opaque else CUDAGraphWrapper(fn, CUDAGraphMode.PIECEWISE, name=name, **options)
                    for name, fn in vars(variant).items()
                }
                self.piecewise.append(type(variant)(**members))
            if mode.has_full_cudagraphs():
                run = _bind_stitch(loaded.stitch, variant)
                self.full.append(CUDAGraphWrapper(run, CUDAGraphMode.FULL, name=f"unit {index}", **options))

    @classmethod
    def create(cls, loaded: PiecewiseModel) -> GraphRunner | None:
        config = CompilationConfig(**{k: v for k, v in loaded.manifest.config.items()})
        if config.cudagraph_mode == CUDAGraphMode.NONE:
            return None
        if not torch.cuda.is_available():
            _warn_no_cuda_once()
            return None
        return cls(loaded, config)

    def run(self, arguments: dict[str, Any], size: int, *, uniform_decode: bool) -> Any:
        loaded = self.loaded
        mode, key = self.dispatcher.dispatch(BatchDescriptor(size, uniform_decode))
        if mode == CUDAGraphMode.NONE or key is None:
            return loaded.finish(loaded.run_unit(arguments, size, loaded.unit_index(size)))
        padded = key.num_tokens
        spec = loaded.spec
        padded_arguments = dict(arguments)
        for arg in spec.args:
            if arg.kind == "tensor":
                for dim, expected in enumerate(arg.shape):
                    if expected is None:
                        padded_arguments[arg.name] = pad_tensor(padded_arguments[arg.name], dim, padded)
        unit = loaded.unit_index(padded)
        values = loaded.graph_values(padded_arguments, padded)
        with torch.no_grad(), graph_context(mode, key):
            if mode == CUDAGraphMode.FULL:
                outputs = self.full[unit](*values)  # type: ignore[misc]
            else:
                outputs = loaded.stitch(self.piecewise[unit], *values)
        dims = loaded.output_dims
        trimmed = []
        for index, output in enumerate(outputs):
            for dim in dims[index] if index < len(dims) else []:
                output = unpad_tensor(output, dim, size)
            trimmed.append(output)
        return loaded.finish(tuple(trimmed))

    def capture_all(self, progress: Callable[[int, int, str], None] | None = None) -> int:
        keys = self.dispatcher.all_keys()
        device = _model_device(self.loaded.model)
        for done, (mode, key) in enumerate(keys, start=1):
            arguments = dummy_arguments(self.loaded.spec, key.num_tokens, device)
            for _ in range(self.config.cudagraph_num_of_warmups + 1):
                self.run(arguments, key.num_tokens, uniform_decode=key.uniform_decode)
            if progress is not None:
                progress(done, len(keys), f"{mode.name} {key.num_tokens}{' decode' if key.uniform_decode else ''}")
        return len(keys)


def _bind_stitch(stitch: Callable[..., Any], variant: Any) -> Callable[..., Any]:
    def run(*values: Any) -> Any:
        return stitch(variant, *values)

    return run


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")
