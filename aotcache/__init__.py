"""aotcache: compile a PyTorch model once, ahead of time; load it anywhere in a
fraction of the cold-compile time, verified, with no compiler and no re-tracing.

The serving path (`aotcache.load`) imports nothing from the compile side; `precompile`
imports aotcache.backend (Dynamo, Inductor) only when called.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from aotcache import hf as hf  # registers aotcache::attention, which stored graphs may call
from aotcache.config import CompilationConfig, Range, load_config, use_config
from aotcache.counters import counters
from aotcache.decorators import ignore_compile, support_compile
from aotcache.errors import (
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
from aotcache.modes import CompilationMode, CUDAGraphMode
from aotcache.serve.loader import LoadedModel, load
from aotcache.target import ModelSpec
from aotcache.version import __version__

if TYPE_CHECKING:
    from .backend.precompile import PrecompileResult


def config(
    config: CompilationConfig | dict[str, Any] | None = None, /, **fields: Any
) -> contextlib.AbstractContextManager[CompilationConfig]:
    """`with aotcache.config(compile_sizes=[1, 2]):` sets the config that @support_compile
    models built inside the block use: fields apply over the config in effect; a
    CompilationConfig (or dict) given positionally replaces it first.

    This function shadows the `aotcache.config` submodule as an attribute of the package;
    `from aotcache.config import CompilationConfig` is unaffected (it reads sys.modules)."""
    return use_config(config, **fields)


def precompile(model: Any, config: Any = None, example_inputs: Any = None, **kwargs: Any) -> PrecompileResult:
    """Trace, compile and publish an entry for `model` (see aotcache.backend.precompile).

    `model` is an nn.Module or a TARGET string ("pkg.module:attr", "path/file.py:attr");
    `config` a CompilationConfig or dict; `example_inputs` a tuple, a dict of forward
    arguments, or a function size -> inputs."""
    from aotcache.api import precompile as run

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
    "hf",
    "ignore_compile",
    "load",
    "load_config",
    "precompile",
    "support_compile",
]
