"""aotcache: compile a PyTorch model once, ahead of time; load it anywhere in a
fraction of the cold-compile time, verified, with no compiler and no re-tracing.

The serving path (`aotcache.load`) imports nothing from the compile side; `precompile`
imports aotcache.backend (Dynamo, Inductor) only when called.

Packages, one per stage of the data flow (each `__init__` lists its modules):
  `key`            named factors: config, environment, model identity, traced sources
  `store`          the cache dir: manifest, crash-safe writes, signing, checks, scan, clear
  `formats`        how a stored artifact becomes a callable again
  `serve`          load, bind, dispatch, run; CUDA graphs
  `fleet`          push and pull through an OCI registry or an object store
  `stats`          what replicas served and missed, summed across the fleet
  `verify`         every check of an entry, and verify --run's fresh process
  `backend`        the compile side: trace, split, compile, publish
  `cli`            the aotcache command
  `configuration`  CompilationConfig, where it comes from, the config in effect
Modules shared by all, one line each:
  `api`                  aotcache.precompile's model/spec/TARGET resolution
  `decorators`           @support_compile, vLLM's decorator
  `custom_op`            CustomOp layers and the custom_ops rules
  `model_spec`           ModelSpec: how a model is built and called
  `target`               finding the object a TARGET names
  `hf`                   transformers models: hf: targets, attention routed to the op
  `ops`                  aotcache::attention, registered without transformers
  `envs`                 every environment variable, with its meaning
  `errors`               the typed errors and exit codes
  `modes`                CompilationMode, CUDAGraphMode
  `progress`             progress lines of long operations
  `compilation_counter`  what the cache did, as vLLM's counter
  `version`              the version
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, Any

from aotcache.compilation_counter import counters

# Cheap, torch-free modules first.
from aotcache.configuration import CompilationConfig, Range, load_config, use_config
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
from aotcache.version import __version__

if TYPE_CHECKING:
    from aotcache import hf as hf
    from aotcache.custom_op import CustomOp
    from aotcache.decorators import ignore_compile, should_compile_mm_encoder, support_compile
    from aotcache.model_spec import without_weights
    from aotcache.serve.loader import LoadedModel, load
    from aotcache.target import ModelSpec

    from .backend.parts import PartsResult
    from .backend.precompile import PrecompileResult

# Imported on first use (PEP 562), so that `import aotcache` (and `aotcache --help`)
# does not pay for importing torch: name -> (module, attribute; None for the module).
_LAZY: dict[str, tuple[str, str | None]] = {
    "hf": ("aotcache.hf", None),
    "CustomOp": ("aotcache.custom_op", "CustomOp"),
    "load": ("aotcache.serve.loader", "load"),
    "LoadedModel": ("aotcache.serve.loader", "LoadedModel"),
    "ModelSpec": ("aotcache.target", "ModelSpec"),
    "support_compile": ("aotcache.decorators", "support_compile"),
    "ignore_compile": ("aotcache.decorators", "ignore_compile"),
    "should_compile_mm_encoder": ("aotcache.decorators", "should_compile_mm_encoder"),
    "without_weights": ("aotcache.model_spec", "without_weights"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'aotcache' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def config(
    config: CompilationConfig | dict[str, Any] | None = None, /, **fields: Any
) -> contextlib.AbstractContextManager[CompilationConfig]:
    """`with aotcache.config(compile_sizes=[1, 2]):` sets the config that @support_compile
    models built inside the block use: fields apply over the config in effect; a
    CompilationConfig (or dict) given positionally replaces it first."""
    return use_config(config, **fields)


def precompile(
    model: Any, config: Any = None, example_inputs: Any = None, **kwargs: Any
) -> PrecompileResult | PartsResult:
    """Trace, compile and publish an entry for `model` (see aotcache.backend.precompile).

    `model` is an nn.Module or a TARGET string ("pkg.module:attr", "path/file.py:attr");
    `config` a CompilationConfig or dict; `example_inputs` a tuple, a dict of forward
    arguments, or a function size -> inputs. A model that is not decorated but holds
    @support_compile submodules (vLLM's multimodal models) is served as parts: one entry
    per part, a PartsResult (see aotcache.backend.parts)."""
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
    "CustomOp",
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
    "should_compile_mm_encoder",
    "support_compile",
    "without_weights",
]
