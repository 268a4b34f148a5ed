"""The config in effect for @support_compile models: a model class's own fields under the
nearest pyproject's [tool.aotcache], under AOTCACHE_COMPILATION_CONFIG, under the fields
of the enclosing `with aotcache.config(...)` blocks (a context variable, so threads and
tasks each see their own)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aotcache.envs as envs

from .compilation import CompilationConfig
from .sources import from_dict, load_config

CONFIG_ENV = envs.AOTCACHE_COMPILATION_CONFIG


@dataclass(frozen=True)
class _InEffect:
    """What `with aotcache.config(...)` blocks set: a whole config given positionally
    (replacing everything outside), and the fields given by name, innermost last."""

    replacement: CompilationConfig | None
    fields: dict[str, Any]
    effective: CompilationConfig


_current: contextvars.ContextVar[_InEffect | None] = contextvars.ContextVar("aotcache_config", default=None)


def _defaults(base: dict[str, Any] | None) -> CompilationConfig:
    return load_config(base=base, pyproject=True, json_text=envs.get(CONFIG_ENV) or None)


def current_config(base: dict[str, Any] | None = None) -> CompilationConfig:
    """The config in effect: `base` (a model class's own fields) under the nearest
    pyproject's [tool.aotcache], under AOTCACHE_COMPILATION_CONFIG (JSON), under the
    fields the enclosing `with aotcache.config(...)` blocks set by name, the innermost
    winning; a config given to a block positionally replaces all but the fields of the
    blocks inside it."""
    state = _current.get()
    if state is None:
        return _defaults(base)
    if state.replacement is not None or not base:
        return state.effective
    return _defaults(base).replace(**state.fields)


@contextlib.contextmanager
def use_config(
    config: CompilationConfig | dict[str, Any] | None = None, /, **fields: Any
) -> Iterator[CompilationConfig]:
    """`with aotcache.config(compile_sizes=[1, 2]):` - fields apply over the config in
    effect; a CompilationConfig (or dict) given positionally replaces it first."""
    outer = _current.get()
    if config is not None:
        replacement = config if isinstance(config, CompilationConfig) else from_dict(dict(config))
        named = dict(fields)
    else:
        replacement = outer.replacement if outer else None
        named = {**(outer.fields if outer else {}), **fields}
    start = replacement if replacement is not None else _defaults(None)
    effective = start.replace(**named) if named else start
    token = _current.set(_InEffect(replacement, named, effective))
    try:
        yield effective
    finally:
        _current.reset(token)
