"""Capture: one Dynamo trace of `forward`, with the dynamic dimensions marked.

Records the FX graph, which model tensor or call argument feeds every graph input,
every source file Dynamo traced through (plus the files that define the splitting ops,
which Dynamo does not trace into), and every plain setting the trace read, from
Dynamo's own guards (guards.py).
"""

from __future__ import annotations

import inspect
import logging
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from aotcache.errors import AotCacheError, CompileError, TargetError
from aotcache.key.identity import dtype_name, tensor_attributes
from aotcache.serve.inputs import DynamicDims, InputSpec, normalize_dynamic_dims
from aotcache.store.traced_state import TracedState
from aotcache.store.traced_state import problems as state_problems

from . import _torch_compat as compat
from . import guards, hf_state

log = logging.getLogger("aotcache.capture")


@dataclass(frozen=True)
class GraphInput:
    """Where a graph placeholder's value comes from at run time."""

    name: str
    kind: str  # "parameter" | "buffer" | "attribute" | "arg" | "size"
    source: str  # attribute path, argument name, or "" for the size
    shape: list[Any] = field(default_factory=list)
    dtype: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "source": self.source, "shape": self.shape, "dtype": self.dtype}


@dataclass
class Capture:
    graph: fx.GraphModule
    inputs: list[GraphInput]
    example_values: list[Any]
    symbol: Any  # the sympy symbol of the dynamic size
    input_spec: InputSpec
    traced_files: set[str]
    seconds: float
    output_spec: str | None = None
    output_dims: list[list[int]] | None = None  # per graph output, the dims of the dynamic size
    model_name: str = ""
    state: TracedState = field(default_factory=TracedState)  # what the trace read beyond tensors


def capture(
    model: torch.nn.Module,
    arguments: dict[str, Any],
    dynamic_arg_dims: DynamicDims | None,
    splitting_ops: list[str],
    mark_unbacked_dims: dict[str, Any] | None = None,
    dynamic_type: str = "backed",
) -> Capture:
    """One trace of forward. `dynamic_type` (dynamic_shapes_config.type): "backed" marks
    the dynamic dims dynamic (Dynamo specialises sizes 0 and 1, so a range starting at 1
    gets a guard 2 <= size), "unbacked" marks them unbacked (no such guard: the range
    serves size 1 too), "backed_size_oblivious" traces backed sizes as if unbacked where
    torch can."""
    start = time.perf_counter()  # the trace's cost includes importing Dynamo
    forward = type(model).forward
    dims = normalize_dynamic_dims(dynamic_arg_dims, inspect.signature(forward), type(model).__qualname__)
    input_spec = InputSpec.from_arguments(arguments, dims)
    unbacked = dict(mark_unbacked_dims or {})
    if dynamic_type == "unbacked":
        unbacked.update({name: list(dim_ids) for name, dim_ids in dims.items()})
    _mark_dynamic(arguments, {} if dynamic_type == "unbacked" else dims, unbacked)
    with compat.backed_size_oblivious(dynamic_type == "backed_size_oblivious"):
        graph, example_inputs, traced_files, output, state = _trace(model, arguments, _dynamic_dims(arguments, dims))
    check_state(state, model)
    seconds = time.perf_counter() - start
    op_files, unfound = compat.splitting_op_files(splitting_ops)
    traced_files |= op_files
    for name in unfound:
        log.warning(
            "splitting op %s: no Python source file of its implementation was found, so editing it will not "
            "make entries stale (ops implemented in C++ are fine; otherwise rebuild with --force after an edit)",
            name,
        )
    inputs = _graph_inputs(graph, example_inputs, model, arguments)
    symbol = _dynamic_symbol(example_inputs, inputs)
    return Capture(
        graph,
        inputs,
        example_inputs,
        symbol,
        input_spec,
        traced_files,
        seconds,
        _output_spec(graph, output),
        _output_dims(graph, symbol),
        type(model).__qualname__,
        state,
    )


def check_state(state: TracedState, model: torch.nn.Module) -> None:
    """The recorded state must hold on the model it was read from, in this process: a
    check that fails here would make the entry unloadable (a bug, said now)."""
    failed = state_problems(state, model)
    if failed:
        raise CompileError(
            f"the state recorded from the trace of {type(model).__qualname__} does not hold on the model itself: "
            + "; ".join(str(d) for d in failed[:3]),
            hint="report this as a bug of aotcache, with the model",
        )


