"""Compile: each unique piece once per compile range and once per concrete size.

A range compiles from the graph's symbolic inputs ("from_graph"); a concrete size from
inputs of that size (the weights, and uninitialised tensors of the traced layout: a
compile reads shapes, never values). Inductor records
the shape guards of what it compiled (e.g. `2 <= s0`): sizes of a range that fail them
get a concrete compile of their own, because loaded artifacts do not check guards.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx

from aotcache.configuration import Range
from aotcache.errors import CompileError
from aotcache.formats import INDUCTOR, NATIVE, torch_internals

from . import _torch_compat as compat
from . import shape_guards
from .native import NativeArtifact, UnsupportedWrapper, export
from .shape_guards import UnreadableGuard

log = logging.getLogger("aotcache.compile")


@dataclass
class CompiledUnit:
    piece_digest: str
    unit: Range
    artifact: Any  # torch's CompiledArtifact: stored as is in the inductor format, kept for the self-check
    native: NativeArtifact | None  # the compiler-free export, when the unit is stored natively
    guards: str | None
    seconds: float
    device_types: list[str]
    saved: bytes | None = None  # the artifact in torch's binary format, for units built in a worker
    triton_launch: dict[str, Any] | None = None  # its Triton kernels and those the static launcher cannot take
    partitions: int | None = None  # CUDA-graph partitions Inductor cut (a Runner(partitions=[...]) wrapper)

    @property
    def format(self) -> str:
        return NATIVE if self.native is not None else INDUCTOR

    def detached(self) -> CompiledUnit:
        """What a worker process sends back: everything but the in-process artifact,
        which travels saved in torch's binary format."""
        saved = save_artifact(self.artifact, self.unit)
        return CompiledUnit(
            self.piece_digest,
            self.unit,
            None,
            self.native,
            self.guards,
            self.seconds,
            self.device_types,
            saved,
            self.triton_launch,
            self.partitions,
        )

    def reference(self) -> Any:
        """Inductor's own callable (loaded from `saved` for a unit built in a worker)."""
        if self.artifact is None and self.saved is not None:
            with tempfile.TemporaryDirectory(prefix="aotcache-load-") as folder:
                path = os.path.join(folder, "artifact.bin")
                Path(path).write_bytes(self.saved)
                self.artifact = torch_internals.load_compiled_artifact(path)
        return self.artifact


def save_artifact(artifact: Any, unit: Range) -> bytes:
    """torch's CompiledArtifact in its binary format."""
    with tempfile.TemporaryDirectory(prefix="aotcache-save-") as folder:
        path = os.path.join(folder, "artifact.bin")
        try:
            artifact.save(path=path, format="binary")
        except Exception as exc:
            label = f"size {unit.start}" if unit.is_single_size() else f"range {unit}"
            raise CompileError(
                f"torch could not save a compiled piece ({label}) in the inductor format: "
                f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}",
                hint="use artifact_format native on CPU",
            ) from exc
        return Path(path).read_bytes()


def record_piece_inputs(stitch: fx.GraphModule, values: list[Any], wanted: set[str]) -> dict[str, list[Any]]:
    """Run the split graph eagerly and record the inputs each wanted piece receives (a
    copy of each activation; the graph's own inputs, the weights, as they are)."""
    recorded: dict[str, list[Any]] = {}
    given = {id(v) for v in values if isinstance(v, torch.Tensor)}

    class Recorder(fx.Interpreter):
        def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
            if target in wanted and target not in recorded:
                recorded[target] = [
                    a.clone() if isinstance(a, torch.Tensor) and id(a) not in given else a for a in args
                ]
            return super().call_module(target, args, kwargs)

    with torch.no_grad():
        Recorder(stitch).run(*values)
    return recorded


def compile_unit(
    graph: fx.GraphModule,
    digest: str,
    unit: Range,
    concrete_inputs: list[Any] | None,
    config_patches: dict[str, Any],
    artifact_format: str = "auto",
) -> CompiledUnit:
    """Compile one piece for one range or size, and choose how it is stored:
    `artifact_format` native (compiler-free, CPU only; an error where it cannot be),
    inductor (torch's CompiledArtifact), or auto (native where it can be)."""
    start = time.perf_counter()
    if unit.is_single_size():
        if concrete_inputs is None:
            raise CompileError(f"no inputs of size {unit.start} for a concrete compile")
        inputs = [unit.start if isinstance(v, (int, torch.SymInt)) else v for v in concrete_inputs]
        dynamic_shapes = "from_example_inputs"
    else:
        inputs = [n.meta["example_value"] for n in graph.graph.nodes if n.op == "placeholder"]
        dynamic_shapes = "from_graph"
    try:
        with torch.no_grad():
            artifact = compat.standalone_compile(graph, inputs, dynamic_shapes, config_patches)
    except Exception as exc:
        raise CompileError(f"Inductor failed on a piece for sizes {unit}: {type(exc).__name__}: {exc}") from exc
    info = compat.compiled_graph_info(artifact)
    if info["source_code"] is None:
        raise CompileError("Inductor returned no wrapper code for a piece")
    if info["mutated_inputs"]:
        raise CompileError(f"a compiled piece mutates its inputs {info['mutated_inputs']}; not supported yet")
    if info["constants"]:
        raise CompileError(f"a compiled piece holds constants {info['constants']}; not supported yet")
    native = _native_export(info, artifact_format)
    seconds = time.perf_counter() - start
    unit_result = CompiledUnit(digest, unit, artifact, native, info["guards_expr"], seconds, info["device_types"])
    unit_result.triton_launch = compat.triton_launch(artifact)
    unit_result.partitions = compat.inductor_partition_count(info["source_code"])
    return unit_result


def _native_export(info: dict[str, Any], artifact_format: str) -> NativeArtifact | None:
    """The native export of a compiled unit, or None where it is stored as torch's own
    CompiledArtifact instead."""
    if artifact_format == INDUCTOR:
        return None
    if any(d != "cpu" for d in info["device_types"]):
        if artifact_format == NATIVE:
            raise CompileError(
                f"the native artifact format is CPU-only; this piece runs on {info['device_types']}",
                hint="set artifact_format to auto or inductor",
            )
        return None
    try:
        return export(info["source_code"])
    except UnsupportedWrapper as exc:
        if artifact_format == NATIVE:
            raise
        log.info("storing a unit in the inductor format: %s", exc.message)
        return None


def guard_holds(guards: str | None, size: int) -> bool:
    """Whether an artifact's recorded shape guards hold for this dynamic size."""
    return not guards or _holds(guards, size)


def sizes_failing_guards(guards: str | None, unit: Range) -> list[int]:
    """The sizes of a range for which an artifact's recorded shape guards do not hold."""
    if not guards or unit.is_single_size():
        return []
    return [size for size in range(unit.start, unit.end + 1) if not _holds(guards, size)]


def readable_guards(guards: str | None, unit: Range) -> str | None:
    """Why the shape guards of a unit taken from another entry cannot be read over its
    sizes (shape_guards.py), or None: such a unit is compiled here instead."""
    try:
        if guards:
            for size in range(unit.start, unit.end + 1):
                shape_guards.holds(guards, size)
    except UnreadableGuard as exc:
        return f"its shape guards {guards[:80]!r} are outside the grammar aotcache reads ({exc})"
    return None


def _holds(guards: str, size: int) -> bool:
    try:
        return shape_guards.holds(guards, size)
    except UnreadableGuard as exc:
        raise CompileError(f"cannot read the shape guards of a compiled piece: {guards[:200]!r} ({exc})") from None
