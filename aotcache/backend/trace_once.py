"""DYNAMO_TRACE_ONCE: one Dynamo trace, the whole graph through Inductor, in memory.

No cache, no splitting; guards are never re-evaluated after the trace. The one exception
is the shape guard Inductor records for the dynamic size (e.g. `2 <= s0`): a size that
fails it gets a specialised compile of its own on first use, never a wrong answer.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from aotcache.compilation_counter import counters
from aotcache.configuration import CompilationConfig, Range
from aotcache.custom_op import bind_custom_ops
from aotcache.serve.binding import GraphBinder, load_treespec, unflatten
from aotcache.serve.inputs import DEFAULT_TRACE_SIZE, InputSpec, normalize_dynamic_dims, resize

from . import _torch_compat as compat
from .capture import capture
from .compile import compile_unit, guard_holds
from .inductor_passes import resolve


class TraceOnceRunner:
    def __init__(
        self, model: torch.nn.Module, arguments: dict[str, Any], dims: dict[str, Any], config: CompilationConfig
    ) -> None:
        spec = InputSpec.from_arguments(
            arguments, normalize_dynamic_dims(dims, _signature(model), type(model).__qualname__)
        )
        if arguments[spec.size_arg].shape[spec.size_dim] < 2:  # Dynamo specialises sizes 0 and 1
            arguments = resize(arguments, spec, DEFAULT_TRACE_SIZE)
        bind_custom_ops(model, config)
        self._settings = resolve(config).settings  # the config's Inductor passes, for every compile
        self.captured = capture(model, arguments, dims, [], None, config.dynamic_shapes_config["type"])
        counters.traces += 1
        self.config = config
        graph_inputs = [item.to_json() for item in self.captured.inputs]
        self.binder = GraphBinder(model, graph_inputs, self.captured.input_spec)
        self._treespec = load_treespec(self.captured.output_spec)
        inputs = [n.meta["example_value"] for n in self.captured.graph.graph.nodes if n.op == "placeholder"]
        with torch.no_grad(), compat.inductor_settings(self._settings):
            self._artifact = compat.standalone_compile(
                self.captured.graph, inputs, "from_graph", config.inductor_compile_config
            )
        counters.compiles += 1
        self._guards = compat.compiled_graph_info(self._artifact)["guards_expr"]
        self._special: dict[int, Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        arguments = self.binder.arguments(args, kwargs)
        size = self.binder.size(arguments)
        values = self.binder.values(arguments, size)
        with torch.no_grad():
            outputs = self._compiled_for(size, values)(*values)
        return unflatten(outputs, self._treespec)

    def _compiled_for(self, size: int, values: list[Any]) -> Any:
        if size in self._special:
            return self._special[size]
        if guard_holds(self._guards, size):
            return self._artifact
        # The graph's inputs are exactly this call's values: compile for them.
        with compat.inductor_settings(self._settings):
            unit = compile_unit(
                self.captured.graph, "whole", Range(size, size), values, self.config.inductor_compile_config
            )
        counters.compiles += 1
        self._special[size] = unit.artifact
        return unit.artifact


def _signature(model: torch.nn.Module) -> inspect.Signature:
    return inspect.signature(type(model).forward)
