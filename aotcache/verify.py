"""Checking an entry: structure, checksums, signature, environment, traced sources.

`open_entry` reads every file of an entry exactly once into memory and checks it; the
loader then runs only those verified bytes. `problems` runs every check and collects all
failures (for `verify` and `inspect-cache`); `open_entry` raises the first as a typed error.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import manifest as manifest_mod
from .env import ENV_FACTOR_PREFIXES, check_host_compatible, host_problems, lookup_env_factors
from .errors import (
    CacheMiss,
    CorruptEntry,
    Difference,
    EntryNotFound,
    IncompatibleEnvironment,
    StaleEntry,
)
from .key import Factor, explain
from .lookup import tool_factors
from .manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from .sources import SourceFile, changed


@dataclass
class OpenedEntry:
    path: Path
    manifest: Manifest
    blobs: dict[str, bytes] = field(default_factory=dict)
    signature: bytes | None = None

    @property
    def entry_id(self) -> str:
        return self.manifest.entry_id


def read_manifest(path: Path) -> tuple[Manifest, bytes]:
    """Parse an entry's manifest (checksum, format version, structure); no other file."""
    try:
        raw = _read_regular(path / MANIFEST_NAME)
    except FileNotFoundError:
        if not path.exists():
            raise EntryNotFound(f"entry {path.name} does not exist", entry_id=path.name) from None
        raise CorruptEntry(
            f"entry {path.name} has no manifest", entry_id=path.name, hint="run `aotcache clear --broken`"
        ) from None
    manifest = manifest_mod.parse(raw, path.name)
    if manifest.entry_id != path.name:
        raise CorruptEntry(
            f"entry {path.name} holds the manifest of entry {manifest.entry_id}",
            entry_id=path.name,
            hint="run `aotcache clear --broken`",
        )
    return manifest, raw


def _read_regular(path: Path) -> bytes:
    """Read a file, refusing symlinks and special files."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptEntry(f"{path.name} is not a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: O_NOFOLLOW met a symlink
            raise CorruptEntry(f"{path.name} is a symbolic link") from None
        raise
    finally:
        os.close(fd)


def file_problems(path: Path, manifest: Manifest, blobs: dict[str, bytes] | None = None) -> list[Difference]:
    """Every file that is missing, altered, unexpected, or not a plain file."""
    import hashlib

    problems: list[Difference] = []
    seen = set()
    for folder, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            full = Path(folder, name)
            rel = full.relative_to(path).as_posix()
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                problems.append(Difference(rel, "regular file", "symbolic link"))
            elif stat.S_ISREG(mode):
                seen.add(rel)
                if rel not in manifest.files and rel not in (MANIFEST_NAME, SIGNATURE_NAME):
                    problems.append(Difference(rel, "absent", "unexpected file"))
            elif not stat.S_ISDIR(mode):
                problems.append(Difference(rel, "regular file", "special file"))
    for rel, record in sorted(manifest.files.items()):
        if rel not in seen:
            problems.append(Difference(rel, f"{record.bytes} bytes", "missing"))
            continue
        try:
            data = _read_regular(path / rel)
        except (OSError, CorruptEntry) as exc:
            problems.append(Difference(rel, "readable", str(exc)))
            continue
        if len(data) != record.bytes:
            problems.append(Difference(rel, f"{record.bytes} bytes", f"{len(data)} bytes"))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != record.sha256:
            problems.append(Difference(rel, f"sha256 {record.sha256[:12]}", f"sha256 {digest[:12]}"))
            continue
        if blobs is not None:
            blobs[rel] = data
    return problems


def environment_problems(manifest: Manifest) -> list[Difference]:
    """Recorded environment factors that differ on this host (old -> new)."""
    recorded = [f for f in manifest.lookup if f.name.startswith(ENV_FACTOR_PREFIXES)]
    device_type = str(manifest.recorded.get("device_type", "cpu"))
    if device_type == "cuda" and not torch.cuda.is_available():
        return [Difference("device.type", "cuda", "no CUDA device on this host")]
    host: list[Factor] = tool_factors() + lookup_env_factors(device_type)
    names = {f.name for f in recorded}
    return explain(recorded, [f for f in host if f.name in names])


def source_problems(manifest: Manifest) -> list[Difference]:
    return changed([SourceFile(s["path"], s["sha256"]) for s in manifest.sources])


def open_entry(
    path: Path,
    *,
    check_env: bool = True,
    check_sources: bool = True,
    verify_signature: Callable[[Path, bytes], None] | None = None,
) -> OpenedEntry:
    """Read and check a whole entry; raise the typed error of the first problem found.
    Nothing of the entry has run when this returns or raises."""
    manifest, raw = read_manifest(path)
    entry_id = manifest.entry_id
    if verify_signature is not None:
        verify_signature(path, raw)
    blobs: dict[str, bytes] = {}
    diffs = file_problems(path, manifest, blobs)
    if diffs:
        raise CorruptEntry(
            f"entry {entry_id} is corrupt",
            differences=diffs,
            entry_id=entry_id,
            hint="run `aotcache clear --broken` and precompile again",
        )
    if check_env:
        diffs = environment_problems(manifest)
        if diffs:
            raise IncompatibleEnvironment(
                f"entry {entry_id} was built for another environment",
                differences=diffs,
                entry_id=entry_id,
                hint="precompile on a host with the same software, or use an entry built for this one",
            )
        check_host_compatible(manifest.recorded, entry_id)
    if check_sources:
        diffs = source_problems(manifest)
        if diffs:
            raise StaleEntry(
                f"entry {entry_id} is stale: traced source files changed",
                differences=diffs,
                entry_id=entry_id,
                hint="precompile again",
            )
    return OpenedEntry(path, manifest, blobs)


@dataclass
class Problem:
    check: str  # "manifest" | "signature" | "files" | "environment" | "sources"
    status: str  # the CacheMiss.reason it maps to
    message: str
    differences: list[Difference] = field(default_factory=list)


def problems(
    path: Path,
    *,
    verify_signature: Callable[[Path, bytes], None] | None = None,
    check_sources: bool = True,
) -> tuple[Manifest | None, list[Problem]]:
    """Run every check and collect every failure, for reports."""
    try:
        manifest, raw = read_manifest(path)
    except CacheMiss as exc:
        return None, [Problem("manifest", exc.reason, exc.message, exc.differences)]
    found: list[Problem] = []
    if verify_signature is not None:
        try:
            verify_signature(path, raw)
        except CacheMiss as exc:
            found.append(Problem("signature", exc.reason, exc.message, exc.differences))
    diffs = file_problems(path, manifest)
    if diffs:
        found.append(Problem("files", CorruptEntry.reason, "files differ from the manifest", diffs))
    diffs = environment_problems(manifest) + host_problems(manifest.recorded)
    if diffs:
        found.append(Problem("environment", IncompatibleEnvironment.reason, "built for another environment", diffs))
    if check_sources:
        diffs = source_problems(manifest)
        if diffs:
            found.append(Problem("sources", StaleEntry.reason, "traced source files changed", diffs))
    return manifest, found
