"""precompile: trace once, build the entry (backend/entry.py), and publish it atomically
under a per-entry lock; a valid existing entry is a hit and nothing is compiled."""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from aotcache.config import CompilationConfig
from aotcache.counters import counters
from aotcache.custom_op import bind_custom_ops
from aotcache.errors import CacheDirError, CacheMiss, ConfigError, printable
from aotcache.key import sources as sources_mod
from aotcache.key.factors import EntryKey, Factor, digest
from aotcache.key.lookup import lookup_factors
from aotcache.progress import Progress, logged_progress
from aotcache.serve.inputs import (
    DEFAULT_TRACE_SIZE,
    InputSpec,
    example_arguments,
    infer_dynamic_dims,
    normalize_dynamic_dims,
)
from aotcache.store import signing
from aotcache.store.atomic import cleanup_on_error, is_disk_full, write_file
from aotcache.store.checks import OpenedEntry, open_entry
from aotcache.store.failpoints import failpoint
from aotcache.store.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from aotcache.store.root import CacheRoot, held, resolve_cache_dir, size_on_disk
from aotcache.target import portable_target

from . import _torch_compat as compat
from . import inductor_passes, unchanged
from .capture import Capture, capture
from .entry import build_entry, march, source_date
from .parallel import available_cores
from .reuse import ArtifactIndex
from .split import unused_splitting_ops
from .vec_isa_memo import remembered_vec_isa

if TYPE_CHECKING:
    from aotcache.fleet.remote import Remote
    from aotcache.fleet.unit_reuse import RemoteArtifacts

log = logging.getLogger("aotcache.precompile")

ExampleInputs = Callable[[int], Any] | tuple[Any, ...] | list[Any] | dict[str, Any]


@dataclass
class PrecompileResult:
    entry_id: str
    path: Path
    hit: bool
    manifest: Manifest
    seconds: dict[str, float] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)  # entry.build_facts of a build; empty on a hit
    remote_trust: str | None = None  # what a remote was trusted with (None: no remote)

    @property
    def summary(self) -> dict[str, Any]:
        """What `precompile --json` prints (schema aotcache.precompile/2). A unit is one
        unique piece for one size or range: units = units_compiled + units_shared +
        units_reused (a hit builds nothing); units_reused_remote of those reused came
        from the remote, with bytes_fetched downloaded."""
        stats, build = self.manifest.stats, self.build
        served = [u for u in self.manifest.units if "refused" not in u]
        return {
            "entry": self.entry_id,
            "path": str(self.path),
            "hit": self.hit,
            "model": self.manifest.model_class,
            "signed": (self.path / SIGNATURE_NAME).is_file(),
            "pieces_total": stats.get("pieces_total"),
            "pieces_unique": stats.get("pieces_unique"),
            "sizes_and_ranges": len(served),
            "units": len(served) * (stats.get("pieces_unique") or 0),
            "units_compiled": build.get("units_compiled", 0),
            "units_shared": build.get("units_deduplicated", 0),
            "units_reused": build.get("units_reused", 0),
            "units_reused_remote": build.get("units_reused_remote", 0),
            "bytes_fetched": build.get("bytes_fetched", 0),
            "units_compiled_in_workers": build.get("units_compiled_in_workers", 0),
            "worker_processes": build.get("worker_processes", 0),
            "artifacts": len(self.manifest.artifacts),
            "bytes": size_on_disk(self.path),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "added_sizes": stats.get("added_sizes", []),
            "refused_sizes": stats.get("refused_sizes", []),
            "remote_trust": self.remote_trust,
            **self._graph_partitions(),
        }

    def _graph_partitions(self) -> dict[str, Any]:
        """Under use_inductor_graph_partition: the partitions of each artifact's Inductor
        graph, in artifact order (None where the format keeps no readable wrapper)."""
        if not self.manifest.config.get("use_inductor_graph_partition"):
            return {}
        counts = []
        for name in sorted(self.manifest.artifacts):
            wrapper = self.manifest.artifacts[name].get("wrapper")
            source = (self.path / wrapper).read_text() if wrapper else ""
            counts.append(compat.inductor_partition_count(source))
        return {"inductor_partitions": counts}


