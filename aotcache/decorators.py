"""@support_compile: the library face, after vLLM's @support_torch_compile.

A decorated model class compiles (or loads) itself on its first call, as the config's
mode says:

=====================  =========================================================
NONE                   plain eager
STOCK_TORCH_COMPILE    plain eager here; `torch.compile` is left to the caller
DYNAMO_TRACE_ONCE      one Dynamo trace, the whole graph through Inductor, in
                       memory; guards are not re-evaluated afterwards
VLLM_COMPILE           load the verified cache entry if there is one; otherwise
                       precompile, save and use it
=====================  =========================================================

AOTCACHE_FORCE_LOAD=1 (or strict=True) turns a VLLM_COMPILE miss into an error;
AOTCACHE_DISABLE_CACHE=1 compiles without reading or writing the cache. A `None`
argument must stay `None` for the model's life: the graph was captured without it.

Importing this module imports nothing of the compile side; that happens only when a
compile is really needed.
"""

from __future__ import annotations

import functools
import inspect
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

import aotcache.envs as envs
from aotcache.compilation_counter import counters
from aotcache.configuration import CompilationConfig, current_config, from_dict
from aotcache.custom_op import bind_custom_ops
from aotcache.errors import ConfigError
from aotcache.modes import CompilationMode
from aotcache.serve.inputs import DynamicDims, bind_call, infer_dynamic_dims, normalize_dynamic_dims
from aotcache.serve.loader import load, strict_from_env
from aotcache.serve.parts import IGNORE_KEY, compiles_under, record_call

log = logging.getLogger("aotcache")

T = TypeVar("T", bound=type)
DISABLE_CACHE_ENV = envs.AOTCACHE_DISABLE_CACHE
_WRAPPED = "_aotcache_wrapped"


@dataclass
class _State:
    config: CompilationConfig
    strict: bool | None
    runner: Callable[..., Any] | None = None


def support_compile(
    cls: T | None = None,
    *,
    dynamic_arg_dims: DynamicDims | None = None,
    mark_unbacked_dims: dict[str, int | list[int]] | None = None,
    enable_if: Callable[[CompilationConfig], bool] | None = None,
    config: CompilationConfig | dict[str, Any] | None = None,
) -> Any:
    """Decorate an nn.Module class: `@support_compile` or `@support_compile(...)`.

    dynamic_arg_dims maps forward's argument names to an int, a list of ints (negative
    allowed) or {dim: shape_id}; when omitted, every argument annotated torch.Tensor or
    Optional[torch.Tensor] gets dim 0. Errors are raised here, at decoration time.
    `config`: the class's own config fields, which `aotcache precompile CLASS-TARGET`
    uses too. An instance takes `compilation_config=` (a CompilationConfig or dict) and
    `aotcache_strict=` keyword arguments; otherwise the innermost `with
    aotcache.config(...)` applies, else the class's fields under the pyproject and
    environment defaults."""

    def decorate(target: T) -> T:
        if not isinstance(target, type) or not callable(getattr(target, "forward", None)):
            raise TypeError("decorated class should have a forward method.")
        signature = inspect.signature(target.forward)
        dims = dynamic_arg_dims if dynamic_arg_dims is not None else infer_dynamic_dims(target.forward)
        normalize_dynamic_dims(dims, signature, target.__qualname__)
        for name in mark_unbacked_dims or {}:
            if name not in signature.parameters or name == "self":
                raise ConfigError("mark_unbacked_dims", name, f"an argument of {target.__qualname__}.forward")
        target._aotcache_dynamic_arg_dims = dims  # type: ignore[attr-defined]
        target._aotcache_mark_unbacked_dims = dict(mark_unbacked_dims or {})  # type: ignore[attr-defined]
        target._aotcache_enable_if = enable_if  # type: ignore[attr-defined]
        fields = config.to_dict() if isinstance(config, CompilationConfig) else dict(config or {})
        from_dict(fields)  # a bad field is a ConfigError here, at decoration time
        target._aotcache_config = fields or None  # type: ignore[attr-defined]
        setattr(target, IGNORE_KEY, False)  # a re-decorated child of an ignored class compiles
        _wrap_init(target)
        _wrap_call(target)
        return target

    return decorate(cls) if cls is not None else decorate


