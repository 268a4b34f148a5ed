"""ModelSpec: how a model is built and called, what a TARGET names. A leaf: it imports
no other aotcache module but the config and the errors, so both target.py (which finds
a TARGET) and hf.py (which makes one for a checkpoint) can use it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from aotcache.configuration import CompilationConfig
from aotcache.errors import AotCacheError, TargetError


@dataclass
class ModelSpec:
    model: torch.nn.Module | Callable[[], torch.nn.Module]
    example_inputs: Callable[[int], Any] | tuple[Any, ...] | dict[str, Any] | None = None
    config: CompilationConfig | dict[str, Any] | None = None
    dynamic_arg_dims: dict[str, Any] | None = None
    name: str | None = None

    def build_model(self) -> torch.nn.Module:
        model = self.model if isinstance(self.model, torch.nn.Module) else call_user(self.model, "the model factory")
        if not isinstance(model, torch.nn.Module):
            raise TargetError(f"the spec's model factory returned a {type(model).__name__}, not an nn.Module")
        return model

    def config_dict(self) -> dict[str, Any]:
        if isinstance(self.config, CompilationConfig):
            return self.config.to_dict()
        return dict(self.config or {})


def call_user(function: Callable[..., Any], what: str, *args: Any) -> Any:
    """Call the user's code (a factory, example_inputs); its exception becomes a
    TargetError (bad input, exit 2) that names it first."""
    try:
        return function(*args)
    except AotCacheError:
        raise
    except Exception as exc:
        raise TargetError(f"{what} raised {type(exc).__name__}: {exc}", hint="fix the TARGET's code") from exc
