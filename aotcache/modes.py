"""The two mode enums of the configuration, with vLLM's semantics."""

from __future__ import annotations

import enum
from typing import Any


class CompilationMode(enum.IntEnum):
    """How much of the compile pipeline runs (vLLM's `CompilationMode`)."""

    NONE = 0
    """Plain eager PyTorch."""
    STOCK_TORCH_COMPILE = 1
    """`torch.compile`, left to the caller."""
    DYNAMO_TRACE_ONCE = 2
    """One Dynamo trace, the whole graph through Inductor, guards dropped."""
    VLLM_COMPILE = 3
    """Piecewise compile per range and size, with the persistent cache."""


class CUDAGraphMode(enum.Enum):
    """CUDA-graph modes. A pair is (mode for uniform decode, mode for mixed batches)."""

    NONE = 0
    PIECEWISE = 1
    FULL = 2
    FULL_DECODE_ONLY = (FULL, NONE)
    FULL_AND_PIECEWISE = (FULL, PIECEWISE)

    def decode_mode(self) -> CUDAGraphMode:
        return CUDAGraphMode(self.value[0]) if self.separate_routine() else self

    def mixed_mode(self) -> CUDAGraphMode:
        return CUDAGraphMode(self.value[1]) if self.separate_routine() else self

    def separate_routine(self) -> bool:
        """True for the pair modes, which treat uniform decode batches apart."""
        return isinstance(self.value, tuple)

    def has_mode(self, mode: CUDAGraphMode) -> bool:
        assert not mode.separate_routine(), "has_mode takes a single mode"
        if self.separate_routine():
            return mode.value in self.value
        return self == mode

    def has_full_cudagraphs(self) -> bool:
        return self.has_mode(CUDAGraphMode.FULL)

    def has_piecewise_cudagraphs(self) -> bool:
        return self.has_mode(CUDAGraphMode.PIECEWISE)

    def requires_piecewise_compilation(self) -> bool:
        return self.has_piecewise_cudagraphs()


def parse_enum(enum_cls: type[enum.Enum], field: str, value: Any) -> Any:
    """Accept a member, its name (any case), or its int value (vLLM's validation takes
    the enum's values: 0-3 for a mode, 0-2 for a CUDA-graph mode)."""
    from aotcache.errors import ConfigError

    names = [m.name for m in enum_cls]
    numbers = [m.value for m in enum_cls if isinstance(m.value, int)]
    allowed = "one of " + ", ".join(names) + (f" or {min(numbers)}-{max(numbers)}" if numbers else "")
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        key = value.strip().upper()
        if key in enum_cls.__members__:
            return enum_cls[key]
        if key.isdigit() and issubclass(enum_cls, enum.IntEnum):
            value = int(key)
    if isinstance(value, int) and not isinstance(value, bool) and value in numbers:
        return enum_cls(value)
    raise ConfigError(field, value, allowed)
