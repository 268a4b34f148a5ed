"""precompile: trace once, split, compile every unique piece for every range and size,
check each artifact against Inductor's own output, and publish the entry atomically."""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import torch

from aotcache import __version__, elfdeps, signing
from aotcache import sources as sources_mod
from aotcache.config import CompilationConfig, Range
from aotcache.counters import counters
from aotcache.env import host_cpu_flags, isa_flags, thread_count
from aotcache.errors import CacheDirError, CacheMiss, CompileError
from aotcache.failpoints import failpoint
from aotcache.identity import model_device_type, model_signature, resolve
from aotcache.inputs import (
    DEFAULT_TRACE_SIZE,
    InputSpec,
    example_arguments,
    infer_dynamic_dims,
    normalize_dynamic_dims,
)
from aotcache.key import EntryKey, Factor, digest
from aotcache.lookup import lookup_factors
from aotcache.manifest import MANIFEST_NAME, SIGNATURE_NAME, FileRecord, Manifest
from aotcache.runtime import artifact_call, piece_runner
from aotcache.store import CacheRoot, cleanup_on_error, is_disk_full, resolve_cache_dir, write_file
from aotcache.verify import open_entry

from . import _torch_compat as compat
from .capture import Capture, capture
from .compile import CompiledUnit, compile_unit, record_piece_inputs, sizes_failing_guards
from .split import SplitGraph, module_source, split_graph

log = logging.getLogger("aotcache.precompile")

ExampleInputs = Callable[[int], Any] | tuple[Any, ...] | list[Any] | dict[str, Any]
MAX_GUARD_SIZES = 64  # sizes a range may lose to shape guards before we give up


class Progress(Protocol):
    def stage(self, name: str) -> None: ...
    def units(self, total: int) -> None: ...
    def unit_done(self, label: str) -> None: ...


class _Silent:
    def stage(self, name: str) -> None:
        pass

    def units(self, total: int) -> None:
        pass

    def unit_done(self, label: str) -> None:
        pass


@dataclass
class PrecompileResult:
    entry_id: str
    path: Path
    hit: bool
    manifest: Manifest
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        stats = self.manifest.stats
        return {
            "entry": self.entry_id,
            "path": str(self.path),
            "hit": self.hit,
            "model": self.manifest.model_class,
            "pieces_total": stats.get("pieces_total"),
            "pieces_unique": stats.get("pieces_unique"),
            "units": len(self.manifest.units),
            "units_compiled": 0 if self.hit else stats.get("units_compiled"),
            "artifacts": len(self.manifest.artifacts),
            "bytes": self.manifest.total_bytes,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "added_sizes": stats.get("added_sizes", []),
        }


