"""An entry's contents: split the captured graph, compile its units, write every file
into the staging dir, and build the manifest that lists them (the one place a manifest
is assembled)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import aotcache.envs as envs
from aotcache.configuration import CompilationConfig
from aotcache.errors import ConfigError
from aotcache.formats import NATIVE
from aotcache.key import elfdeps
from aotcache.key.env import thread_count
from aotcache.key.factors import EntryKey
from aotcache.key.identity import model_device, model_device_type, model_signature
from aotcache.key.sources import SourceFile
from aotcache.progress import Progress
from aotcache.store.atomic import write_file
from aotcache.store.manifest import FileRecord, Manifest
from aotcache.store.records import Piece, Unit
from aotcache.version import __version__

from . import _torch_compat as compat
from .capture import Capture
from .parallel import usable_jobs
from .reuse import ArtifactIndex, environment_confirmed, environment_facts
from .split import SplitGraph, module_source, split_graph
from .units import CompiledUnits, UnitCompiler

log = logging.getLogger("aotcache.precompile")


def build_entry(
    model: torch.nn.Module,
    config: CompilationConfig,
    captured: Capture,
    traced: list[SourceFile],
    key: EntryKey,
    inputs_at: Callable[[int], dict[str, Any]],
    staging: Path,
    progress: Progress,
    seconds: dict[str, float],
    index: ArtifactIndex | None = None,
    jobs: int = 1,
) -> tuple[Manifest, dict[str, Any]]:
    """Compile (or reuse, through `index`) everything the entry holds, write its files
    into `staging`, and return its manifest (not yet written) and the facts of this
    build (see build_facts), which stay out of the entry's bytes."""
    # Under use_inductor_graph_partition the graph stays whole: Inductor partitions it.
    split = split_graph(captured.graph, [] if config.use_inductor_graph_partition else config.splitting_ops)
    start = time.perf_counter()
    jobs = usable_jobs(jobs, model_device_type(model))
    build = _EntryBuild(model, config, captured, split, inputs_at, progress, index, jobs)
    files, pieces, result, environment = build.compile()
    seconds["compile"] = time.perf_counter() - start
    for rel, data in sorted(files.items()):
        write_file(staging / rel, data, point="kernel-write" if rel.startswith("kernels/") else None)
    native_kernels = any(a.format == NATIVE for a in result.artifacts.values())
    recorded = recorded_build_facts(environment, native_kernels, model)
    recorded["runtime_versions"] = elfdeps.merge(
        elfdeps.required_versions(data) for rel, data in files.items() if rel.startswith("kernels/")
    )
    manifest = Manifest(
        entry_id=key.entry_id,
        tool_version=__version__,
        created=source_date(),
        lookup=key.lookup,
        build=key.build,
        recorded=recorded,
        config=portable_config(config),
        model=model_signature(model),
        input_spec=captured.input_spec.to_json(),
        graph_inputs=[item.to_json() for item in captured.inputs],
        output_spec=captured.output_spec,
        output_dims=captured.output_dims or [],
        sources=[s.to_json() for s in traced],
        stitch="graph.py",
        pieces=pieces,
        units=result.unit_records,
        artifacts=result.artifacts,
        files={rel: FileRecord(hashlib.sha256(data).hexdigest(), len(data)) for rel, data in files.items()},
        stats=_stats(split, result),
        unit_keys=result.unit_keys,
        traced_state=captured.state,
    )
    return manifest, build_facts(result, seconds)


@dataclass
class _EntryBuild:
    model: torch.nn.Module
    config: CompilationConfig
    captured: Capture
    split: SplitGraph
    inputs_at: Callable[[int], dict[str, Any]]
    progress: Progress
    index: ArtifactIndex | None
    jobs: int

    @property
    def compiled(self) -> bool:
        return self.config.backend == "inductor"

    def compile(self) -> tuple[dict[str, bytes], dict[str, dict[str, Any]], CompiledUnits, dict[str, Any]]:
        """The entry's files, piece records, units, and the build environment their keys
        name: the vector ISA predicted (reuse.environment_facts); where a compile ran
        Inductor's probes and they picked another, everything is looked up and built
        again with theirs."""
        device = model_device(self.model)
        environment = environment_facts(device) if self.compiled else {}
        files, pieces, result = self._units(environment)
        if self.compiled and not environment_confirmed(environment):
            log.warning(
                "Inductor's probes picked vector ISA %s, not %s (the best this CPU lists): every unit is looked up "
                "and built again with it",
                compat.vec_isa()["vec_isa"],
                environment["vec_isa"]["vec_isa"],
            )
            environment = environment_facts(device)  # probed now: the real answer
            files, pieces, result = self._units(environment)
        return files, pieces, result, environment

    def _units(self, environment: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, dict[str, Any]], CompiledUnits]:
        files: dict[str, bytes] = {"graph.py": module_source(self.split.stitch).encode()}
        pieces = _piece_records(self.split, self.compiled, files)
        units = list(self.config.get_compile_units())
        if not self.compiled:
            return files, pieces, CompiledUnits([Unit(u.start, u.end) for u in units])
        compiler = UnitCompiler(
            self.model,
            self.config,
            self.captured,
            self.split,
            self.inputs_at,
            self.progress,
            self.index,
            environment,
            self.jobs,
        )
        return files, pieces, compiler.compile_all(units, files)


