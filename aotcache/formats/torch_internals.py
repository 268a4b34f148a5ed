"""Every torch-internal API the serving path relies on, in one place.

The serving path imports nothing from torch._inductor or torch._dynamo. What it needs
from torch's internals is listed here; tests/test_torch_internals.py checks each item
against the installed torch, so an upgrade that changes one fails loudly.
"""

from __future__ import annotations

from typing import Any

import torch

import aotcache.envs as envs

# Inductor's CPU kernels are Python extension modules whose init function is
# PyInit_kernel and whose callable is `kernel` (CppPythonBindingsCodeCache).
KERNEL_ENTRY_FUNCTION = "kernel"

# A kernel module reads, at import, the address of the C function it uses to get a
# tensor's data pointer from this environment variable (set by Inductor's loader).
TENSOR_DATA_PTR_ENV = envs.TORCHINDUCTOR_TENSOR_DATA_PTR


def tensor_data_ptr_address() -> int:
    return int(torch._C._dynamo.guards._torchinductor_pyobject_tensor_data_ptr)  # type: ignore[attr-defined]


def load_compiled_artifact(path: str) -> Any:
    """torch's CompiledArtifact saved in the binary format at `path` (imports Inductor:
    only for entries in the inductor format)."""
    from torch._inductor.standalone_compile import CompiledArtifact

    return CompiledArtifact.load(path=path, format="binary")


# -- graph memory that is not owned ---------------------------------------------------------
# CUDA graphs' outputs live in the graph pool, which keeps the memory while its graphs
# exist; holding them as ordinary tensors would keep every size's outputs allocated at
# once. A non-owning tensor over the same memory lets the pool reuse it across sizes
# (what torch's cudagraph trees and vLLM's weak_ref_tensors do).


def non_owning_spec(tensor: torch.Tensor) -> tuple[Any, ...]:
    """What is needed to see `tensor`'s memory again without owning it."""
    storage = tensor.untyped_storage()
    return (
        storage.data_ptr(),
        storage.nbytes(),
        tensor.device,
        tensor.dtype,
        tensor.storage_offset(),
        tuple(tensor.shape),
        tuple(tensor.stride()),
    )


def non_owning_tensor(spec: tuple[Any, ...]) -> torch.Tensor:
    """A tensor over memory someone else owns (torch._C._construct_storage_from_data_pointer)."""
    pointer, nbytes, device, dtype, offset, shape, stride = spec
    storage = torch._C._construct_storage_from_data_pointer(pointer, device, nbytes)
    return torch.empty(0, dtype=dtype, device=device).set_(storage, offset, shape, stride)


class KernelCount(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the ATen ops run inside it that are not views (what would launch a kernel):
    the CPU emulation of CUDA graphs calls a capture that ran none an empty graph."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not getattr(func, "is_view", False):
            self.kernels += 1
        return func(*args, **(kwargs or {}))


# -- private compile caches for inductor-format loads ---------------------------------------


def private_compile_caches(folder: str) -> Any:
    """A context in which Inductor and Triton read and write only `folder` (and Inductor's
    in-memory caches start empty): an inductor-format artifact unpacks its kernels there,
    so the verified bytes are what runs, never a kernel another process left in the
    shared /tmp/torchinductor_$USER (the Triton bundler skips a kernel whose directory
    exists). torch's own temporary_cache_dir, plus TRITON_CACHE_DIR."""
    import contextlib
    import os

    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    @contextlib.contextmanager
    def scope() -> Any:
        with envs.setting(envs.TRITON_CACHE_DIR, os.path.join(folder, "triton")):
            with temporary_cache_dir(os.path.join(folder, "inductor")):
                yield

    return scope()


# -- Inductor's graph partitions (use_inductor_graph_partition) -----------------------------------


def partition_wrapper(wrap: Any) -> Any:
    """A context in which loading an inductor-format artifact hands each of its CUDA-graph
    partitions to `wrap(partition, metadata)` (metadata.partition_index and
    .num_partitions: Inductor's CUDAGraphWrapperMetadata) and runs what `wrap` returns:
    Inductor's post_compile applies torch._inductor.utils.set_customized_partition_wrappers
    when graph_partition is on (vLLM's maybe_use_cudagraph_partition_wrapper). The hook is
    process-wide, so it is set only for the load and put back after."""
    import contextlib

    import torch._inductor.config as inductor_config
    import torch._inductor.utils as inductor_utils

    @contextlib.contextmanager
    def scope() -> Any:
        previous = inductor_utils._unstable_customized_partition_wrapper.wrapper
        inductor_utils.set_customized_partition_wrappers(wrap)
        try:
            with inductor_config.patch(graph_partition=True):
                yield
        finally:
            inductor_utils.set_customized_partition_wrappers(previous)

    return scope()


# -- process-wide state a trace bakes in (aotcache/store/traced_state.py) ---------------------------


def torch_function_enabled() -> bool:
    """Whether __torch_function__ dispatch is on (Dynamo's global state guard reads it)."""
    return bool(torch._C._is_torch_function_enabled())


def torch_function_modes() -> int:
    """How many TorchFunctionModes are active (Dynamo guards the mode stack)."""
    return len(torch.overrides._get_current_function_mode_stack())  # type: ignore[attr-defined]