def precompile(
    model: torch.nn.Module,
    config: CompilationConfig,
    example_inputs: ExampleInputs,
    *,
    dynamic_arg_dims: dict[str, Any] | None = None,
    mark_unbacked_dims: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    sign_key: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    origin: str | None = None,
) -> PrecompileResult:
    """Build (or reuse) the entry for `model` and `config`. `origin` is the TARGET it
    came from, recorded so that `verify KEY --run` can rebuild the model."""
    progress = progress or _Silent()
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    root = CacheRoot(resolve_cache_dir(cache_dir, config.cache_dir))
    root.ensure_writable()
    key_for_signing = signing.read_key(sign_key) if sign_key else None
    model.eval()
    forward = type(model).forward
    if dynamic_arg_dims is None:
        dynamic_arg_dims = infer_dynamic_dims(forward)
    dims = normalize_dynamic_dims(dynamic_arg_dims, inspect.signature(forward), type(model).__qualname__)
    trace_arguments = example_arguments(model, example_inputs, None, None)
    spec = InputSpec.from_arguments(trace_arguments, dims)

    def inputs_at(size: int) -> dict[str, Any]:
        return example_arguments(model, example_inputs, size, spec)

    if trace_arguments[spec.size_arg].shape[spec.size_dim] < 2:  # Dynamo specialises sizes 0 and 1
        trace_arguments = inputs_at(max(2, min(DEFAULT_TRACE_SIZE, config.max_num_batched_tokens)))

    progress.stage("trace")
    captured = capture(model, (), trace_arguments, dynamic_arg_dims, config.splitting_ops, mark_unbacked_dims)
    counters.traces += 1
    failpoint("after-trace")
    seconds["trace"] = captured.seconds

    traced = sources_mod.record(captured.traced_files)
    lookup = lookup_factors(config, model)
    build = [
        Factor("sources", sources_mod.sources_digest(traced)),
        Factor("input_spec", digest(captured.input_spec.to_json())),
        Factor("march", _march()),
    ]
    key = EntryKey(lookup, build)
    entry_id = key.entry_id

    if not force:
        hit = _existing(root, entry_id, key_for_signing)
        if hit is not None:
            seconds["total"] = time.perf_counter() - started
            return PrecompileResult(entry_id, hit.path, True, hit.manifest, seconds)

    lock = root.lock(entry_id)
    waited = time.perf_counter()
    with lock:
        seconds["lock_wait"] = time.perf_counter() - waited
        if not force:
            hit = _existing(root, entry_id, key_for_signing)
            if hit is not None:
                log.info("another process built entry %s while we waited; reusing it", entry_id)
                seconds["total"] = time.perf_counter() - started
                return PrecompileResult(entry_id, hit.path, True, hit.manifest, seconds)
        staging = root.new_staging_dir(entry_id)
        try:
            with cleanup_on_error(staging):
                manifest = _build(model, config, captured, traced, key, inputs_at, staging, progress, seconds)
                manifest.recorded["target"] = origin
                manifest_bytes = manifest.to_bytes()
                write_file(staging / MANIFEST_NAME, manifest_bytes, point="manifest-write")
                if key_for_signing is not None:
                    write_file(staging / SIGNATURE_NAME, signing.sign(manifest_bytes, key_for_signing))
                progress.stage("publish")
                path = root.publish(staging, entry_id)
        except OSError as exc:
            if is_disk_full(exc):
                raise CacheDirError(
                    f"cache dir {root.path} is full: {exc.strerror}",
                    hint="free space or run `aotcache clear --max-size`",
                ) from exc
            raise CacheDirError(f"writing to cache dir {root.path} failed: {exc}") from exc
    counters.entries_saved += 1
    seconds["total"] = time.perf_counter() - started
    return PrecompileResult(entry_id, path, False, manifest, seconds)


def _existing(root: CacheRoot, entry_id: str, sign_key: signing.Key | None) -> Any:
    path = root.entry_dir(entry_id)
    if not path.exists():
        return None
    try:
        opened = open_entry(path)
    except CacheMiss as exc:
        log.warning("existing entry %s is unusable (%s); building it again", entry_id, exc.one_line())
        return None
    if sign_key is not None and not (path / SIGNATURE_NAME).exists():
        # Written beside the entry and renamed in, so no reader sees a partial file.
        raw = (path / MANIFEST_NAME).read_bytes()
        pending = root.staging / f".{entry_id}.{os.getpid()}.sig"
        write_file(pending, signing.sign(raw, sign_key))
        os.replace(pending, path / SIGNATURE_NAME)
    return opened


def _graph_values(captured: Capture, model: torch.nn.Module, arguments: dict[str, Any], size: int) -> list[Any]:
    values = []
    for item in captured.inputs:
        if item.kind == "size":
            values.append(size)
        elif item.kind == "arg":
            values.append(arguments[item.source])
        else:
            values.append(resolve(model, item.source))
    return values