@dataclass
class _Build:
    """One precompile's state between the trace and the publish."""

    model: torch.nn.Module
    config: CompilationConfig
    root: CacheRoot
    captured: Capture
    traced: list[sources_mod.SourceFile]
    key: EntryKey
    inputs_at: Callable[[int], dict[str, Any]]
    sign_key: signing.Key | None
    progress: Progress
    origin: str | None = None
    started: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    force: bool = False
    jobs: int = 1
    remote: RemoteArtifacts | None = None
    part_of: str | None = None

    def result(
        self, path: Path, hit: bool, manifest: Manifest, build: dict[str, Any] | None = None
    ) -> PrecompileResult:
        self.seconds["total"] = time.perf_counter() - self.started
        return PrecompileResult(self.key.entry_id, path, hit, manifest, self.seconds, build or {})


def precompile(
    model: torch.nn.Module,
    config: CompilationConfig,
    example_inputs: ExampleInputs,
    *,
    dynamic_arg_dims: dict[str, Any] | None = None,
    mark_unbacked_dims: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    strict: bool = False,
    sign_key: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    origin: str | None = None,
    jobs: int | None = None,
    remote: str | Remote | None = None,
    insecure: bool = False,
    part_of: str | None = None,
    trust_unsigned_remote: bool = False,
) -> PrecompileResult:
    """Build (or reuse) the entry for `model` and `config`. `origin` is the TARGET it
    came from, recorded so that `verify KEY --run` can rebuild the model. `strict` turns
    warnings about the input (a splitting op the graph never calls) into ConfigError.
    `jobs`: processes compiling units (default: the cores available; the artifacts are
    the same bytes whatever it is). `remote` (a URL or an open remote): where the entry
    (no source changed) and units this cache dir lacks are looked up before they are
    built (see fleet/unit_reuse.py), but only from entries signed by `sign_key`, else by
    the trusted key (AOTCACHE_TRUSTED_KEY); a build with neither takes nothing from it
    unless `trust_unsigned_remote` (a warning says so either way). `part_of`:
    "Model.path" of a model served as parts (backend/parts.py), recorded."""
    if jobs is not None and jobs < 1:
        raise ConfigError("jobs", jobs, "a positive number of worker processes")
    started = time.perf_counter()
    source_date()  # a bad SOURCE_DATE_EPOCH fails now, not after the compile
    root = CacheRoot(resolve_cache_dir(cache_dir, config.cache_dir))
    root.ensure_writable()
    key_for_signing = signing.read_key(sign_key) if sign_key else None
    remote_artifacts, remote_trust = _remote_artifacts(remote, insecure, key_for_signing, trust_unsigned_remote)
    progress = progress if progress is not None else logged_progress()
    passes = inductor_passes.resolve(config)
    # CustomOp layers run what the config's rules choose, in the trace and in every eager
    # run beside it; every compile runs with the config's Inductor passes.
    extra = _extra_build_factors(passes, bind_custom_ops(model, config), part_of)
    arguments = _TraceArguments.of(model, config, example_inputs, dynamic_arg_dims)
    if not force and (same := _unchanged(root, model, config, arguments, extra, key_for_signing, remote_artifacts)):
        seconds = {"total": time.perf_counter() - started}
        hit = PrecompileResult(same.entry_id, same.path, True, same.manifest, seconds, remote_trust=remote_trust)
        return _filled_in(config, hit)
    with compat.inductor_settings(passes.settings):
        captured, traced, key = _trace(model, config, arguments, mark_unbacked_dims, progress, passes.files, extra)
        _check_splitting_ops(captured, config, strict)
        build = _Build(model, config, root, captured, traced, key, arguments.inputs_at, key_for_signing, progress)
        build.origin, build.started, build.seconds = origin, started, {"trace": captured.seconds}
        build.force, build.jobs, build.remote = force, jobs or available_cores(), remote_artifacts
        build.part_of = part_of
        result = _build_unless_present(build)
        result.remote_trust = remote_trust
        return _filled_in(config, result)