def _mark_dynamic(arguments: dict[str, Any], dims: dict[str, dict[int, Any]], unbacked: dict[str, Any]) -> None:
    for name, dim_ids in dims.items():
        value = arguments.get(name)
        if isinstance(value, torch.Tensor):  # InputSpec refused every other non-None type
            compat.mark_dynamic(value, [d % value.ndim for d in dim_ids])
    for name, wanted in unbacked.items():
        value = arguments.get(name)
        if isinstance(value, torch.Tensor):
            for dim in [wanted] if isinstance(wanted, int) else wanted:
                compat.mark_unbacked(value, dim % value.ndim, value.shape[dim])


def _dynamic_dims(arguments: dict[str, Any], dims: dict[str, dict[int, Any]]) -> list[tuple[str, int]]:
    """(argument, dim) of every dynamic dimension of the tensors passed."""
    found = []
    for name, dim_ids in dims.items():
        value = arguments.get(name)
        if isinstance(value, torch.Tensor):
            found += [(name, d % value.ndim) for d in dim_ids]
    return found


def _forward_of(model: torch.nn.Module, arguments: dict[str, Any]) -> Any:
    """Where every trace starts: the model and the call are its two locals, so that each
    guard Dynamo installs is reached from one of them or from a module (guards.py)."""
    return model.forward(**arguments)


def _forward_of_one_size(model: torch.nn.Module, arguments: dict[str, Any], dynamic: tuple[Any, ...]) -> Any:
    """_forward_of, telling Dynamo that every dynamic dimension is the same size
    (input_ids and attention_mask along the sequence); otherwise each gets a symbol."""
    first, first_dim = dynamic[0]
    for name, dim in dynamic[1:]:
        torch._check(arguments[name].shape[dim] == arguments[first].shape[first_dim])
    return model.forward(**arguments)