def _piece_records(split: SplitGraph, compiled: bool, files: dict[str, bytes]) -> dict[str, Piece]:
    pieces: dict[str, Piece] = {}
    for piece in split.pieces:
        code_path = f"pieces/{piece.digest}.py"
        files[code_path] = module_source(piece.graph).encode()
        kind = "splitting_op" if piece.splitting_op else ("compiled" if compiled else "eager")
        pieces[piece.name] = Piece(kind, piece.digest, code_path, piece.single_output, piece.splitting_op)
    return pieces


def _stats(split: SplitGraph, result: CompiledUnits) -> dict[str, Any]:
    """What the entry is made of: the same for every build of the same inputs."""
    return {
        "pieces_total": len(split.compiled_pieces()),
        "pieces_unique": len(split.unique_pieces()),
        "splitting_op_pieces": len(split.pieces) - len(split.compiled_pieces()),
        "added_sizes": result.added_sizes,
        "refused_sizes": result.refused_sizes,
    }


def build_facts(result: CompiledUnits, seconds: dict[str, float]) -> dict[str, Any]:
    """How this build went: where each unit came from and how long it took. Two runners
    that build the same entry (one compiling, one reusing from a remote) write the same
    bytes, so none of this is in the manifest; `precompile --json` reports it."""
    return {
        "units_compiled": result.compiled,
        "units_reused": result.reused,
        "units_reused_remote": result.reused_remote,
        "bytes_fetched": result.bytes_fetched,
        "units_deduplicated": result.deduplicated,
        "units_compiled_in_workers": result.in_workers,
        "worker_processes": result.workers,
        "unchecked_sizes": result.unchecked_sizes,
        "check_weights_bytes": result.check_weights_bytes,
    }


# Config fields that name places on the build host: no entry records them (nothing that
# loads an entry reads them, and two runners must write the same bytes).
HOST_PATH_FIELDS = ("cache_dir", "debug_dump_path")


def portable_config(config: CompilationConfig) -> dict[str, Any]:
    """The config as the manifest records it: without the build host's paths."""
    return {**config.to_dict(), **dict.fromkeys(HOST_PATH_FIELDS)}


SOURCE_DATE_EPOCH = envs.SOURCE_DATE_EPOCH


def source_date() -> str | None:
    """The manifest's `created`: SOURCE_DATE_EPOCH (reproducible-builds.org) as an ISO
    date, or None without it, so that two builds of the same inputs are the same bytes."""
    value = envs.text(SOURCE_DATE_EPOCH)
    if not value:
        return None
    try:
        return datetime.fromtimestamp(int(value), UTC).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):
        raise ConfigError(SOURCE_DATE_EPOCH, value, "seconds since 1970 as an integer") from None


def march() -> str:
    """The -march Inductor compiles kernels for (see _torch_compat.cpp_march)."""
    return compat.cpp_march()


def recorded_build_facts(environment: dict[str, Any], native_kernels: bool, model: torch.nn.Module) -> dict[str, Any]:
    """What the build host knew that a serving host cannot compute without a compiler
    (`environment`: reuse.environment_facts() of a compiled build, else empty).
    `kernels`: the entry holds native kernel libraries, which the host must be able to run."""
    recorded: dict[str, Any] = {
        "device_type": model_device_type(model),
        "threads": thread_count(),
        "kernels": native_kernels,
        "march": march(),
        "vec_isa": None,
        "vec_isa_flags": "",
        "cpu_flags": [],
    }
    if recorded["device_type"] == "cuda":  # informational: kernels depend on the capability, which is keyed
        recorded["cuda_device_name"] = torch.cuda.get_device_name(model_device(model))
    if environment:
        recorded.update(environment["vec_isa"])
        for name in ("cpu_flags", "compiler", "torch_key", "inductor_config"):
            recorded[name] = environment[name]
    return recorded