def _build(
    model: torch.nn.Module,
    config: CompilationConfig,
    captured: Capture,
    traced: list[sources_mod.SourceFile],
    key: EntryKey,
    inputs_at: Callable[[int], dict[str, Any]],
    staging: Path,
    progress: Progress,
    seconds: dict[str, float],
) -> Manifest:
    split = split_graph(captured.graph, config.splitting_ops)
    compiled = config.backend == "inductor"
    unique = split.unique_pieces()
    units = list(config.get_compile_units())
    files: dict[str, bytes] = {}
    files["graph.py"] = module_source(split.stitch).encode()

    pieces: dict[str, dict[str, Any]] = {}
    for piece in split.pieces:
        code_path = f"pieces/{piece.digest}.py"
        files[code_path] = module_source(piece.graph).encode()
        kind = "splitting_op" if piece.splitting_op else ("compiled" if compiled else "eager")
        pieces[piece.name] = {
            "kind": kind,
            "digest": piece.digest,
            "code": code_path,
            "single_output": piece.single_output,
            "op": piece.splitting_op,
        }

    unit_records: list[dict[str, Any]] = []
    artifacts: dict[str, dict[str, Any]] = {}
    added_sizes: list[int] = []
    start = time.perf_counter()
    if compiled:
        unit_records, artifacts, added_sizes = _compile_all(
            model, config, captured, split, units, inputs_at, files, progress
        )
    else:
        unit_records = [{"range": [u.start, u.end], "artifacts": {}} for u in units]
    seconds["compile"] = time.perf_counter() - start

    for rel, data in sorted(files.items()):
        write_file(staging / rel, data, point="kernel-write" if rel.startswith("kernels/") else None)
    records = {rel: FileRecord(hashlib.sha256(data).hexdigest(), len(data)) for rel, data in files.items()}
    recorded = _recorded(compiled, model)
    recorded["runtime_versions"] = elfdeps.merge(
        elfdeps.required_versions(data) for rel, data in files.items() if rel.startswith("kernels/")
    )
    stats = {
        "trace_seconds": round(seconds.get("trace", 0.0), 3),
        "compile_seconds": round(seconds.get("compile", 0.0), 3),
        "pieces_total": len(split.compiled_pieces()),
        "pieces_unique": len(unique),
        "splitting_op_pieces": len(split.pieces) - len(split.compiled_pieces()),
        "units_compiled": sum(len(u["artifacts"]) for u in unit_records),
        "added_sizes": added_sizes,
    }
    return Manifest(
        entry_id=key.entry_id,
        tool_version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        lookup=key.lookup,
        build=key.build,
        recorded=recorded,
        config=config.to_dict(),
        model=model_signature(model),
        input_spec=captured.input_spec.to_json(),
        graph_inputs=[item.to_json() for item in captured.inputs],
        output_spec=captured.output_spec,
        output_dims=captured.output_dims or [],
        sources=[s.to_json() for s in traced],
        stitch="graph.py",
        pieces=pieces,
        units=unit_records,
        artifacts=artifacts,
        files=records,
        stats=stats,
    )


def _march() -> str:
    """The -march Inductor compiles kernels for (TORCHINDUCTOR_CPP_MARCH, else native)."""
    return os.environ.get("TORCHINDUCTOR_CPP_MARCH") or "native"


def _recorded(compiled: bool, model: torch.nn.Module) -> dict[str, Any]:
    """What the build host knew that a serving host cannot compute without a compiler."""
    recorded: dict[str, Any] = {
        "device_type": model_device_type(model),
        "threads": thread_count(),
        "kernels": compiled,
        "march": _march(),
        "vec_isa": None,
        "vec_isa_flags": "",
        "cpu_flags": [],
    }
    if compiled:
        recorded.update(compat.vec_isa())
        recorded["cpu_flags"] = isa_flags(host_cpu_flags())
        recorded["compiler"] = compat.compiler_identity()
        recorded["torch_key"] = compat.torch_key()
        recorded["inductor_config"] = compat.inductor_config_digest()
    return recorded


