"""The Python API around the compile side: aotcache.precompile."""

from __future__ import annotations

from typing import Any

import torch

from aotcache.configuration import CompilationConfig, from_dict
from aotcache.target import ModelSpec, as_spec, import_target


def resolve_spec(model: Any, example_inputs: Any = None, dynamic_arg_dims: Any = None) -> ModelSpec:
    if isinstance(model, str):
        spec = as_spec(import_target(model), origin=model)
    elif isinstance(model, torch.nn.Module) and example_inputs is not None:
        spec = ModelSpec(model=model, example_inputs=example_inputs)
    else:
        spec = as_spec(model)
    if example_inputs is not None:
        spec.example_inputs = example_inputs
    if dynamic_arg_dims is not None:
        spec.dynamic_arg_dims = dynamic_arg_dims
    return spec


def precompile(
    model: Any,
    config: CompilationConfig | dict[str, Any] | None = None,
    example_inputs: Any = None,
    *,
    dynamic_arg_dims: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    spec = resolve_spec(model, example_inputs, dynamic_arg_dims)

    def config_of(fields: dict[str, Any]) -> CompilationConfig:
        """A class's (or the spec's) own fields under the config given; a
        CompilationConfig given is used as it is."""
        return config if isinstance(config, CompilationConfig) else from_dict({**fields, **(config or {})})

    if spec.example_inputs is None:
        from aotcache.errors import TargetError

        raise TargetError("no example inputs: pass example_inputs=... or give the model an example_inputs method")
    from .backend.parts import precompile_model
    from .backend.request import BuildRequest

    request = BuildRequest.of(dynamic_arg_dims=spec.dynamic_arg_dims, check_graph=spec.check_graph, **kwargs)
    model = spec.build_model(weights=False)
    return precompile_model(model, config_of, spec.config_dict(), spec.example_inputs, request)
