"""The `inductor` artifact format: torch's own CompiledArtifact from standalone_compile,
saved in its binary format (what vLLM's piecewise backend stores). It works for every
device Inductor supports and bundles the Triton kernels' compiled binaries on GPUs.

Loading imports Inductor (only when an entry holds such an artifact), and on CPU it
compiles the kernels' C++ again unless Inductor's own cache has them, so it needs a C++
compiler. The artifact is loaded from the bytes the loader verified: they are written
to a private temporary file, never read back from the cache dir.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from aotcache.errors import CorruptEntry, IncompatibleEnvironment

from . import torch_internals


def load_artifact(blobs: dict[str, bytes], artifact: dict[str, Any], label: str) -> Callable[..., Any]:
    """The artifact's `call(args)` (Inductor's calling convention, as the native format)."""
    if sys.flags.optimize:
        raise IncompatibleEnvironment(
            f"artifact {label} is in the inductor format, which torch cannot load under `python -O`",
            hint="run without -O, or precompile with artifact_format native",
        )
    data = blobs[artifact["binary"]]
    compiled = _load_from_bytes(data, label)

    def call(args: list[Any]) -> Any:
        return compiled(*args)

    return call


def _load_from_bytes(data: bytes, label: str) -> Any:
    with tempfile.TemporaryDirectory(prefix="aotcache-inductor-") as folder:
        path = os.path.join(folder, "artifact.bin")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return torch_internals.load_compiled_artifact(path)
        except Exception as exc:
            raise _as_miss(exc, label) from exc


def _as_miss(exc: Exception, label: str) -> Exception:
    """torch's load errors as the tool's own: a missing compiler or another torch is the
    environment; anything else means the bytes are not a loadable artifact."""
    name = type(exc).__name__
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    if name == "InvalidCxxCompiler" or "compiler" in text.lower():
        return IncompatibleEnvironment(
            f"artifact {label} needs a C++ compiler to load on this host ({name}: {text})",
            hint="install g++ on the serving host, or precompile with artifact_format native",
        )
    if isinstance(exc, AssertionError):
        return IncompatibleEnvironment(
            f"artifact {label} was saved by another torch or Inductor configuration ({name}: {text})",
            hint="precompile with the torch of this host",
        )
    return CorruptEntry(f"artifact {label} could not be loaded ({name}: {text})", hint="precompile again")
