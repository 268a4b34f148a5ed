"""What one precompile is asked to do, beside the model, its config and its example
inputs: one options object instead of a parameter list every caller repeats."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aotcache.errors import ConfigError
from aotcache.progress import Progress

if TYPE_CHECKING:
    from torch import fx

    from aotcache.fleet.remote import Remote


@dataclass(frozen=True)
class BuildRequest:
    """How to build. `origin`: the TARGET the model came from, recorded so that
    `verify KEY --run` can rebuild it. `strict`: warnings about the input (a splitting op
    the graph never calls) are ConfigErrors. `jobs`: processes compiling units (default:
    the cores available; the artifacts are the same bytes whatever it is). `remote` (a
    URL or an open remote): where the entry (no source changed) and units this cache dir
    lacks are looked up before they are built, only from entries signed by `sign_key`,
    else by the trusted key (AOTCACHE_TRUSTED_KEY); a build with neither takes nothing
    from it unless `trust_unsigned_remote` (backend/remote_trust.py). `part_of`:
    "Model.path" of a model served as parts (backend/parts.py), recorded. `check_graph`:
    called with the traced graph before anything compiles (ModelSpec.check_graph)."""

    dynamic_arg_dims: dict[str, Any] | None = None
    mark_unbacked_dims: dict[str, Any] | None = None
    cache_dir: str | os.PathLike[str] | None = None
    force: bool = False
    strict: bool = False
    sign_key: str | os.PathLike[str] | None = None
    progress: Progress | None = None
    origin: str | None = None
    jobs: int | None = None
    remote: str | Remote | None = None
    insecure: bool = False
    part_of: str | None = None
    trust_unsigned_remote: bool = False
    check_graph: Callable[[fx.GraphModule], None] | None = None

    def __post_init__(self) -> None:
        if self.jobs is not None and self.jobs < 1:
            raise ConfigError("jobs", self.jobs, "a positive number of worker processes")

    @classmethod
    def of(cls, **options: Any) -> BuildRequest:
        """From keyword options (aotcache.precompile's); an unknown one is a TypeError
        naming it, as a misspelt keyword argument is."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"precompile() got unexpected keyword arguments: {', '.join(unknown)}")
        return cls(**options)

    def replace(self, **changes: Any) -> BuildRequest:
        return dataclasses.replace(self, **changes)
