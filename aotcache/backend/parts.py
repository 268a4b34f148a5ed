"""Precompile a model served as parts (see aotcache/serve/parts.py): each part, with
its own config and dynamic dims, as an entry of its own, keyed by the part alone, which
the part loads on its first call in a serving process; the model's glue code runs
eagerly. The entries record "Model.path" (`part_of`), so inspect-cache lists them
under the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from aotcache.configuration import CompilationConfig
from aotcache.errors import ConfigError
from aotcache.serve.parts import compiled_parts, part_examples

from .precompile import BuildRequest, PrecompileResult, precompile
from .weights import fill_meta_tensors

ConfigOf = Callable[[dict[str, Any]], CompilationConfig]  # a class's own fields -> its config


@dataclass
class PartsResult:
    """precompile of a model served as parts: one result per part, by its path."""

    model: str
    parts: dict[str, PrecompileResult]

    @property
    def summary(self) -> dict[str, Any]:
        """`precompile --json` of a model served as parts (schema
        aotcache.precompile-parts/1): its class and each part's summary by path."""
        return {"model": self.model, "parts": {path: result.summary for path, result in self.parts.items()}}


def precompile_model(
    model: torch.nn.Module,
    config_of: ConfigOf,
    spec_fields: dict[str, Any],
    example_inputs: Any,
    request: BuildRequest,
) -> PrecompileResult | PartsResult:
    """The model's entry, with config_of(spec_fields); or, for a model served as parts,
    one entry per part, each with config_of(its class's fields), as it is served."""
    fill_meta_tensors(model)  # built without weights (weights.py)
    parts = compiled_parts(model, config_of)
    if not parts:
        return precompile(model, config_of(spec_fields), example_inputs, request)
    name = type(model).__qualname__
    for field_name, given in (("config", spec_fields), ("dynamic_arg_dims", request.dynamic_arg_dims)):
        if given:
            raise ConfigError(
                field_name, given, f"none for {name}, served as parts: each part takes its own from its class"
            )
    examples = part_examples(model, example_inputs, [part.path for part in parts])
    results = {}
    for part in parts:
        cls = type(part.module)
        part_request = request.replace(
            dynamic_arg_dims=cls._aotcache_dynamic_arg_dims,  # type: ignore[attr-defined]
            mark_unbacked_dims=cls._aotcache_mark_unbacked_dims,  # type: ignore[attr-defined]
            part_of=f"{name}.{part.path}",
        )
        results[part.path] = precompile(part.module, part.config, examples[part.path], part_request)
    return PartsResult(name, results)
