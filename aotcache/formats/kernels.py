"""Load compiled kernels from bytes, with no compiler and no Inductor.

A kernel is dlopen-ed from an anonymous in-memory file (memfd) holding the bytes whose
checksum the loader verified, so nothing can swap the file between the check and the
load, and a concurrent `clear` of the entry cannot break a load half-way. Where memfd
is unavailable, a private temporary directory is used instead.
"""

from __future__ import annotations

import atexit
import importlib.machinery
import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import aotcache.envs as envs

from . import torch_internals as internals

_loaded: dict[str, Callable[..., Any]] = {}
_lock = threading.Lock()
_private_dir: str | None = None


def load_kernel(data: bytes, digest: str) -> Callable[..., Any]:
    """The kernel callable from an Inductor CPU kernel library's bytes (sha256 `digest`).

    Loaded once per process per digest; the same bytes always give the same kernel."""
    with _lock:
        kernel = _loaded.get(digest)
        if kernel is None:
            kernel = _load(data, digest)
            _loaded[digest] = kernel
        return kernel


def _load(data: bytes, digest: str) -> Callable[..., Any]:
    envs.put(internals.TENSOR_DATA_PTR_ENV, str(internals.tensor_data_ptr_address()))
    path = _materialize(data, digest)
    name = f"aotcache_kernel_{digest[:24]}.{internals.KERNEL_ENTRY_FUNCTION}"
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load kernel library {digest[:12]}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, internals.KERNEL_ENTRY_FUNCTION)


def _materialize(data: bytes, digest: str) -> str:
    """A path holding exactly `data`, unique for the life of the process (the dynamic
    loader treats an already-seen path as an already-loaded library)."""
    if hasattr(os, "memfd_create"):
        try:
            fd = os.memfd_create(f"aotcache-{digest[:16]}.so", 0)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            # The descriptor stays open for the life of the process so that its
            # /proc path is never reused for other bytes.
            return f"/proc/self/fd/{fd}"
        except OSError:
            pass
    folder = _private_folder()
    path = os.path.join(folder, f"{digest}.so")
    with open(path, "wb") as f:
        f.write(data)
    return path


def _private_folder() -> str:
    global _private_dir
    if _private_dir is None:
        _private_dir = tempfile.mkdtemp(prefix="aotcache-kernels-")
        atexit.register(shutil.rmtree, _private_dir, True)
    return _private_dir
