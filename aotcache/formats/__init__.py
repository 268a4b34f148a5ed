"""Artifact formats: how one stored compile artifact becomes a callable again.

Each artifact in a manifest names its format (`artifact["format"]`); the loader asks
`loader_for(name)` for the function that turns the artifact's verified bytes into
Inductor's `call(args)`. Two formats: `native`, Inductor's generated CPU wrapper plus its
kernel libraries, loaded from memory with no compiler and no Inductor (`native`,
`kernels`, `inductor_runtime`, `torch_internals`); and `inductor`, torch's own
CompiledArtifact (any device Inductor supports; loading imports Inductor, and on CPU it
compiles the kernels' C++ again). A new format (e.g. Inductor's wrapper with Triton
cubins launched by torch's static CUDA launcher) is a module here and a line in
`loader_for`, `artifact_paths` and `load_needs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aotcache.envs as envs
from aotcache.errors import CorruptEntry

# artifact loader: (verified files by path, the manifest's artifact record, a label) -> call(args)
ArtifactLoader = Callable[[dict[str, bytes], dict[str, Any], str], Callable[..., Any]]

NATIVE = "native"
INDUCTOR = "inductor"
KNOWN_FORMATS = (NATIVE, INDUCTOR)


def loader_for(name: str) -> ArtifactLoader:
    """The loader of an artifact format; CorruptEntry for a name this version does not know."""
    if name == NATIVE:
        from .native import load_artifact

        return load_artifact
    if name == INDUCTOR:
        from .inductor import load_artifact

        return load_artifact
    raise CorruptEntry(f"artifact format {name!r} is unknown to this aotcache (known: {', '.join(KNOWN_FORMATS)})")


def artifact_paths(artifact: dict[str, Any]) -> list[str]:
    """The entry files an artifact record refers to, by its format."""
    if artifact["format"] == NATIVE:
        return [artifact["wrapper"], *artifact["kernels"].values()]
    return [artifact["binary"]]


def load_needs(artifacts: dict[str, dict[str, Any]]) -> list[str]:
    """What loading these artifacts needs besides torch: [] for compiler-free entries."""
    needs: set[str] = set()
    for artifact in artifacts.values():
        if artifact.get("format") == INDUCTOR:
            needs.add("inductor")
            devices = artifact.get("device_types") or ["cpu"]
            if "cpu" in devices:
                needs.add("c++ compiler")
            if "cuda" in devices:
                needs.add("triton")
            if artifact.get("dynamic_launch"):
                needs.add("c compiler")  # Triton's launcher stub, built at load for those kernels
    return sorted(needs)


def missing_needs(needs: list[str]) -> list[str]:
    """Which of `needs` this host lacks (checked without running anything)."""
    import importlib.util
    import shutil

    have = {
        "inductor": importlib.util.find_spec("torch._inductor") is not None,
        "c++ compiler": any(shutil.which(c) for c in filter(None, (envs.get(envs.CXX), "g++", "c++", "clang++"))),
        "triton": importlib.util.find_spec("triton") is not None,
        "c compiler": _c_compiler_and_headers(),
    }
    return [need for need in needs if not have.get(need, False)]


def _c_compiler_and_headers() -> bool:
    """What Triton's launcher stub needs: a C compiler and Python.h."""
    import os
    import shutil
    import sysconfig

    compiler = any(shutil.which(c) for c in filter(None, (envs.get(envs.CC), "cc", "gcc", "clang")))
    return compiler and os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
