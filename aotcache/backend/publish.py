"""The build step of a precompile: the entry of a traced key, built in a staging dir and
published by one rename under a per-entry lock; a valid entry already there (or built
by another process while this one waited for the lock) is a hit and nothing is built."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from aotcache.compilation_counter import counters
from aotcache.configuration import CompilationConfig
from aotcache.errors import CacheDirError, CacheMiss
from aotcache.progress import Progress
from aotcache.store import signing
from aotcache.store.atomic import cleanup_on_error, is_disk_full, write_file
from aotcache.store.checks import OpenedEntry, open_entry
from aotcache.store.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from aotcache.store.root import CacheRoot, held, staging_is_abandoned
from aotcache.target import portable_target

from . import _torch_compat as compat
from .entry import build_entry
from .result import PrecompileResult
from .reuse import ArtifactIndex
from .tracing import TraceArguments, Traced
from .vec_isa_memo import remembered_vec_isa

if TYPE_CHECKING:
    from aotcache.fleet.unit_reuse import RemoteArtifacts

log = logging.getLogger("aotcache.precompile")


@dataclass(frozen=True)
class Build:
    """One precompile's state between the trace and the publish."""

    model: torch.nn.Module
    config: CompilationConfig
    root: CacheRoot
    traced: Traced
    arguments: TraceArguments
    sign_key: signing.Key | None
    progress: Progress
    origin: str | None
    started: float
    force: bool
    jobs: int
    remote: RemoteArtifacts | None
    part_of: str | None
    seconds: dict[str, float] = field(default_factory=dict)

    def result(
        self, path: Path, hit: bool, manifest: Manifest, build: dict[str, Any] | None = None
    ) -> PrecompileResult:
        self.seconds["total"] = time.perf_counter() - self.started
        return PrecompileResult(self.traced.key.entry_id, path, hit, manifest, self.seconds, build or {})


def build_unless_present(build: Build) -> PrecompileResult:
    """The entry of the build's key: the valid one present (also when another process
    built it while this one waited for its lock), else built and published under that lock."""
    root, entry_id, sign_key = build.root, build.traced.key.entry_id, build.sign_key
    said: set[str] = set()  # why an existing entry is not reused: said once, not again under the lock
    if not build.force and (hit := existing(root, entry_id, sign_key, said)) is not None:
        return build.result(hit.path, True, hit.manifest)
    waited = time.perf_counter()
    with held(root.lock(entry_id), build.progress.waiting, "builds the same entry"):
        build.seconds["lock_wait"] = time.perf_counter() - waited
        if not build.force and (hit := existing(root, entry_id, sign_key, said)) is not None:
            log.info("another process built entry %s while we waited; reusing it", entry_id)
            return build.result(hit.path, True, hit.manifest)
        path, manifest, facts = _build_and_publish(build)
    counters.entries_saved += 1
    _warn_refused(build.traced.captured.model_name, manifest)
    return build.result(path, False, manifest, facts)


def _build_and_publish(build: Build) -> tuple[Path, Manifest, dict[str, Any]]:
    root, entry_id = build.root, build.traced.key.entry_id
    _sweep_abandoned_builds(root, entry_id)
    staging = root.new_staging_dir(entry_id)
    try:
        with cleanup_on_error(staging):
            index = ArtifactIndex(root, build.sign_key, reuse=not build.force, remote=build.remote)
            manifest, facts = _built(build, staging, index)
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


def _built(build: Build, staging: Path, index: ArtifactIndex) -> tuple[Manifest, dict[str, Any]]:
    traced = build.traced
    with remembered_vec_isa(build.root), compat.reproducible_build_paths():
        return build_entry(
            build.model,
            build.config,
            traced.captured,
            traced.sources,
            traced.key,
            build.arguments.inputs_at,
            staging,
            build.progress,
            build.seconds,
            index,
            build.jobs,
        )


def _sweep_abandoned_builds(root: CacheRoot, entry_id: str) -> None:
    """Remove what killed builds of this entry left in staging. Called under the entry's
    lock, so no live builder of it can own one; and only items whose process is gone
    (the pid in the name) are removed."""
    for path in root.staging_dirs():
        if path.name.startswith(entry_id + ".") and staging_is_abandoned(path):
            _, error = root.remove_leftover(path)
            if error is None:
                log.info("removed %s, left by a build of this entry that was killed", path.name)


def existing(
    root: CacheRoot, entry_id: str, sign_key: signing.Key | None, said: set[str] | None = None
) -> OpenedEntry | None:
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
        why = exc.message
        if said is None or why not in said:
            log.warning("existing entry %s is not reused (%s); it is built again and replaced", entry_id, why)
        if said is not None:
            said.add(why)
        return None


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