def _filled_in(config: CompilationConfig, result: PrecompileResult) -> PrecompileResult:
    """vLLM's run-time fields: the entry's directory, and the seconds spent tracing and
    compiling added to compilation_time."""
    config.local_cache_dir = str(result.path)
    config.compilation_time += sum(result.seconds.get(stage, 0.0) for stage in ("trace", "compile"))
    return result


def _build_unless_present(build: _Build) -> PrecompileResult:
    """The entry of build.key: the valid one present (also when another process built
    it while this one waited for its lock), else built and published under that lock."""
    root, entry_id, sign_key = build.root, build.key.entry_id, build.sign_key
    if not build.force and (hit := _existing(root, entry_id, sign_key)) is not None:
        return build.result(hit.path, True, hit.manifest)
    waited = time.perf_counter()
    with held(root.lock(entry_id), build.progress.waiting, "builds the same entry"):
        build.seconds["lock_wait"] = time.perf_counter() - waited
        if not build.force and (hit := _existing(root, entry_id, sign_key)) is not None:
            log.info("another process built entry %s while we waited; reusing it", entry_id)
            return build.result(hit.path, True, hit.manifest)
        path, manifest, facts = _build_and_publish(build)
    counters.entries_saved += 1
    _warn_refused(build.captured.model_name, manifest)
    return build.result(path, False, manifest, facts)


def _remote_artifacts(
    remote: str | Remote | None, insecure: bool, sign_key: signing.Key | None, trust_unsigned: bool
) -> tuple[RemoteArtifacts | None, str | None]:
    """The remote entries and units are taken from, and what they are trusted with. A
    build that signs takes only entries signed by its own key; otherwise one with a
    trusted key (AOTCACHE_TRUSTED_KEY) only entries it signed. A build with neither
    takes nothing: an unsigned remote entry is code that anyone who can write the remote
    chose, and it would run in this build's self-check and in every replica, unless the
    build says `trust_unsigned` (--trust-unsigned-remote)."""
    if remote is None or remote == "":
        return None, None
    from aotcache.fleet.remote import open_remote
    from aotcache.fleet.unit_reuse import RemoteArtifacts

    url = printable(remote if isinstance(remote, str) else remote.url)
    if sign_key is not None:
        check, trust = signing.checker(sign_key), "signed by the build's key"
    elif (trusted := signing.signature_checker()) is not None:
        check, trust = trusted, "signed by the trusted key"
    elif trust_unsigned:
        check, trust = None, "unsigned (--trust-unsigned-remote)"
        log.warning(
            "remote %s: its entries and units are taken unsigned (--trust-unsigned-remote): whoever can write the "
            "remote can put code into this build and every replica that loads it",
            url,
        )
    else:
        log.warning(
            "remote %s is not used: this build neither signs (--sign-key) nor has a trusted key "
            "(AOTCACHE_TRUSTED_KEY), and an unsigned remote entry is code anyone who can write the remote chose; "
            "everything is built here (--trust-unsigned-remote takes unsigned entries anyway)",
            url,
        )
        return None, "not used: unsigned build (--sign-key, AOTCACHE_TRUSTED_KEY or --trust-unsigned-remote)"
    opened = open_remote(remote, insecure=insecure) if isinstance(remote, str) else remote
    return RemoteArtifacts(opened, check), trust


def _warn_refused(model_name: str, manifest: Manifest) -> None:
    refused = manifest.stats.get("refused_sizes") or []
    if refused:
        log.warning(
            "%s.forward takes another path at sizes %s than at the size it was traced at (it branches on the size): "
            "the entry refuses them at serve time instead of computing them wrong; make forward independent of "
            "the size",
            model_name,
            refused,
        )


