"""Compile units: every unique piece for every compile range and concrete size, the
sizes a range loses to Inductor's shape guards, storing each artifact content-addressed,
and the self-check that runs every stored artifact the loader's way next to Inductor's
own result before anything is published."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from aotcache.compilation_counter import counters
from aotcache.configuration import CompilationConfig, Range
from aotcache.errors import CompileError
from aotcache.formats import INDUCTOR, NATIVE, Artifact
from aotcache.progress import Progress
from aotcache.serve.binding import GraphBinder
from aotcache.serve.runtime import artifact_call, piece_runner
from aotcache.store.failpoints import failpoint
from aotcache.store.records import Unit

from . import _torch_compat as compat
from .capture import Capture
from .check_budget import CheckMemory, check_budget, dim_at, range_check_sizes
from .compile import (
    CompiledUnit,
    compile_unit,
    readable_guards,
    record_piece_inputs,
    save_artifact,
    sizes_failing_guards,
)
from .parallel import no_inductor_pool, run_in_workers
from .reproducible import library_bytes
from .reuse import ArtifactIndex, ReusedUnit, unit_key
from .split import SplitGraph
from .weights import check_values, has_unset, is_unset

log = logging.getLogger("aotcache.reuse")

MAX_GUARD_SIZES = 64  # sizes a range may lose to shape guards before we give up


@dataclass
class CompiledUnits:
    """What compiling every unit produced, ready for the manifest."""

    unit_records: list[Unit] = field(default_factory=list)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    added_sizes: list[int] = field(default_factory=list)
    unit_keys: dict[str, str] = field(default_factory=dict)  # unit key -> artifact name, for the index
    compiled: int = 0
    reused: int = 0
    reused_remote: int = 0  # of those reused, taken from a remote's entry
    bytes_fetched: int = 0  # downloaded for them
    deduplicated: int = 0  # units whose compile was the same as another unit's
    in_workers: int = 0  # compiled in a forked worker (precompile --jobs), not this process
    workers: int = 0  # distinct worker processes that compiled
    refused_sizes: list[int] = field(default_factory=list)  # where the trace does not hold
    unchecked_sizes: list[int] = field(default_factory=list)  # compile sizes over the self-check's budget
    check_weights_bytes: int = 0  # random values the self-check of a model without weights built


def compile_inputs_key(unit: Range, piece_digest: str) -> tuple[str, int | None]:
    """What Inductor is given for a unit, beyond the config every unit shares: a concrete
    size compiles from real inputs of that size; every range compiles from the piece's
    own symbolic inputs, which do not depend on the range (its bounds only decide which
    sizes the artifact serves, and which fail its guards). So all the ranges of a piece
    are one compile: the same Inductor cache key, the same bytes (test_parallel checks
    both)."""
    return piece_digest, unit.start if unit.is_single_size() else None


def refused_reason(size: int) -> str:
    return (
        f"forward takes another path at size {size} than at the size it was traced at (a branch on the size), "
        "so this entry does not serve it"
    )


def unit_label(unit: Range) -> str:
    return f"size {unit.start}" if unit.is_single_size() else f"range {unit}"


class UnitCompiler:
    """Compiles the unique pieces of one split graph for a list of units."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: CompilationConfig,
        captured: Capture,
        split: SplitGraph,
        inputs_at: Callable[[int], dict[str, Any]],
        progress: Progress,
        index: ArtifactIndex | None = None,
        environment: dict[str, Any] | None = None,
        jobs: int = 1,
    ) -> None:
        """`environment`: the build environment facts (reuse.environment_facts) the unit
        keys of `index` are computed with; `jobs`: worker processes (1: this one)."""
        self.config = config
        self.jobs = jobs
        self.index = index
        self.environment = environment or {}
        self.keys: dict[tuple[Range, str], str] = {}
        self.counts = {
            "compiled": 0,
            "reused": 0,
            "reused_remote": 0,
            "bytes_fetched": 0,
            "deduplicated": 0,
            "in_workers": 0,
        }
        self.worker_pids: set[int] = set()
        self.split = split
        self.unique = split.unique_pieces()
        self.inputs_at = inputs_at
        self.progress = progress
        self.binder = GraphBinder(model, [item.to_json() for item in captured.inputs], captured.input_spec)
        self.done: dict[Range, dict[str, CompiledUnit | ReusedUnit]] = {}
        self._recorded: dict[int, dict[str, list[Any]]] = {}
        self._calls = {str(n.target): n for n in split.stitch.graph.nodes if n.op == "call_module"}
        placeholders = (n for n in split.stitch.graph.nodes if n.op == "placeholder")
        self._slots = {n.name: i for i, n in enumerate(placeholders)}  # graph input index by name
        self.symbol = captured.symbol
        self.traced_minimum = compat.traced_lower_bound(captured.example_values, captured.symbol)
        # Without weights (weights.py), every eager run binds random values instead.
        self.without_weights = has_unset(model)
        self._check_template: list[Any] | None = None
        self.check_weights_bytes = 0
        self.check_memory = CheckMemory.of([p.graph for p in self.unique], captured.symbol)
        self.check_cap = self.check_memory.largest_size(check_budget(), config.max_num_batched_tokens)
        self.unchecked: set[int] = set()

    def eager_values(self, arguments: dict[str, Any], size: int) -> list[Any]:
        """The split graph's inputs for an eager run: the model's tensors, or for a model
        without weights, random ones built on first use (one layer's worth)."""
        values = self.binder.values(arguments, size)
        if not self.without_weights:
            return values
        if self._check_template is None:
            digests = {p.name: p.digest for p in self.split.pieces}
            bound = self.binder.bound_values()
            self._check_template = check_values(self.split.stitch, bound, digests)
            made = {id(t): t for t, own in zip(self._check_template, bound, strict=True) if is_unset(own)}
            self.check_weights_bytes = sum(t.numel() * t.element_size() for t in made.values())
        return [mine if is_unset(value) else value for value, mine in zip(values, self._check_template, strict=True)]

    def compile_inputs(self, piece: Any, size: int) -> list[Any]:
        """What a concrete size compiles from: the bound model tensors where the piece
        takes them, else uninitialised tensors of the traced layout at that size (a
        compile reads shapes, never values, so no eager run is needed at any size)."""
        bound = self.binder.bound_values()
        placeholders = [n for n in piece.graph.graph.nodes if n.op == "placeholder"]
        inputs: list[Any] = []
        for arg, node in zip(self._calls[piece.name].args, placeholders, strict=True):
            if isinstance(arg, fx.Node) and arg.op == "placeholder" and bound[self._slots[arg.name]] is not None:
                inputs.append(bound[self._slots[arg.name]])
            else:
                inputs.append(empty_at(node.meta["example_value"], self.symbol, size))
        return inputs

    def piece_inputs(self, size: int) -> dict[str, list[Any]]:
        """The inputs every unique piece receives in an eager run at this size."""
        if size not in self._recorded:
            values = self.eager_values(self.inputs_at(size), size)
            wanted = {p.name for p in self.unique}
            try:
                self._recorded[size] = record_piece_inputs(self.split.stitch, values, wanted)
            except Exception as exc:
                raise CompileError(
                    f"running the split graph eagerly at size {size} raised {type(exc).__name__}: {exc}",
                    hint="check that forward (and every splitting op) works at this size in eager PyTorch",
                ) from exc
        return self._recorded[size]

    def compile_all(self, units: list[Range], files: dict[str, bytes]) -> CompiledUnits:
        """Compile every unit (plus the sizes guards exclude), store the artifacts in
        `files`, and self-check them."""
        refused = [u.start for u in units if u.is_single_size() and not self._trace_holds(u.start)]
        units[:] = [u for u in units if not (u.is_single_size() and u.start in refused)]
        # the sizes below the traced minimum (size 1 for a backed size) will be compiled
        # apart: counted now, so that the count is said once (it changes only if Inductor's
        # own guards exclude more)
        self.progress.units(len(self.unique) * (len(units) + len(self._below_traced_minimum(units))))
        with no_inductor_pool() if self.jobs > 1 else contextlib.nullcontext():
            self._compile(units)
            guarded = [size for size in self._guard_sizes(units) if size not in refused]
            refused += [size for size in guarded if not self._trace_holds(size)]
            added = [size for size in guarded if size not in refused]
            if added:
                self.progress.units(len(self.unique) * (len(units) + len(added)))
                units.extend(Range(size, size) for size in added)
                self._compile(units[-len(added) :])
        self.progress.stage("self-check")
        result = CompiledUnits(added_sizes=added, workers=len(self.worker_pids), **self.counts)
        result.refused_sizes = sorted(refused)
        for size in sorted(refused):
            result.unit_records.append(Unit(size, size, {}, refused_reason(size)))
        names: dict[tuple[Range, str], str] = {}
        for unit in units:
            for digest, done in self.done[unit].items():
                names[unit, digest] = store_artifact(done, files, result.artifacts)
                if (unit, digest) in self.keys:
                    result.unit_keys[self.keys[unit, digest]] = names[unit, digest]
            unit_names = {digest: names[unit, digest] for digest in self.done[unit]}
            result.unit_records.append(Unit(unit.start, unit.end, unit_names))
        self._self_check(names, result.artifacts, files)
        result.unchecked_sizes = sorted(self.unchecked)
        result.check_weights_bytes = self.check_weights_bytes
        return result

    def _compile(self, units: list[Range]) -> None:
        """Compile (or reuse) every unique piece for these units, each distinct compile
        once (see compile_inputs_key)."""
        groups: dict[tuple[str, int | None], list[tuple[Range, Any]]] = {}
        for unit in units:
            self.done[unit] = {}
            for piece in self.unique:
                if not self._reused(unit, piece):
                    groups.setdefault(compile_inputs_key(unit, piece.digest), []).append((unit, piece))
        firsts = [members[0] for members in groups.values()]
        for members, result in zip(groups.values(), self._compile_each(firsts), strict=True):
            for unit, piece in members:
                self.done[unit][piece.digest] = (
                    result if unit == result.unit else dataclasses.replace(result, unit=unit)
                )
            for unit, piece in members[1:]:
                self.counts["deduplicated"] += 1
                self.progress.unit_done(
                    f"{piece.name} {unit_label(unit)}: shares the compile of {unit_label(result.unit)}"
                )

    def _compile_each(self, todo: list[tuple[Range, Any]]) -> list[CompiledUnit]:
        """Compile each (unit, piece): in `jobs` worker processes after one compile here
        (the warm-up), or all here."""
        if self.jobs <= 1 or len(todo) <= 2:
            return [self._compiled(unit, piece, self._compile_one(unit, piece)) for unit, piece in todo]
        first = self._compiled(*todo[0], self._compile_one(*todo[0]))
        rest = todo[1:]
        tasks = [functools.partial(_detached, self._compile_one, unit, piece) for unit, piece in rest]
        results, pids = run_in_workers(tasks, min(self.jobs, len(rest)), lambda i: self._announce(*rest[i]))
        self.worker_pids |= pids
        self.counts["in_workers"] += len(results)
        for _ in results:
            self._count()
        return [first, *results]

    def _reused(self, unit: Range, piece: Any) -> bool:
        if self.index is None:
            return False
        key = self.keys[unit, piece.digest] = unit_key(piece.digest, unit, self.config, self.environment)
        reused = self.index.find(key, unit)
        if reused is None:
            return False
        unreadable = readable_guards(reused.guards, unit)
        if unreadable is not None:  # data from another entry (or a remote): never evaluated as code
            where = "the remote's entry" if reused.remote else "entry"
            log.warning("unit %s of %s %s is compiled here: %s", key[:12], where, reused.source_entry[:16], unreadable)
            return False
        self.done[unit][piece.digest] = reused
        self.counts["reused"] += 1
        if reused.remote:
            self.counts["reused_remote"] += 1
            self.counts["bytes_fetched"] += reused.bytes_fetched
        where = "the remote's entry" if reused.remote else "entry"
        self.progress.unit_done(f"{piece.name} {unit_label(unit)}: reused from {where} {reused.source_entry[:16]}")
        return True

    def _compile_one(self, unit: Range, piece: Any) -> CompiledUnit:
        inputs = self.compile_inputs(piece, unit.start) if unit.is_single_size() else None
        config = self.config
        return compile_unit(
            piece.graph, piece.digest, unit, inputs, config.inductor_compile_config, config.artifact_format
        )

    def _compiled(self, unit: Range, piece: Any, result: CompiledUnit) -> CompiledUnit:
        """A unit compiled in this process: counted and announced."""
        self._count()
        failpoint("after-first-compile")
        self._announce(unit, piece)
        return result

    def _count(self) -> None:
        counters.compiles += 1
        self.counts["compiled"] += 1

    def _announce(self, unit: Range, piece: Any) -> None:
        self.progress.unit_done(f"{piece.name} {unit_label(unit)}: compiled")

    def _below_traced_minimum(self, units: list[Range]) -> set[int]:
        singles = {u.start for u in units if u.is_single_size()}
        below = {s for u in units for s in range(u.start, min(u.end, self.traced_minimum - 1) + 1)}
        return below - singles

    def _guard_sizes(self, units: list[Range]) -> list[int]:
        """Sizes that a range's artifacts do not cover (their guards say e.g. size >= 2):
        each gets a concrete compile, so the dispatcher never sends them to the range."""
        extra: set[int] = set()
        singles = {u.start for u in units if u.is_single_size()}
        for unit in units:
            for result in self.done[unit].values():
                extra.update(s for s in sizes_failing_guards(result.guards, unit) if s not in singles)
        if len(extra) > MAX_GUARD_SIZES:
            raise CompileError(
                f"{len(extra)} sizes fail the compiled pieces' shape guards (e.g. {sorted(extra)[:5]})",
                hint="adjust compile_ranges_split_points or add compile_sizes",
            )
        return sorted(extra)

    def _trace_holds(self, size: int) -> bool:
        """Whether the traced graph computes what forward does at a size the compiled
        pieces' guards exclude: a guard may come from forward itself (a branch on the
        size), and then no compile of this trace is right there. Both run eagerly, at sizes
        within the self-check's budget (a larger one is assumed to hold, and said)."""
        if size > self.check_cap:
            self.unchecked.add(size)
            return True
        arguments = self.inputs_at(size)
        values = self.eager_values(arguments, size)
        with torch.no_grad():
            traced = torch.utils._pytree.tree_leaves(fx.Interpreter(self.split.stitch).run(*values))
            expected = torch.utils._pytree.tree_leaves(self._eager_forward(arguments, values))
        if len(traced) != len(expected):
            return False
        return all(
            a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-4)
            for a, b in zip(traced, expected, strict=True)
        )

    def _eager_forward(self, arguments: dict[str, Any], values: list[Any]) -> Any:
        """forward itself, run eagerly; for a model without weights, on the same random
        values as the split graph (bound by name)."""
        model = self.binder.model
        if not self.without_weights:
            return model.forward(**arguments)
        tensors = {
            item["source"]: value
            for item, value, own in zip(self.binder.graph_inputs, values, self.binder.bound_values(), strict=True)
            if item["kind"] in ("parameter", "buffer") and is_unset(own)
        }
        return torch.func.functional_call(model, tensors, (), arguments)

    def _check_plan(self) -> dict[int, list[tuple[Range, str]]]:
        """The sizes each built artifact is checked at (check_budget.py), by size."""
        singles = {u.start for u in self.done if u.is_single_size()}
        plan: dict[int, list[tuple[Range, str]]] = {}
        for unit, results in self.done.items():
            if unit.is_single_size():
                sizes = [unit.start] if unit.start <= self.check_cap else []
                if not sizes:
                    self.unchecked.add(unit.start)
            else:
                sizes = range_check_sizes(unit, singles, self.check_cap)
            for piece_digest, result in results.items():
                if not isinstance(result, ReusedUnit):  # a reused one was checked when it was built
                    for size in sizes:
                        plan.setdefault(size, []).append((unit, piece_digest))
        return plan

    def _self_check(
        self, names: dict[tuple[Range, str], str], artifacts: dict[str, Artifact], files: dict[str, bytes]
    ) -> None:
        """Run every stored artifact the way the loader will, next to Inductor's in-process
        result, at sizes it serves (within the budget); any difference means the export
        is wrong. One size's recorded inputs are held at a time."""
        by_digest = {p.digest: p for p in self.unique}
        loaded: dict[str, Any] = {}
        plan = self._check_plan()
        for size in sorted(plan):
            for unit, piece_digest in plan[size]:
                name = names[unit, piece_digest]
                if name not in loaded:
                    loaded[name] = artifact_call(files, artifacts[name], name[:12])
                piece = by_digest[piece_digest]
                run = piece_runner(loaded[name], piece.single_output)
                result = self.done[unit][piece_digest]
                assert isinstance(result, CompiledUnit)
                args = self.piece_inputs(size)[piece.name]
                ours = _run_checked(run, args, "the stored artifact", piece.name, unit, size)
                theirs = _run_checked(result.reference(), args, "Inductor's artifact", piece.name, unit, size)
                compare_outputs(ours, theirs, piece.name, unit, size)
                del ours, theirs
            self._recorded.pop(size, None)
        for size in sorted(self.unchecked):
            log.warning(
                "size %d is compiled but not self-checked: running it would hold about %.1f GiB, over the "
                "self-check's budget (AOTCACHE_CHECK_BYTES, default 1 GiB)",
                size,
                self.check_memory.bytes_at(size) / 2**30,
            )


