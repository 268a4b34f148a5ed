"""CustomOp: a layer with a native PyTorch forward and kernels of its own per device,
enabled or disabled by the config's `custom_ops` rules (vLLM's grammar and precedence).

The choice is made while precompile traces the model (`tracing_rules`): the traced graph
holds either the custom kernel's ops or the native ones, never a branch, and the rules
are part of the config's key, so a change of rules is a miss naming `config.custom_ops`.
Outside a precompile the config's default applies (native under Inductor).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch

from aotcache.config import CompilationConfig, custom_op_enabled

_rules: tuple[str, ...] = ("none",)  # the rules of the precompile now tracing


class CustomOp(torch.nn.Module):
    """Subclass it, set `name` (or decorate with `CustomOp.register("name")`), write
    `forward_native` (plain PyTorch: the reference), and `forward_cpu` / `forward_cuda`
    where there is a faster kernel. An enabled op on CPU without `forward_cpu` runs
    `forward_native`; on CUDA it needs `forward_cuda`, as in vLLM."""

    name: ClassVar[str] = ""

    @staticmethod
    def register(name: str) -> Callable[[type[CustomOp]], type[CustomOp]]:
        def decorate(cls: type[CustomOp]) -> type[CustomOp]:
            cls.name = name
            return cls

        return decorate

    @classmethod
    def enabled(cls) -> bool:
        return custom_op_enabled(_rules, cls.name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled():
            return self.forward_native(*args, **kwargs)
        device = _device_type(args, kwargs, self)
        if device == "cuda":
            return self.forward_cuda(*args, **kwargs)
        if device == "cpu":
            return self.forward_cpu(*args, **kwargs)
        return self.forward_native(*args, **kwargs)

    def forward_native(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no forward_native")

    def forward_cuda(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} is enabled on CUDA but has no forward_cuda")

    def forward_cpu(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward_native(*args, **kwargs)


def _device_type(args: tuple[Any, ...], kwargs: dict[str, Any], module: torch.nn.Module) -> str:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device.type
    for parameter in module.parameters():
        return parameter.device.type
    return "cpu"


@contextlib.contextmanager
def tracing_rules(config: CompilationConfig) -> Iterator[None]:
    """The config's custom_ops rules for the trace (and the eager runs beside it)."""
    global _rules
    previous, _rules = _rules, config.effective_custom_ops()
    try:
        yield
    finally:
        _rules = previous


def custom_op_choices(model: torch.nn.Module) -> dict[str, bool]:
    """Which CustomOp layers of the model the rules in effect enable (name -> enabled):
    a build factor of the entry, so an entry says which kernels it was traced with."""
    return {type(m).name: type(m).enabled() for m in model.modules() if isinstance(m, CustomOp) and type(m).name}
