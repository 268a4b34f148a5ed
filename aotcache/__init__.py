"""aotcache: compile a PyTorch model once, ahead of time; load it anywhere in a
fraction of the cold-compile time, verified, with no compiler and no re-tracing.

The serving path (`aotcache.load`) imports nothing from the compile side; `precompile`
imports aotcache.backend (Dynamo, Inductor) only when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .config import CompilationConfig, Range, load_config
from .counters import counters
from .decorators import ignore_compile, support_compile
from .errors import (
    AotCacheError,
    CacheDirError,
    CacheMiss,
    CompileError,
    ConfigError,
    CorruptEntry,
    DispatchError,
    EntryNotFound,
    IncompatibleEnvironment,
    SignatureError,
    StaleEntry,
    TargetError,
    UnsupportedFormat,
)
from .loader import LoadedModel, load
from .modes import CompilationMode, CUDAGraphMode
from .target import ModelSpec

if TYPE_CHECKING:
    from .backend.precompile import PrecompileResult


def precompile(model: Any, config: Any = None, example_inputs: Any = None, **kwargs: Any) -> PrecompileResult:
    """Trace, compile and publish an entry for `model` (see aotcache.backend.precompile).

    `model` is an nn.Module or a TARGET string ("pkg.module:attr", "path/file.py:attr");
    `config` a CompilationConfig or dict; `example_inputs` a tuple, a dict of forward
    arguments, or a function size -> inputs."""
    from .api import precompile as run

    return run(model, config, example_inputs, **kwargs)


__all__ = [
    "AotCacheError",
    "CUDAGraphMode",
    "CacheDirError",
    "CacheMiss",
    "CompilationConfig",
    "CompilationMode",
    "CompileError",
    "ConfigError",
    "CorruptEntry",
    "DispatchError",
    "EntryNotFound",
    "IncompatibleEnvironment",
    "LoadedModel",
    "ModelSpec",
    "Range",
    "SignatureError",
    "StaleEntry",
    "TargetError",
    "UnsupportedFormat",
    "__version__",
    "config",
    "counters",
    "ignore_compile",
    "load",
    "load_config",
    "precompile",
    "support_compile",
]
