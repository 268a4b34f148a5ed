"""The trace step of a precompile: what forward is traced with (known before the trace),
the one Dynamo trace, and the entry's key from what it read."""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from aotcache.compilation_counter import counters
from aotcache.configuration import CompilationConfig
from aotcache.errors import ConfigError
from aotcache.key import sources as sources_mod
from aotcache.key.factors import EntryKey, Factor, digest
from aotcache.key.lookup import lookup_factors
from aotcache.progress import Progress
from aotcache.serve.inputs import (
    DEFAULT_TRACE_SIZE,
    InputSpec,
    example_arguments,
    infer_dynamic_dims,
    normalize_dynamic_dims,
)
from aotcache.store.failpoints import failpoint

from . import _torch_compat as compat
from . import inductor_passes
from .capture import Capture, capture
from .entry import march
from .split import unused_splitting_ops

log = logging.getLogger("aotcache.precompile")

ExampleInputs = Callable[[int], Any] | tuple[Any, ...] | list[Any] | dict[str, Any]


@dataclass
class TraceArguments:
    """What forward is traced with, known before the trace: the arguments, the input
    spec they make, and the example inputs at any size."""

    arguments: dict[str, Any]
    spec: InputSpec
    inputs_at: Callable[[int], dict[str, Any]]
    dynamic_arg_dims: dict[str, Any]  # as given, else inferred from forward's annotations

    @classmethod
    def of(
        cls,
        model: torch.nn.Module,
        config: CompilationConfig,
        example_inputs: ExampleInputs,
        dynamic_arg_dims: dict[str, Any] | None,
    ) -> TraceArguments:
        model.eval()
        forward = type(model).forward
        if dynamic_arg_dims is None:
            dynamic_arg_dims = infer_dynamic_dims(forward)
        dims = normalize_dynamic_dims(dynamic_arg_dims, inspect.signature(forward), type(model).__qualname__)
        arguments = example_arguments(model, example_inputs, None, None)
        given = InputSpec.from_arguments(arguments, dims)

        def inputs_at(size: int) -> dict[str, Any]:
            return example_arguments(model, example_inputs, size, given)

        if arguments[given.size_arg].shape[given.size_dim] < 2:  # Dynamo specialises sizes 0 and 1
            arguments = inputs_at(max(2, min(DEFAULT_TRACE_SIZE, config.max_num_batched_tokens)))
        return cls(arguments, InputSpec.from_arguments(arguments, dims), inputs_at, dynamic_arg_dims)


@dataclass
class Traced:
    """One trace and the key of the entry it makes."""

    captured: Capture
    sources: list[sources_mod.SourceFile]
    key: EntryKey


def trace(
    model: torch.nn.Module,
    config: CompilationConfig,
    arguments: TraceArguments,
    mark_unbacked_dims: dict[str, Any] | None,
    progress: Progress,
    pass_files: set[str],
    extra: list[Factor],
) -> Traced:
    """Trace the model once and compute the entry's key (the config's Inductor passes
    are traced sources too: an edit to one makes the entry stale)."""
    progress.stage("trace")
    failpoint("before-trace")
    dims = arguments.dynamic_arg_dims
    dynamic_type = config.dynamic_shapes_config["type"]
    captured = capture(model, arguments.arguments, dims, config.splitting_ops, mark_unbacked_dims, dynamic_type)
    counters.traces += 1
    failpoint("after-trace")
    captured.traced_files |= pass_files
    traced = sources_mod.record(captured.traced_files)
    build = [
        Factor("sources", sources_mod.sources_digest(traced)),
        Factor("input_spec", digest(captured.input_spec.to_json())),
        Factor("march", march()),
        Factor("traced_state", captured.state.digest),  # a model with another setting: another entry
    ]
    build += extra
    return Traced(captured, traced, EntryKey(lookup_factors(config, model), build))


def extra_build_factors(
    passes: inductor_passes.InductorPasses, custom_ops: dict[str, bool], part_of: str | None
) -> list[Factor]:
    """What a build with Inductor passes or CustomOp layers also depends on: the passes'
    uuids (which may depend on more than their files) and what each layer ran in the
    trace; and the model a part is served in (a model built alone and the same model
    built as a part are two entries). Known before the trace, so the no-change path
    checks them too."""
    extra = [Factor("inductor_passes", passes.uuids)] if passes.uuids else []
    extra += [Factor("custom_ops", custom_ops)] if custom_ops else []
    return extra + ([Factor("part_of", part_of)] if part_of else [])


def check_splitting_ops_exist(config: CompilationConfig) -> None:
    """Before the trace: a splitting op torch does not know is a typo (a ConfigError
    with the nearest name), never an entry built unsplit with a warning."""
    known = compat.registered_op_names()
    for name in config.splitting_ops:
        if name in known:
            continue
        bases = {n.split(".")[0] for n in known}
        near = difflib.get_close_matches(name, sorted(bases), n=1, cutoff=0.6)
        raise ConfigError(
            "splitting_ops",
            name,
            "an op registered with torch (torch.ops.NS.OP, defined by torch.library or a loaded extension)",
            hint=f"did you mean {near[0]}?" if near else "check the name, and that the module defining it is imported",
        )


def check_splitting_ops(captured: Capture, config: CompilationConfig, strict: bool) -> None:
    for name in config.splitting_ops:
        if compat.made_with_custom_op(name):
            log.warning(
                "splitting op %s is a torch.library.custom_op: its first call in a serving process imports Dynamo "
                "(~1.4 s, even in eager); register it through torch.library.Library (define + impl + "
                "register_fake), as vLLM's direct_register_custom_op does",
                name,
            )
    for name in unused_splitting_ops(captured.graph, config.splitting_ops):
        why = f"the traced graph of {captured.model_name} never calls it, so nothing is split there"
        if strict:
            raise ConfigError("splitting_ops", name, f"an op forward calls: {why}")
        log.warning("splitting op %s: %s (check the name; --strict makes this an error)", name, why)
