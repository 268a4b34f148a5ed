"""GraphRunner: a loaded entry's calls through graphs, right by construction as vLLM's
model runner is: static input buffers each call is copied into, every graph captured at
start-up (largest size first, into the device's one pool, in one session: one clean-up,
gc frozen, at least one warm-up per key) and none afterwards, a padding check before
each padded size is captured, replay, and outputs trimmed to the real size. A call holds
the device's graph lock from filling the static buffers to reading the outputs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from aotcache.configuration import CompilationConfig
from aotcache.errors import DispatchError
from aotcache.key.identity import model_device
from aotcache.modes import CUDAGraphMode

from .backends import GraphBackend, graph_backend, shared_graphs
from .dispatcher import BatchDescriptor, CudagraphDispatcher
from .padding import PaddingError, first_difference, recording, refuse, unpad_tensor
from .wrapper import CUDAGraphWrapper, GraphMemory, graph_context, storage_of


class PiecewiseModel(Protocol):
    """What the graph runner needs of a loaded entry (LoadedModel implements it)."""

    model: torch.nn.Module
    spec: Any  # the entry's InputSpec: which argument dims are dynamic
    binder: Any  # binds arguments and the model's tensors to graph inputs
    unit_pieces: list[Any]  # per compile unit, the runnable of every piece by name
    piece_order: list[str]  # every piece's name, in the order forward runs them
    splitting_op_pieces: frozenset[str]  # pieces that stay outside piecewise graphs
    output_dims: list[list[int]]  # per graph output, the dims of the dynamic size

    def unit_index(self, size: int) -> int: ...
    def stitch(self, pieces: Any, *values: Any) -> tuple[Any, ...]: ...
    def graph_values(self, arguments: dict[str, Any], size: int) -> list[Any]: ...
    def run_unit(self, arguments: dict[str, Any], size: int, unit: int) -> tuple[Any, ...]: ...
    def finish(self, outputs: Any) -> Any: ...


log = logging.getLogger("aotcache.serve.cudagraph")


@contextlib.contextmanager
def _serving() -> Iterator[None]:
    """Graphs are captured and replayed outside inference mode (a static buffer made in
    it could never be copied into outside it) and without autograd."""
    with torch.inference_mode(False), torch.no_grad():
        yield


class StaticInputs:
    """One persistent buffer per tensor argument, sized for the largest capture size
    (vLLM's persistent input buffers): each call copies its arguments in and pads with
    zeros, so every graph reads its inputs from the same memory on every call."""

    def __init__(self, spec: Any, max_size: int, device: torch.device) -> None:
        self.buffers: dict[str, tuple[torch.Tensor, list[int]]] = {}
        with _serving():
            for arg in spec.args:
                if arg.kind != "tensor":
                    continue
                shape = [max_size if d is None else d for d in arg.shape]
                dynamic = [i for i, d in enumerate(arg.shape) if d is None]
                buffer = torch.zeros(shape, dtype=getattr(torch, arg.dtype), device=device)
                self.buffers[arg.name] = (buffer, dynamic)
        self._views: dict[int, dict[str, torch.Tensor]] = {}

    def storages(self) -> set[int]:
        return {storage_of(buffer) for buffer, _ in self.buffers.values()}

    def fill(self, arguments: dict[str, Any], size: int, padded: int) -> dict[str, Any]:
        """The call's arguments as views of the static buffers at the padded size (the
        same view objects on every call of that size: graphs check them by identity)."""
        views = self._views.get(padded)
        if views is None:
            views = {name: _narrow(buffer, dynamic, padded) for name, (buffer, dynamic) in self.buffers.items()}
            self._views[padded] = views
        filled = dict(arguments)
        for name, (_, dynamic) in self.buffers.items():
            view = views[name]
            _narrow(view, dynamic, size).copy_(arguments[name])
            if padded > size:
                for dim in dynamic:
                    view.narrow(dim, size, padded - size).zero_()
            filled[name] = view
        return filled


def _narrow(tensor: torch.Tensor, dims: list[int], size: int) -> torch.Tensor:
    for dim in dims:
        tensor = tensor.narrow(dim, 0, size)
    return tensor


class GraphRunner:
    """Runs a LoadedModel's calls through graphs: dispatch, copy into static buffers,
    pad, replay, and return outputs trimmed to the real size. Outputs alias graph memory
    until the next call unless `copy_outputs` (then they are copies)."""

    def __init__(
        self, loaded: PiecewiseModel, config: CompilationConfig, backend: GraphBackend, *, copy_outputs: bool = False
    ) -> None:
        self.loaded = loaded
        self.config = config
        self.backend = backend
        self.copy_outputs = copy_outputs
        self.dispatcher = CudagraphDispatcher(config)
        self.device = model_device(loaded.model)
        self.static = StaticInputs(loaded.spec, config.max_cudagraph_capture_size or 1, self.device)
        self.bound = loaded.binder.bound_addresses()
        weights = {storage_of(t) for t in loaded.binder.bound_tensors()}
        self.memory = GraphMemory(weights=weights, kept=self.static.storages())
        self.compiled_pieces = [n for n in loaded.piece_order if n not in loaded.splitting_op_pieces]
        self.checked_padding: set[int] = set()
        self.refused_padding: dict[int, str] = {}  # padded size -> the piece it changes
        self.shared = shared_graphs(backend)
        # vLLM warms every key up at least once: a kernel that autotunes on its first
        # launch synchronizes, which a capture may not
        self.num_warmups = max(1, config.cudagraph_num_of_warmups)
        options = {
            "backend": backend,
            "pool": self.shared.pool,
            "stream": self.shared.stream,
            "memory": self.memory,
            "num_warmups": self.num_warmups,
            "copy_inputs": config.cudagraph_copy_inputs,
        }
        self.piecewise: list[Any] = []
        self.full: list[CUDAGraphWrapper | None] = []
        self.partitions: list[CUDAGraphWrapper] = []
        mode = config.cudagraph_mode
        partitioned = bool(loaded.manifest.config.get("use_inductor_graph_partition"))
        if partitioned and mode.has_piecewise_cudagraphs():
            self.partitions = install_partition_graphs(loaded.partition_slots, options)
        for index, variant in enumerate(loaded.unit_pieces):
            if mode.has_piecewise_cudagraphs() and partitioned:  # the graphs are the partitions'
                self.piecewise.append(variant)
            elif mode.has_piecewise_cudagraphs():
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
        """A runner for the model's device (None with cudagraph_mode NONE, or where no
        backend applies: a CPU model, no CUDA; said once)."""
        if config.cudagraph_mode == CUDAGraphMode.NONE:
            return None
        backend = graph_backend(model_device(loaded.model))
        if backend is None:
            return None
        return cls(loaded, config, backend, **options)

    def wrappers(self) -> list[CUDAGraphWrapper]:
        pieces = [w for variant in self.piecewise for w in vars(variant).values() if isinstance(w, CUDAGraphWrapper)]
        return [w for w in self.full if w is not None] + pieces + self.partitions

    def held_bytes(self) -> int:
        """Bytes the graphs keep alive besides their pool (the copy targets of inputs no
        one else keeps); outputs live in the pool."""
        return sum(w.held_bytes() for w in self.wrappers())

    def run(self, arguments: dict[str, Any], size: int, *, uniform_decode: bool, capturing: bool = False) -> Any:
        loaded = self.loaded
        self._check_devices(arguments)
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
        with self.shared.lock, _serving(), self.backend.device_scope():
            values = loaded.graph_values(self.static.fill(arguments, size, padded), padded)
            with graph_context(mode, key, capturing=capturing):
                if mode == CUDAGraphMode.FULL:
                    outputs = self.full[unit](*values)  # type: ignore[misc]
                else:
                    outputs = loaded.stitch(self.piecewise[unit], *values)
            trimmed = tuple(self._trim(outputs, size))
        return loaded.finish(trimmed)

    def _check_devices(self, arguments: dict[str, Any]) -> None:
        """Every tensor argument on the model's device: one on another device would be
        copied into a static buffer at graph sizes and reach the kernels above them."""
        for name, (buffer, _) in self.static.buffers.items():
            value = arguments[name]
            if value.device != buffer.device:
                raise DispatchError(
                    f"argument {name!r} is on {value.device}, the model is on {buffer.device}",
                    hint=f"move it first: {name}.to({str(buffer.device)!r})",
                )

    def _trim(self, outputs: Any, size: int) -> list[Any]:
        dims = self.loaded.output_dims
        trimmed = []
        for index, output in enumerate(outputs):
            for dim in dims[index] if index < len(dims) else []:
                output = unpad_tensor(output, dim, size)
            trimmed.append(output.clone() if self.copy_outputs else output)
        return trimmed

    def check_padding(self, padded: int) -> None:
        """Before a graph is captured at `padded`: the smallest batch that pads to it gives
        the same real rows, padded or not (run eagerly), in every piece (splitting ops
        included) and in the model's outputs."""
        sizes = sorted(self.dispatcher.capture_sizes)
        below = [s for s in sizes if s < padded]
        size = (below[-1] + 1) if below else 1
        if size >= padded or padded in self.checked_padding:
            return
        self.checked_padding.add(padded)
        loaded = self.loaded
        arguments = dummy_arguments(loaded.spec, size, self.device, random=True)
        seen: dict[str, dict[str, Any]] = {"unpadded": {}, "padded": {}}
        names = loaded.piece_order
        with _serving(), self.backend.device_scope():
            pieces = recording(loaded.unit_pieces[loaded.unit_index(size)], names, seen["unpadded"])
            seen["unpadded"]["output"] = loaded.stitch(pieces, *loaded.graph_values(arguments, size))
            filled = self.static.fill(arguments, size, padded)
            pieces = recording(loaded.unit_pieces[loaded.unit_index(padded)], names, seen["padded"])
            seen["padded"]["output"] = loaded.stitch(pieces, *loaded.graph_values(filled, padded))
        piece = first_difference(seen["unpadded"], seen["padded"], [*names, "output"], size, padded)
        if piece is not None:
            raise refuse(piece, size, padded)

    def capture_all(self, progress: Callable[[int, int, str], None] | None = None, *, strict: bool = True) -> int:
        """Capture every key now, largest first, in one session; after this no graph is
        ever captured (a key without one runs without a graph). A padded size whose
        padding changes the real rows raises PaddingError when `strict`; otherwise its
        keys are dropped (those batches run without a graph, right) and a warning names
        them. Returns how many keys were captured."""
        keys = self.dispatcher.all_keys()
        captured = 0
        with self.shared.lock, self.backend.session():
            for done, (mode, key) in enumerate(keys, start=1):
                if key.num_tokens in self.refused_padding:
                    continue
                try:
                    self.check_padding(key.num_tokens)
                except PaddingError as refused:
                    if strict:
                        raise
                    self.refused_padding[key.num_tokens] = refused.message
                    continue
                arguments = dummy_arguments(self.loaded.spec, key.num_tokens, self.device)
                for _ in range(self.num_warmups + 1):
                    self.run(arguments, key.num_tokens, uniform_decode=key.uniform_decode, capturing=True)
                captured += 1
                if progress is not None:
                    label = f"{mode.name} {key.num_tokens}{' decode' if key.uniform_decode else ''}"
                    progress(done, len(keys), label)
        if self.refused_padding:
            for key_set in self.dispatcher.keys.values():
                key_set.difference_update({k for k in key_set if k.num_tokens in self.refused_padding})
            sizes = sorted(self.refused_padding)
            log.warning(
                "CUDA graphs not captured for the padded sizes %s: %s; batches that pad to them run without a graph",
                sizes,
                self.refused_padding[sizes[0]],
            )
        return captured