@dataclass
class _TraceArguments:
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
    ) -> _TraceArguments:
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


def _unchanged(
    root: CacheRoot,
    model: torch.nn.Module,
    config: CompilationConfig,
    arguments: _TraceArguments,
    extra: list[Factor],
    sign_key: signing.Key | None,
    remote: RemoteArtifacts | None,
) -> OpenedEntry | None:
    """The entry this build would make, found before the trace (backend/unchanged.py)."""
    probe = unchanged.Probe.of(model, config, arguments.spec.to_json(), compat.cpp_march_unimported(), extra)
    found = unchanged.local_entry(root, probe, sign_key)
    if found is None and remote is not None:
        found = unchanged.remote_entry(root, remote, probe)
    if found is not None:
        log.info("entry %s: every traced source is unchanged; nothing traced or compiled", found.entry_id)
    return found


def _trace(
    model: torch.nn.Module,
    config: CompilationConfig,
    arguments: _TraceArguments,
    mark_unbacked_dims: dict[str, Any] | None,
    progress: Progress,
    pass_files: set[str],
    extra: list[Factor],
) -> tuple[Capture, list[sources_mod.SourceFile], EntryKey]:
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
    return captured, traced, EntryKey(lookup_factors(config, model), build)


def _extra_build_factors(
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


def _check_splitting_ops(captured: Capture, config: CompilationConfig, strict: bool) -> None:
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


def _build_and_publish(build: _Build) -> tuple[Path, Manifest, dict[str, Any]]:
    root, entry_id = build.root, build.key.entry_id
    staging = root.new_staging_dir(entry_id)
    try:
        with cleanup_on_error(staging):
            index = ArtifactIndex(root, build.sign_key, reuse=not build.force, remote=build.remote)
            with remembered_vec_isa(root), compat.reproducible_build_paths():
                manifest, facts = build_entry(
                    build.model,
                    build.config,
                    build.captured,
                    build.traced,
                    build.key,
                    build.inputs_at,
                    staging,
                    build.progress,
                    build.seconds,
                    index,
                    build.jobs,
                )
            manifest.recorded["target"] = portable_target(build.origin) if build.origin else None
            if build.part_of:
                manifest.recorded["part_of"] = build.part_of
            manifest_bytes = manifest.to_bytes()
            write_file(staging / MANIFEST_NAME, manifest_bytes, point="manifest-write")
            if build.sign_key is not None:
                signature = signing.sign(manifest_bytes, build.sign_key)
                write_file(staging / SIGNATURE_NAME, signature, point="signature-write")
            build.progress.stage("publish")
            path = root.publish(staging, entry_id)
        index.remember(manifest.unit_keys, entry_id)
        return path, manifest, facts
    except OSError as exc:
        if is_disk_full(exc):
            raise CacheDirError(
                f"cache dir {root.path} is full: {exc.strerror}",
                hint="free space or run `aotcache clear --max-size`",
            ) from exc
        raise CacheDirError(f"writing to cache dir {root.path} failed: {exc}") from exc


def _existing(root: CacheRoot, entry_id: str, sign_key: signing.Key | None) -> OpenedEntry | None:
    """The valid entry this build would produce, if there is one. With a signing key,
    only an entry already signed by that key counts: aotcache signs only what it built
    itself in this process, so an unsigned entry (which anyone with write access to the
    cache dir could have altered consistently) is built again and replaced, never signed."""
    path = root.entry_dir(entry_id)
    if not os.path.lexists(path):
        return None
    check = signing.checker(sign_key) if sign_key is not None else None
    try:
        return open_entry(path, verify_signature=check)
    except CacheMiss as exc:
        log.warning("existing entry %s is not reused (%s); building it again", entry_id, exc.one_line())
        return None
