"""Artifact formats: how one stored compile artifact becomes a callable again.

Each artifact in a manifest names its format (`artifact["format"]`); the loader asks
`loader_for(name)` for the function that turns the artifact's verified bytes into
Inductor's `call(args)`. Two formats: `native`, Inductor's generated CPU wrapper plus its
kernel libraries, loaded from memory with no compiler and no Inductor (`native`,
`kernels`, `inductor_runtime`, `torch_internals`); and `inductor`, torch's own
CompiledArtifact (any device Inductor supports; loading imports Inductor, and on CPU it
compiles the kernels' C++ again). A new format (e.g. Inductor's wrapper with Triton
cubins launched by torch's static CUDA launcher) is a module here and a line in
`loader_for`, `artifact.Artifact.paths` and `needs` (what loading an artifact needs
besides torch, and which of that this host lacks). `artifact` is the typed record of
one artifact, as a manifest lists it; `partitions` holds the slots an inductor-format
artifact's graph partitions are handed to at load (CUDA graphs per partition).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aotcache.errors import CorruptEntry

from .artifact import INDUCTOR, KNOWN_FORMATS, NATIVE, Artifact
from .needs import load_needs, missing_needs

# artifact loader: (verified files by path, the manifest's artifact record, a label) -> call(args)
ArtifactLoader = Callable[[dict[str, bytes], Artifact, str], Callable[..., Any]]


def loader_for(name: str) -> ArtifactLoader:
    """The loader of an artifact format; CorruptEntry for a name this version does not know."""
    if name == NATIVE:
        from .native import load_artifact

        return load_artifact
    if name == INDUCTOR:
        from .inductor import load_artifact

        return load_artifact
    raise CorruptEntry(f"artifact format {name!r} is unknown to this aotcache (known: {', '.join(KNOWN_FORMATS)})")


__all__ = [
    "INDUCTOR",
    "KNOWN_FORMATS",
    "NATIVE",
    "Artifact",
    "load_needs",
    "loader_for",
    "missing_needs",
]
