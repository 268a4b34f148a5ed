"""A model served as parts: the @support_compile submodules of an undecorated model.

vLLM compiles a multimodal model this way: the model class itself is not decorated, its
language model is, and its vision encoder is too, with enable_if=should_compile_mm_encoder
(compile_mm_encoder). Each part compiles as an entry of its own, keyed by the part alone,
which the part loads on its first call in a serving process; the model's glue code runs
eagerly. The entries record "Model.path" (`part_of`), so inspect-cache lists them under
the model. What a part is called with comes from running the whole model eagerly on its
example inputs (serve/parts.py), at every size the build asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from aotcache.config import CompilationConfig
from aotcache.decorators import compiled_parts
from aotcache.serve.parts import part_inputs

from .precompile import PrecompileResult, precompile


@dataclass
class PartsResult:
    """precompile of a model served as parts: one result per part, by its path."""

    model: str
    parts: dict[str, PrecompileResult]

    @property
    def summary(self) -> dict[str, Any]:
        """`precompile --json` of a model served as parts: its class and, per part path,
        the part's own summary (see PrecompileResult.summary)."""
        return {"model": self.model, "parts": {path: result.summary for path, result in self.parts.items()}}


def precompile_parts(
    model: torch.nn.Module,
    config: CompilationConfig,
    example_inputs: Any,
    parts: list[tuple[str, torch.nn.Module]],
    **options: Any,
) -> PartsResult:
    """Each part precompiled as its own entry, with its class's dynamic dims."""
    name = type(model).__qualname__
    results = {}
    for path, part in parts:
        cls = type(part)
        results[path] = precompile(
            part,
            config,
            part_inputs(model, example_inputs, path, part),
            dynamic_arg_dims=cls._aotcache_dynamic_arg_dims,  # type: ignore[attr-defined]
            mark_unbacked_dims=cls._aotcache_mark_unbacked_dims,  # type: ignore[attr-defined]
            part_of=f"{name}.{path}",
            **options,
        )
    return PartsResult(name, results)


def precompile_model(
    model: torch.nn.Module,
    config: CompilationConfig,
    example_inputs: Any,
    *,
    dynamic_arg_dims: dict[str, Any] | None = None,
    **options: Any,
) -> PrecompileResult | PartsResult:
    """The model's entry, or, for a model served as parts, one entry per part."""
    parts = compiled_parts(model, config)
    if parts:
        return precompile_parts(model, config, example_inputs, parts, **options)
    return precompile(model, config, example_inputs, dynamic_arg_dims=dynamic_arg_dims, **options)
