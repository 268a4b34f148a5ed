"""The `native` artifact format: Inductor's generated CPU wrapper, rewritten at
precompile time to import its runtime helpers from `inductor_runtime`, plus the kernel
libraries it calls. Loading needs no compiler and no Inductor: the wrapper is executed
from verified bytes and each kernel is dlopen-ed from memory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from aotcache.errors import CorruptEntry

from . import inductor_runtime
from .artifact import Artifact
from .kernels import load_kernel

Runnable = Callable[..., Any]


def exec_source(source: bytes, filename: str) -> dict[str, Any]:
    """Execute verified Python source of an entry as a module; its namespace."""
    namespace: dict[str, Any] = {"__name__": f"aotcache_entry.{filename}", "__builtins__": __builtins__}
    exec(compile(source, filename, "exec"), namespace)
    return namespace


def load_artifact(blobs: dict[str, bytes], artifact: Artifact, label: str) -> Runnable:
    """Execute a rewritten Inductor wrapper, resolving each kernel to the library the
    entry compiled from that exact C++ source, and return its `call(args)`."""
    kernels = artifact.kernels

    def resolve(argtypes: list[str], source: str) -> Runnable:
        digest = inductor_runtime.kernel_source_digest(source)
        path = kernels.get(digest)
        if path is None:
            raise CorruptEntry(f"artifact {label} uses a kernel the entry does not hold ({digest[:12]})")
        data = blobs[path]
        return load_kernel(data, hashlib.sha256(data).hexdigest())

    with inductor_runtime.kernel_resolver(resolve):
        namespace = exec_source(blobs[str(artifact.wrapper)], f"<aotcache artifact:{label}>")
    return namespace["call"]
