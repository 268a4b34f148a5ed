"""ModelSpec: how a model is built and called, what a TARGET names. A leaf: it imports
no other aotcache module but the config and the errors, so both target.py (which finds
a TARGET) and hf.py (which makes one for a checkpoint) can use it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from aotcache.configuration import CompilationConfig
from aotcache.errors import AotCacheError, TargetError


@dataclass
class ModelSpec:
    """`model`: the module, or a factory that builds it. `model_without_weights`: a
    factory that builds it with its parameters on the meta device, which precompile uses
    instead (weights are never needed to precompile; `aotcache.without_weights()` makes
    one of any factory that builds its modules itself). `check_graph`: called with the
    traced FX graph before anything compiles (an hf: TARGET checks that every layer's
    attention goes through the op it is split at)."""

    model: torch.nn.Module | Callable[[], torch.nn.Module]
    example_inputs: Callable[[int], Any] | tuple[Any, ...] | dict[str, Any] | None = None
    config: CompilationConfig | dict[str, Any] | None = None
    dynamic_arg_dims: dict[str, Any] | None = None
    name: str | None = None
    model_without_weights: Callable[[], torch.nn.Module] | None = None
    check_graph: Callable[[torch.fx.GraphModule], None] | None = None

    def build_model(self, weights: bool = True) -> torch.nn.Module:
        """The model; with `weights=False`, built without them where the spec says how."""
        if not weights and self.model_without_weights is not None:
            model = call_user(self.model_without_weights, "the model factory")
        elif isinstance(self.model, torch.nn.Module):
            model = self.model
        else:
            model = call_user(self.model, "the model factory")
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


@contextmanager
def without_weights() -> Iterator[None]:
    """Build modules with every parameter on the meta device: no memory, no random
    initialisation. Buffers stay real, so tables computed in `__init__` (rotary
    frequencies, position ids) keep their values."""
    register = torch.nn.Module.register_parameter

    def register_on_meta(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = type(param)(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register  # type: ignore[method-assign]
