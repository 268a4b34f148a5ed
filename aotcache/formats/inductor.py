"""The `inductor` artifact format: torch's own CompiledArtifact from standalone_compile,
saved in its binary format (what vLLM's piecewise backend stores). It works for every
device Inductor supports and bundles the Triton kernels' compiled binaries on GPUs.

Loading imports Inductor (only when an entry holds such an artifact), and on CPU it
compiles the kernels' C++ again, so it needs a C++ compiler. The artifact is loaded from
the bytes the loader verified, written to a private temporary file; and Inductor and
Triton read and write only a private cache dir of this process (0700, removed at exit)
while it loads, so the kernels that run are the ones unpacked from those bytes, never
ones another process left in the shared /tmp/torchinductor_$USER.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from aotcache.errors import CorruptEntry, IncompatibleEnvironment

from . import torch_internals
from .artifact import Artifact
from .partitions import PartitionCollector


def load_artifact(blobs: dict[str, bytes], artifact: Artifact, label: str) -> Callable[..., Any]:
    """The artifact's `call(args)` (Inductor's calling convention, as the native format)."""
    if sys.flags.optimize:
        raise IncompatibleEnvironment(
            f"artifact {label} is in the inductor format, which torch cannot load under `python -O`",
            hint="run without -O, or precompile with artifact_format native",
        )
    _check_needs(artifact, label)
    data = blobs[str(artifact.binary)]
    collector = PartitionCollector(label)
    if artifact.partitions:
        with torch_internals.partition_wrapper(collector):
            compiled = _load_from_bytes(data, label)
    else:
        compiled = _load_from_bytes(data, label)
    slots = collector.check(artifact.partitions or 0)

    def call(args: list[Any]) -> Any:
        return compiled(*args)

    call.partitions = slots  # type: ignore[attr-defined]  (serve/runtime.py hands them to a graph runner)
    return call


def _check_needs(artifact: Artifact, label: str) -> None:
    """What this host lacks to load the artifact, before anything is unpacked: an
    environment problem (IncompatibleEnvironment), never a corrupt entry."""
    from .needs import load_needs, missing_needs

    lacking = missing_needs(load_needs({label: artifact}))
    if lacking:
        raise IncompatibleEnvironment(
            f"artifact {label} is in the inductor format, whose loading needs {', '.join(lacking)}, which this host "
            "lacks",
            hint="install it on the serving host, or precompile with artifact_format native (CPU)",
        )


_private: str | None = None


def _private_folder() -> str:
    """This process's private Inductor/Triton cache dir (0700, removed at exit)."""
    global _private
    if _private is None:
        try:
            _private = tempfile.mkdtemp(prefix="aotcache-inductor-caches-")
        except OSError as exc:
            raise IncompatibleEnvironment(
                f"no writable temporary directory to unpack an inductor-format entry in ({exc})",
                hint="set TMPDIR to a writable directory",
            ) from None
        atexit.register(shutil.rmtree, _private, True)
    return _private


def _load_from_bytes(data: bytes, label: str) -> Any:
    caches = _private_folder()
    with tempfile.TemporaryDirectory(prefix="aotcache-inductor-", dir=caches) as folder:
        path = os.path.join(folder, "artifact.bin")
        with open(path, "wb") as f:
            f.write(data)
        try:
            with torch_internals.private_compile_caches(caches):
                return torch_internals.load_compiled_artifact(path)
        except Exception as exc:
            raise _as_miss(exc, label) from exc


def _as_miss(exc: Exception, label: str) -> Exception:
    """torch's load errors as the tool's own: a missing compiler or another torch is the
    environment; anything else means the bytes are not a loadable artifact."""
    name = type(exc).__name__
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    if isinstance(exc, ImportError):
        return IncompatibleEnvironment(
            f"artifact {label} needs a module this host lacks ({name}: {text})",
            hint="install it on the serving host (e.g. triton for CUDA entries)",
        )
    if isinstance(exc, OSError) and "temporary" not in text:
        return IncompatibleEnvironment(
            f"artifact {label} could not be unpacked on this host ({name}: {text})",
            hint="check TMPDIR and its free space",
        )
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
