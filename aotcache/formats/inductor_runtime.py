"""What Inductor's generated CPU wrapper code imports, without importing Inductor.

An entry's artifacts are Inductor's own output code (the Python wrapper that allocates
buffers and calls the compiled C++ kernels), rewritten at precompile time to import
these names from here instead of from `torch._inductor`. Importing Inductor costs ~2.7 s
and its compiler probes need g++ on PATH; this module costs nothing and needs neither.

Precompile checks that every name a wrapper uses from here behaves like Inductor's own
(tests/test_torch_internals.py pins the same facts for the installed torch).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

# Names that the rewritten wrappers import from this module, by the Inductor module
# they replace. backend/native.py rewrites exactly these imports.
REPLACED_IMPORTS: dict[str, frozenset[str]] = {
    "torch._inductor.hooks": frozenset({"run_intermediate_hooks"}),
    "torch._inductor.utils": frozenset({"maybe_profile"}),
    "torch._inductor.codegen.memory_planning": frozenset({"_align"}),
    "torch._inductor.async_compile": frozenset({"AsyncCompile"}),
    "torch._inductor.select_algorithm": frozenset({"extern_kernels"}),
}

ALIGN_BYTES = 64  # torch._inductor.utils.ALIGN_BYTES


def run_intermediate_hooks(name: str, value: Any) -> None:
    """Inductor's debugging hooks; none are ever registered on the serving path."""


@contextlib.contextmanager
def maybe_profile(should_profile: bool, *args: Any, **kwargs: Any) -> Iterator[Any]:
    if should_profile:
        with torch.profiler.profile(*args, **kwargs) as profile:
            yield profile
    else:
        yield


def _align(nbytes: int) -> int:
    """Round up to a multiple of 64 bytes, as Inductor's memory planner does."""
    return (nbytes + ALIGN_BYTES - 1) & -ALIGN_BYTES


class _ExternKernels:
    """Inductor registers extern kernels under the `__name__` of the torch function they
    wrap (`extern_kernels.mm is torch.mm`); precompile checks every name used."""

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(torch, name)
        except AttributeError:
            raise AttributeError(f"extern kernel {name!r} is not available without Inductor") from None


extern_kernels = _ExternKernels()


# The loader sets the kernel resolver while it executes one wrapper module.
KernelResolver = Callable[[list[str], str], Callable[..., Any]]
_resolver: contextvars.ContextVar[KernelResolver | None] = contextvars.ContextVar("aotcache_kernels", default=None)


@contextlib.contextmanager
def kernel_resolver(resolver: KernelResolver) -> Iterator[None]:
    token = _resolver.set(resolver)
    try:
        yield
    finally:
        _resolver.reset(token)


def kernel_source_digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


class AsyncCompile:
    """Stands in for Inductor's AsyncCompile: instead of compiling a kernel's C++ source,
    hands back the kernel the entry compiled from that exact source."""

    def cpp_pybinding(self, argtypes: list[str], source: str) -> Callable[..., Any]:
        resolver = _resolver.get()
        if resolver is None:
            raise RuntimeError("aotcache wrapper executed outside the aotcache loader")
        return resolver(argtypes, source)

    def wait(self, scope: dict[str, Any]) -> None:
        """Kernels are loaded synchronously; nothing to wait for."""
