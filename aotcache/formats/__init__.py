"""Artifact formats: how one stored compile artifact becomes a callable again.

Each artifact in a manifest names its format (`artifact["format"]`); the loader asks
`loader_for(name)` for the function that turns the artifact's verified bytes into
Inductor's `call(args)`. Today there is one format, `native`: Inductor's generated CPU
wrapper plus its kernel libraries, loaded from memory with no compiler and no Inductor
(`native`, `kernels`, `inductor_runtime`, `torch_internals`). A new format (e.g. torch's
own CompiledArtifact for GPUs) is a module here and one line in FORMATS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aotcache.errors import CorruptEntry

# artifact loader: (verified files by path, the manifest's artifact record, a label) -> call(args)
ArtifactLoader = Callable[[dict[str, bytes], dict[str, Any], str], Callable[..., Any]]

NATIVE = "native"
KNOWN_FORMATS = (NATIVE,)


def loader_for(name: str) -> ArtifactLoader:
    """The loader of an artifact format; CorruptEntry for a name this version does not know."""
    if name == NATIVE:
        from .native import load_artifact

        return load_artifact
    raise CorruptEntry(f"artifact format {name!r} is unknown to this aotcache (known: {', '.join(KNOWN_FORMATS)})")