def should_compile_mm_encoder(config: CompilationConfig) -> bool:
    """enable_if for a multimodal encoder, as vLLM's: it compiles (as an entry of its
    own) only with compile_mm_encoder set."""
    return config.compile_mm_encoder


def ignore_compile(cls: T) -> T:
    """Turn compilation off for this class (and subclasses that do not re-decorate)."""
    setattr(cls, IGNORE_KEY, True)
    return cls


def _wrap_init(cls: type) -> None:
    original = cls.__init__
    if getattr(original, _WRAPPED, False):
        return
    accepts_config = "compilation_config" in inspect.signature(original).parameters

    @functools.wraps(original)
    def __init__(
        self: Any, *args: Any, compilation_config: Any = None, aotcache_strict: bool | None = None, **kwargs: Any
    ) -> None:
        if accepts_config:
            kwargs["compilation_config"] = compilation_config
        original(self, *args, **kwargs)
        if isinstance(compilation_config, dict):
            config = from_dict(compilation_config)
        elif isinstance(compilation_config, CompilationConfig):
            config = compilation_config
        else:
            config = current_config(getattr(type(self), "_aotcache_config", None))
        self._aotcache = _State(config, aotcache_strict)
        bind_custom_ops(self, config)  # as vLLM chooses a CustomOp's forward: when it is built
        if not _compiles(self):
            return
        counters.models_seen += 1

    setattr(__init__, _WRAPPED, True)
    cls.__init__ = __init__  # type: ignore[method-assign]


def _compiles(module: Any) -> bool:
    return compiles_under(type(module), module._aotcache.config)


def _wrap_call(cls: type) -> None:
    if getattr(cls.__call__, _WRAPPED, False):
        return

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        if record_call(self, args, kwargs):  # precompile finding a part's inputs: eager
            return torch.nn.Module.__call__(self, *args, **kwargs)
        state: _State | None = getattr(self, "_aotcache", None)
        if state is None or torch.compiler.is_compiling() or not _compiles(self):
            return torch.nn.Module.__call__(self, *args, **kwargs)
        if state.runner is None:
            state.runner = _first_call(self, state, args, kwargs)
        return state.runner(*args, **kwargs)

    setattr(__call__, _WRAPPED, True)
    cls.__call__ = __call__  # type: ignore[method-assign]


def _first_call(module: Any, state: _State, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any]:
    cls = type(module)
    dims = cls._aotcache_dynamic_arg_dims
    config = state.config
    if config.mode == CompilationMode.DYNAMO_TRACE_ONCE:
        from .backend.trace_once import TraceOnceRunner

        return TraceOnceRunner(module, _call_arguments(module, args, kwargs), dims, config)
    return _load_or_compile(module, state, args, kwargs, dims)


def _call_arguments(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return bind_call(type(module).forward, module, args, kwargs)


def _load_or_compile(
    module: Any, state: _State, args: tuple[Any, ...], kwargs: dict[str, Any], dims: DynamicDims
) -> Callable[..., Any]:
    config = state.config
    disabled = envs.enabled(DISABLE_CACHE_ENV)
    strict = strict_from_env(state.strict)
    if not disabled:
        loaded = load(module, config, strict=strict)
        if loaded is not None:
            return loaded
    from .backend.precompile import BuildRequest, precompile

    example = _call_arguments(module, args, kwargs)
    unbacked = type(module)._aotcache_mark_unbacked_dims
    if disabled:
        scratch = tempfile.mkdtemp(prefix="aotcache-nocache-")
        try:
            request = BuildRequest(dynamic_arg_dims=dims, mark_unbacked_dims=unbacked, cache_dir=scratch)
            precompile(module, config, example, request)
            loaded = load(module, config, cache_dir=scratch, strict=True)
            config.local_cache_dir = None  # the scratch dir goes now
        finally:
            # The loader keeps what it needs in memory; a leftover temp dir is only litter.
            shutil.rmtree(
                scratch, onerror=lambda *failed: log.warning("could not delete %s: %s", failed[1], failed[2][1])
            )
    else:
        result = precompile(module, config, example, BuildRequest(dynamic_arg_dims=dims, mark_unbacked_dims=unbacked))
        log.info("aotcache: compiled and saved entry %s", result.entry_id)
        loaded = load(module, config, strict=True)
    assert loaded is not None
    return loaded
