"""CustomOp: a layer with a native PyTorch forward and kernels of its own per device,
enabled or disabled by the config's `custom_ops` rules (vLLM's grammar and precedence).

As in vLLM, the choice is bound to each layer of a model before it runs
(`bind_custom_ops`: at a decorated model's construction, and by precompile before its
trace), so the traced graph holds either the kernel's ops or the native ones, never a
branch, and the choice belongs to the model, not to a thread or a process. The rules are
part of the config's key, and the choices a build factor of the entry. A layer never
bound runs `forward_native`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from aotcache.configuration import CompilationConfig, custom_op_enabled


class CustomOp(torch.nn.Module):
    """Subclass it, set `name` (or decorate with `CustomOp.register("name")`), write
    `forward_native` (plain PyTorch: the reference), and `forward_cpu` / `forward_cuda`
    where there is a faster kernel. An enabled op on CPU without `forward_cpu` runs
    `forward_native`; on CUDA it needs `forward_cuda`, as in vLLM."""

    name: ClassVar[str] = ""
    _aotcache_enabled: bool = False  # bound by bind_custom_ops

    @staticmethod
    def register(name: str) -> Callable[[type[CustomOp]], type[CustomOp]]:
        def decorate(cls: type[CustomOp]) -> type[CustomOp]:
            cls.name = name
            return cls

        return decorate

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self._aotcache_enabled:
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


def bind_custom_ops(model: torch.nn.Module, config: CompilationConfig) -> dict[str, bool]:
    """Bind every CustomOp layer of the model to the config's rules; returns what each
    named op runs (name -> its own kernel)."""
    rules = config.effective_custom_ops()
    for module in model.modules():
        if isinstance(module, CustomOp):
            module._aotcache_enabled = custom_op_enabled(rules, type(module).name)
    return custom_op_choices(model)


def custom_op_choices(model: torch.nn.Module) -> dict[str, bool]:
    """What each named CustomOp layer of the model is bound to run (name -> its kernel)."""
    return {type(m).name: m._aotcache_enabled for m in model.modules() if isinstance(m, CustomOp) and type(m).name}