def _compile_all(
    model: torch.nn.Module,
    config: CompilationConfig,
    captured: Capture,
    split: SplitGraph,
    units: list[Range],
    inputs_at: Callable[[int], dict[str, Any]],
    files: dict[str, bytes],
    progress: Progress,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], list[int]]:
    unique = split.unique_pieces()
    wanted = {p.name for p in unique}
    recorded_inputs: dict[int, dict[str, list[Any]]] = {}

    def inputs_of(size: int) -> dict[str, list[Any]]:
        if size not in recorded_inputs:
            arguments = inputs_at(size)
            values = _graph_values(captured, model, arguments, size)
            recorded_inputs[size] = record_piece_inputs(split.stitch, values, wanted)
        return recorded_inputs[size]

    patches = config.inductor_compile_config
    done: dict[Range, dict[str, CompiledUnit]] = {}
    progress.units(len(unique) * len(units))

    def compile_for(unit: Range) -> None:
        done[unit] = {}
        for piece in unique:
            real = inputs_of(unit.start)[piece.name] if unit.is_single_size() else None
            result = compile_unit(piece.graph, piece.digest, unit, real, patches)
            counters.compiles += 1
            failpoint("after-first-compile")
            done[unit][piece.digest] = result
            progress.unit_done(f"{piece.name} {_unit_label(unit)}")

    for unit in units:
        compile_for(unit)

    # Sizes that a range's artifacts do not cover (their guards say e.g. size >= 2) get
    # a concrete compile of their own, so that the dispatcher never sends them there.
    extra: set[int] = set()
    singles = {u.start for u in units if u.is_single_size()}
    for unit in units:
        for result in done[unit].values():
            extra.update(s for s in sizes_failing_guards(result.guards, unit) if s not in singles)
    if len(extra) > MAX_GUARD_SIZES:
        raise CompileError(
            f"{len(extra)} sizes fail the compiled pieces' shape guards (e.g. {sorted(extra)[:5]})",
            hint="adjust compile_ranges_split_points or add compile_sizes",
        )
    added = sorted(extra)
    if added:
        progress.units(len(unique) * (len(units) + len(added)))
        for size in added:
            unit = Range(size, size)
            units.append(unit)
            compile_for(unit)

    artifacts: dict[str, dict[str, Any]] = {}
    unit_records = []
    for unit in units:
        names = {}
        for piece_digest, result in done[unit].items():
            name = _store_artifact(result, files, artifacts)
            names[piece_digest] = name
        unit_records.append(
            {
                "range": [unit.start, unit.end],
                "artifacts": names,
                "added_for_guards": unit.start in added and unit.is_single_size(),
            }
        )

    _self_check(split, done, artifacts, files, inputs_of)
    return unit_records, artifacts, added


def _unit_label(unit: Range) -> str:
    return f"size {unit.start}" if unit.is_single_size() else f"range {unit}"


def _store_artifact(result: CompiledUnit, files: dict[str, bytes], artifacts: dict[str, dict[str, Any]]) -> str:
    """Add an artifact and its kernels to the entry's files, content-addressed."""
    kernels = {}
    for source_digest, library in sorted(result.native.kernels.items()):
        data = Path(library).read_bytes()
        rel = f"kernels/{hashlib.sha256(data).hexdigest()}.so"
        files[rel] = data
        kernels[source_digest] = rel
    wrapper = result.native.wrapper.encode()
    name = hashlib.sha256(wrapper).hexdigest()
    files[f"artifacts/{name}.py"] = wrapper
    artifacts.setdefault(
        name,
        {
            "wrapper": f"artifacts/{name}.py",
            "kernels": kernels,
            "guards": result.guards,
            "extern_kernels": result.native.extern_kernels,
        },
    )
    return name


def _self_check(
    split: SplitGraph,
    done: dict[Range, dict[str, CompiledUnit]],
    artifacts: dict[str, dict[str, Any]],
    files: dict[str, bytes],
    inputs_of: Callable[[int], dict[str, list[Any]]],
) -> None:
    """Run every stored artifact the way the loader will, next to Inductor's in-process
    result, at the sizes it serves; any difference means the export is wrong."""
    singles = {u.start for u in done if u.is_single_size()}
    by_digest = {p.digest: p for p in split.unique_pieces()}
    loaded: dict[str, Any] = {}
    for unit, results in done.items():
        sizes = (
            [unit.start] if unit.is_single_size() else sorted({s for s in (unit.start, unit.end) if s not in singles})
        )
        for piece_digest, result in results.items():
            name = hashlib.sha256(result.native.wrapper.encode()).hexdigest()
            if name not in loaded:
                loaded[name] = artifact_call(files, artifacts[name], name[:12])
            piece = by_digest[piece_digest]
            run = piece_runner(loaded[name], piece.single_output)
            for size in sizes:
                args = inputs_of(size)[piece.name]
                with torch.no_grad():
                    ours = run(*args)
                    theirs = result.artifact(*args)
                _compare(ours, theirs, piece.name, unit, size)


def _compare(ours: Any, theirs: Any, piece: str, unit: Range, size: int) -> None:
    ours_list = [ours] if isinstance(ours, torch.Tensor) else list(ours)
    theirs_list = [theirs] if isinstance(theirs, torch.Tensor) else list(theirs)
    try:
        torch.testing.assert_close(ours_list, theirs_list, rtol=1e-6, atol=1e-6)
    except AssertionError as exc:
        raise CompileError(
            f"self-check failed: the stored artifact of {piece} ({_unit_label(unit)}) differs from Inductor's "
            f"result at size {size}: {str(exc).splitlines()[0]}"
        ) from None