def install_partition_graphs(slots: list[Any], options: dict[str, Any]) -> list[CUDAGraphWrapper]:
    """A PIECEWISE graph wrapper in every Inductor partition slot, with vLLM's options per
    partition: only the first logs its captures, only the last hands its capture-time
    output back over pool memory; all share the runner's pool (one per device). Garbage
    is collected once per capture session, not per partition."""
    wrappers = []
    for slot in slots:
        wrapper = CUDAGraphWrapper(
            slot.call,
            CUDAGraphMode.PIECEWISE,
            name=slot.label,
            weak_ref_output=slot.last,
            log_captures=slot.first,
            **options,
        )
        slot.wrapper = wrapper
        wrappers.append(wrapper)
    return wrappers


def dummy_arguments(spec: Any, size: int, device: torch.device, *, random: bool = False) -> dict[str, Any]:
    """Inputs of a given size for capture (zeros are valid token ids too), or random ones
    for the padding check; they are copied into the static buffers."""
    arguments: dict[str, Any] = {}
    generator = torch.Generator().manual_seed(size)
    for arg in spec.args:
        if arg.kind == "tensor":
            shape = [size if d is None else d for d in arg.shape]
            dtype = getattr(torch, arg.dtype)
            if random and dtype.is_floating_point:
                value = torch.randn(shape, generator=generator, dtype=dtype)
            elif random:
                value = torch.randint(0, 2, shape, generator=generator, dtype=dtype)
            else:
                value = torch.zeros(shape, dtype=dtype)
            arguments[arg.name] = value.to(device)
        else:
            arguments[arg.name] = arg.value
    return arguments


def _bind_stitch(stitch: Callable[..., Any], variant: Any) -> Callable[..., Any]:
    def run(*values: Any) -> Any:
        return stitch(variant, *values)

    return run