def _trace(
    model: torch.nn.Module, arguments: dict[str, Any], dynamic: list[tuple[str, int]]
) -> tuple[fx.GraphModule, list[Any], set[str], Any, TracedState]:
    """One Dynamo trace of forward: the graph, its example inputs, the files traced
    through (forward's own, never this module's), forward's output, and what the trace
    read of the model's and the process's state (from Dynamo's guards)."""
    forward = type(model).forward
    globals_ = guards.frame_globals()  # nothing of the user's: see guards.py
    root = _forward_of_one_size if len(dynamic) > 1 else _forward_of
    entry = types.FunctionType(root.__code__, globals_, root.__name__)
    call_arguments: tuple[Any, ...] = (model, arguments)
    if len(dynamic) > 1:
        call_arguments += (tuple(dynamic),)
    captured: dict[str, Any] = {}
    recorder = guards.StateRecorder(model, globals_)

    def backend(gm: fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        captured["graph"] = gm
        captured["example_inputs"] = list(example_inputs)
        captured["traced_code"] = compat.traced_code_files()
        return gm.forward

    traced_files: set[str] = {inspect.getsourcefile(forward) or ""}
    try:
        with torch.no_grad(), compat.recording_inlined_files(traced_files):
            compiled = compat.compile_recording_guards(entry, backend, recorder.add_guards)
            output = compiled(*call_arguments)
    except Exception as exc:  # Dynamo raises many unrelated types; report them as one.
        _raise_if_forward_fails(model, arguments)
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise CompileError(
            f"Dynamo could not trace {type(model).__qualname__}.forward: {type(exc).__name__}: {first_line}".strip(),
            hint="make forward traceable with fullgraph=True (no graph breaks)",
        ) from exc
    finally:
        compat.forget_compiled_code(forward)
        compat.forget_compiled_code(entry)
    if "graph" not in captured:
        raise CompileError(f"Dynamo produced no graph for {type(model).__qualname__}.forward")
    traced_files |= set(captured["traced_code"])
    traced_files.discard(__file__)
    hf_state.add_config_fields(recorder, model)
    return captured["graph"], captured["example_inputs"], traced_files, output, recorder.state()


def _raise_if_forward_fails(model: torch.nn.Module, arguments: dict[str, Any]) -> None:
    """After a failed trace: if forward fails in eager PyTorch too, the user's exception
    is the story (bad input), not Dynamo's wrapper around it."""
    try:
        with torch.no_grad():
            model.forward(**arguments)  # what was traced; a decorated __call__ would compile
    except AotCacheError:
        raise  # already says what is wrong (e.g. an attention argument aotcache would drop)
    except Exception as exc:
        name = type(model).__qualname__
        raise TargetError(
            f"{name}.forward raised {type(exc).__name__}: {exc} on the example inputs (in eager PyTorch too)",
            hint="fix forward or the example inputs",
        ) from exc


def _output_dims(graph: fx.GraphModule, symbol: Any) -> list[list[int]]:
    node = next(n for n in reversed(graph.graph.nodes) if n.op == "output")
    produced = node.args[0] if isinstance(node.args[0], (tuple, list)) else [node.args[0]]
    dims = []
    for item in produced:
        value = item.meta.get("example_value") if isinstance(item, fx.Node) else None
        shape = value.shape if isinstance(value, torch.Tensor) else ()
        dims.append([i for i, d in enumerate(shape) if isinstance(d, torch.SymInt) and d.node.expr == symbol])
    return dims


def _output_spec(graph: fx.GraphModule, output: Any) -> str:
    """How to rebuild forward's return value (a tensor, tuple, dict...) from the flat
    graph outputs; refuse outputs the graph does not produce one-to-one."""
    leaves, spec = torch.utils._pytree.tree_flatten(output)
    node = next(n for n in reversed(graph.graph.nodes) if n.op == "output")
    produced = node.args[0] if isinstance(node.args[0], (tuple, list)) else [node.args[0]]
    if len(leaves) != len(produced) or not all(isinstance(leaf, torch.Tensor) for leaf in leaves):
        raise CompileError(
            "forward's return value is not exactly the graph's tensor outputs",
            hint="return tensors (or a tuple/list/dict of tensors) computed by forward",
        )
    return torch.utils._pytree.treespec_dumps(spec)


def _graph_inputs(
    graph: fx.GraphModule, example_inputs: list[Any], model: torch.nn.Module, arguments: dict[str, Any]
) -> list[GraphInput]:
    by_id = {id(tensor): (path, kind) for path, tensor, kind in tensor_attributes(model)}
    for name, value in arguments.items():
        if isinstance(value, torch.Tensor):
            by_id.setdefault(id(value), (name, "arg"))
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    result = []
    for node, value in zip(placeholders, example_inputs, strict=True):
        if isinstance(value, (torch.SymInt, int)):
            result.append(GraphInput(node.name, "size", ""))
            continue
        if not isinstance(value, torch.Tensor) or id(value) not in by_id:
            raise CompileError(
                f"graph input {node.name!r} is not a parameter, buffer, tensor attribute or argument of the model",
                hint="pass tensors as forward arguments or keep them as module attributes",
            )
        source, kind = by_id[id(value)]
        fake = node.meta.get("example_value")
        shape = [compat.dim_repr(d) for d in (fake.shape if fake is not None else value.shape)]
        result.append(GraphInput(node.name, kind, source, shape, dtype_name(value.dtype)))
    return result


def _dynamic_symbol(example_inputs: list[Any], inputs: list[GraphInput]) -> Any:
    symbols = set()
    for value, spec in zip(example_inputs, inputs, strict=True):
        if spec.kind == "size":
            if not isinstance(value, torch.SymInt):
                raise CompileError("Dynamo passed a concrete size where a dynamic one was expected")
            symbols |= value.node.expr.free_symbols
    if not symbols:
        raise CompileError(
            "the traced graph has no dynamic size: Dynamo specialised the marked dimension",
            hint="check dynamic_arg_dims and that forward does not branch on that size",
        )
    if len(symbols) > 1:
        names = ", ".join(sorted(str(s) for s in symbols))
        raise CompileError(
            f"the traced graph has {len(symbols)} independent dynamic sizes ({names}); one is supported",
            hint="make every dynamic dimension the same size (the token dimension) when precompiling",
        )
    return symbols.pop()
