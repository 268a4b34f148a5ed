"""The lookup key of a (config, model) pair on this host: what a serving process can
compute before anything is traced, in well under a millisecond."""

from __future__ import annotations

import torch

from aotcache.configuration import CompilationConfig

from .env import lookup_env_factors
from .factors import Factor
from .identity import model_device, model_device_type, model_factors

FORMAT_VERSION = 3  # 2: artifacts name their format; wings moved the runtime module; 3: traced state


def tool_factors() -> list[Factor]:
    return [Factor("aotcache.format", FORMAT_VERSION)]


def config_factors(config: CompilationConfig) -> list[Factor]:
    return [Factor(f"config.{name}", value) for name, value in config.graph_factors().items()]


def lookup_factors(config: CompilationConfig, model: torch.nn.Module) -> list[Factor]:
    return [
        *tool_factors(),
        *config_factors(config),
        *model_factors(model),
        *lookup_env_factors(model_device_type(model), model_device(model).index),
    ]