def empty_at(value: Any, symbol: Any, size: int) -> Any:
    """An uninitialised tensor of a traced placeholder's layout at this size (the size
    itself for a size placeholder)."""
    if not isinstance(value, torch.Tensor):
        return size

    shape = [dim_at(d, symbol, size) for d in value.shape]
    stride = [dim_at(d, symbol, size) for d in value.stride()]
    return torch.empty_strided(shape, stride, dtype=value.dtype, device=value.device)


def _detached(compile_one: Callable[[Range, Any], CompiledUnit], unit: Range, piece: Any) -> CompiledUnit:
    """A worker's task: compile one unit and send back what pickles."""
    return compile_one(unit, piece).detached()


SELF_CHECK_HINT = (
    "the likely cause is a custom op whose fake (meta) implementation promises other shapes, strides or dtypes "
    "than the op returns; check each custom op with torch.library.opcheck"
)


def _run_checked(run: Callable[..., Any], args: list[Any], what: str, piece: str, unit: Range, size: int) -> Any:
    """Run an artifact for the self-check; a failure names the piece, unit and size."""
    try:
        with torch.no_grad():
            return run(*args)
    except Exception as exc:
        message = (str(exc).strip().splitlines() or [""])[0][:300]
        raise CompileError(
            f"self-check failed: running {what} of {piece} ({unit_label(unit)}) at size {size} raised "
            f"{type(exc).__name__}: {message}",
            hint=SELF_CHECK_HINT,
        ) from exc


def store_artifact(result: CompiledUnit | ReusedUnit, files: dict[str, bytes], artifacts: dict[str, Artifact]) -> str:
    """Add a compiled (or reused) unit to the entry's files in its format,
    content-addressed, and return the artifact's name (the sha256 of what identifies it)."""
    if isinstance(result, ReusedUnit):
        files.update(result.files)
        artifacts.setdefault(result.name, result.record)
        return result.name
    if result.native is None:
        data = _inductor_bytes(result)
        name = hashlib.sha256(data).hexdigest()
        files[f"artifacts/{name}.bin"] = data
        launch = result.triton_launch or {}
        dynamic = launch.get("dynamic_launch")
        artifacts.setdefault(
            name,
            Artifact(
                INDUCTOR,
                result.guards,
                binary=f"artifacts/{name}.bin",
                device_types=tuple(result.device_types),
                triton_kernels=launch.get("triton_kernels"),
                dynamic_launch=tuple(dynamic) if dynamic is not None else None,
                partitions=result.partitions,
            ),
        )
        return name
    kernels = {}
    for source_digest, library in sorted(result.native.kernels.items()):
        data = library_bytes(library)
        rel = f"kernels/{hashlib.sha256(data).hexdigest()}.so"
        files[rel] = data
        kernels[source_digest] = rel
    wrapper = result.native.wrapper.encode()
    name = hashlib.sha256(wrapper).hexdigest()
    files[f"artifacts/{name}.py"] = wrapper
    artifacts.setdefault(name, Artifact(NATIVE, result.guards, wrapper=f"artifacts/{name}.py", kernels=kernels))
    return name


def _inductor_bytes(result: CompiledUnit) -> bytes:
    """torch's CompiledArtifact in its binary format (as a worker saved it, if it did)."""
    return result.saved if result.saved is not None else save_artifact(result.artifact, result.unit)


def compare_outputs(ours: Any, theirs: Any, piece: str, unit: Range, size: int) -> None:
    ours_list = [ours] if isinstance(ours, torch.Tensor) else list(ours)
    theirs_list = [theirs] if isinstance(theirs, torch.Tensor) else list(theirs)
    try:
        torch.testing.assert_close(ours_list, theirs_list, rtol=1e-6, atol=1e-6)
    except AssertionError as exc:
        raise CompileError(
            f"self-check failed: the stored artifact of {piece} ({unit_label(unit)}) differs from Inductor's "
            f"result at size {size}: {str(exc).splitlines()[0]}"
        ) from None
