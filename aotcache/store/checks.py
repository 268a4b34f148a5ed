"""Checking an entry: structure, checksums, signature, environment, traced sources, and
(given the model) the state its trace read.

There is one pipeline of checks, `entry_problems`, a generator of typed problems.
`open_entry` (the loader's way in) reads every file of an entry exactly once into memory,
runs the pipeline and raises the first problem as a typed error; the loader then runs
only those verified bytes. `problems` (for `verify` and `inspect-cache`) collects all.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aotcache.errors import (
    CacheMiss,
    CorruptEntry,
    Difference,
    EntryNotFound,
    IncompatibleEnvironment,
    SignatureError,
    StaleEntry,
    UnsupportedFormat,
)
from aotcache.key.env import ENV_FACTOR_PREFIXES, host_problems, lookup_env_factors
from aotcache.key.factors import Factor, explain
from aotcache.key.lookup import tool_factors
from aotcache.key.sources import SourceCheck, SourceFile
from aotcache.key.sources import check as check_source_files
from aotcache.store.traced_state import problems as traced_state_problems

from . import manifest as manifest_mod
from . import safefs
from .manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest

MAX_MANIFEST_BYTES = 16 << 20  # far above any real manifest; a larger file is damage
MAX_SIGNATURE_BYTES = 4096

# verify_signature(entry_id, manifest bytes, manifest.sig bytes or None): raises SignatureError
SignatureCheck = Callable[[str, bytes, "bytes | None"], None]


@dataclass
class OpenedEntry:
    path: Path
    manifest: Manifest
    blobs: dict[str, bytes] = field(default_factory=dict)
    raw_manifest: bytes = b""  # the verified manifest.json and signature, as stored (push sends them)
    signature: bytes | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. traced sources not found from here

    @property
    def entry_id(self) -> str:
        return self.manifest.entry_id


@contextlib.contextmanager
def entry_dir(path: Path) -> Iterator[int]:
    """A descriptor of a real entry directory: a symlinked (or special) entry is
    corrupt and is never read through; a missing one is not found."""
    try:
        fd = safefs.open_dir(path)
    except FileNotFoundError:
        raise EntryNotFound(f"entry {path.name} does not exist", entry_id=path.name) from None
    except safefs.UnsafeFile as exc:
        raise CorruptEntry(f"entry {path.name} is {exc.why}", entry_id=path.name, hint=_HINT_CORRUPT) from None
    try:
        yield fd
    finally:
        os.close(fd)


def read_manifest(path: Path) -> tuple[Manifest, bytes]:
    """Parse an entry's manifest (checksum, format version, structure); no other file."""
    with entry_dir(path) as fd:
        return _read_manifest_at(path, fd)


def _read_manifest_at(path: Path, fd: int) -> tuple[Manifest, bytes]:
    try:
        raw = safefs.read_file(MANIFEST_NAME, fd, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise CorruptEntry(f"entry {path.name} has no manifest", entry_id=path.name, hint=_HINT_CORRUPT) from None
    except safefs.UnsafeFile as exc:
        raise CorruptEntry(f"entry {path.name}: {exc}", entry_id=path.name, hint=_HINT_CORRUPT) from None
    manifest = manifest_mod.parse(raw, path.name)
    if manifest.entry_id != path.name:
        raise CorruptEntry(
            f"entry {path.name} holds the manifest of entry {manifest.entry_id}",
            entry_id=path.name,
            hint=_HINT_CORRUPT,
        )
    return manifest, raw


def _listing(fd: int) -> Iterator[tuple[str, str]]:
    """(relative path, kind) of everything in an entry directory, links not followed."""
    for folder, dirs, files, folder_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
        for name in dirs + files:
            rel = posixpath.normpath(posixpath.join(folder, name))
            yield rel, safefs.kind_at(name, folder_fd)


def file_problems(fd: int, manifest: Manifest, blobs: dict[str, bytes] | None = None) -> list[Difference]:
    """Every file that is missing, altered, unexpected, or not a plain file."""
    problems: list[Difference] = []
    seen = set()
    for rel, kind in _listing(fd):
        if kind == safefs.REGULAR:
            seen.add(rel)
            if rel not in manifest.files and rel not in (MANIFEST_NAME, SIGNATURE_NAME):
                problems.append(Difference(rel, "absent", "unexpected file"))
        elif kind != safefs.DIRECTORY:
            problems.append(Difference(rel, "regular file", kind))
    for rel, record in sorted(manifest.files.items()):
        if rel not in seen:
            problems.append(Difference(rel, f"{record.bytes} bytes", "missing"))
            continue
        try:
            data = safefs.read_file(rel, fd, record.bytes)
        except safefs.UnsafeFile as exc:
            problems.append(Difference(rel, f"{record.bytes} bytes", exc.why))
            continue
        except OSError as exc:
            problems.append(Difference(rel, "readable", exc.strerror or str(exc)))
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


def _signature_bytes(fd: int) -> bytes | None:
    try:
        return safefs.read_file(SIGNATURE_NAME, fd, MAX_SIGNATURE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SignatureError(f"its signature file is unreadable ({exc})") from None


def environment_problems(manifest: Manifest) -> list[Difference]:
    """Recorded environment factors that differ on this host (old -> new)."""
    recorded = [f for f in manifest.lookup if f.name.startswith(ENV_FACTOR_PREFIXES)]
    device_type = str(manifest.recorded.get("device_type", "cpu"))
    if device_type == "cuda" and not torch.cuda.is_available():
        return [Difference("device.type", "cuda", "no CUDA device on this host")]
    index = next((f.value for f in recorded if f.name == "cuda.device_index"), None)
    if isinstance(index, int) and index >= torch.cuda.device_count():
        return [Difference("cuda.device_index", index, f"this host has {torch.cuda.device_count()} CUDA devices")]
    host: list[Factor] = tool_factors() + lookup_env_factors(device_type, index if isinstance(index, int) else None)
    names = {f.name for f in recorded}
    return explain(recorded, [f for f in host if f.name in names])


def check_sources(manifest: Manifest) -> SourceCheck:
    return check_source_files([SourceFile.from_json(s) for s in manifest.sources])


def source_problems(manifest: Manifest) -> list[Difference]:
    """Traced files found with other content (files not found are not problems)."""
    return check_sources(manifest).changed


# The typed error each problem status raises as.
_ERRORS: dict[str, type[CacheMiss]] = {
    error.reason: error
    for error in (CorruptEntry, StaleEntry, IncompatibleEnvironment, SignatureError, UnsupportedFormat, EntryNotFound)
}

CHECKS = ("manifest", "signature", "files", "environment", "sources", "state")


@dataclass
class Problem:
    """One failed check of an entry: which check, the status it maps to (a
    CacheMiss.reason), what is wrong, and each differing thing as old -> new."""

    check: str  # one of CHECKS
    status: str
    message: str
    differences: list[Difference] = field(default_factory=list)
    hint: str | None = None

    def error(self, entry_id: str) -> CacheMiss:
        """The typed error a load raises for this problem."""
        error = _ERRORS.get(self.status, CorruptEntry)
        return error(
            f"entry {entry_id}: {self.message}", differences=self.differences, entry_id=entry_id, hint=self.hint
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "message": self.message,
            "differences": [d.to_json() for d in self.differences],
        }

    @classmethod
    def from_error(cls, check: str, exc: CacheMiss) -> Problem:
        return cls(check, exc.reason, exc.summary, exc.differences, exc.hint)


def state_problem(manifest: Manifest, model: Any) -> Problem | None:
    """The settings the entry's trace read (a norm's eps, a flag, a module's class...)
    that differ on this model or in this process, as one problem; None when all hold."""
    differences = traced_state_problems(manifest.traced_state, model)
    if not differences:
        return None
    hint = "precompile this model: a setting its trace read has another value here"
    if any(d.name.endswith(".training") or d.name == "training" for d in differences):
        hint = "call model.eval() before loading (the entry was traced in eval mode), or precompile this model"
    return Problem(
        "state",
        StaleEntry.reason,
        "the model differs from the one the entry was traced from (in the entry -> here)",
        sorted(differences, key=lambda d: d.name),
        hint,
    )


def entry_problems(
    fd: int,
    manifest: Manifest,
    raw: bytes,
    *,
    blobs: dict[str, bytes] | None = None,
    verify_signature: SignatureCheck | None = None,
    check_env: bool = True,
    with_sources: bool = True,
    warnings: list[str] | None = None,
    model: Any = None,
) -> Iterator[Problem]:
    """The one pipeline of checks after the manifest parsed: signature, the traced
    state (given the model: cheap, and what tells one entry of a lookup key from
    another), files, environment (recorded factors, then what this host lacks to run the
    kernels), sources. Lazy, so that a load stops at the first problem; `blobs` receives
    the verified bytes of every file, `warnings` what is not a problem but worth saying
    (traced sources that cannot be found from this process)."""
    if verify_signature is not None:
        try:
            verify_signature(manifest.entry_id, raw, _signature_bytes(fd))
        except CacheMiss as exc:
            yield Problem.from_error("signature", exc)
    if model is not None:
        problem = state_problem(manifest, model)
        if problem is not None:
            yield problem
    diffs = file_problems(fd, manifest, blobs)
    if diffs:
        yield Problem("files", CorruptEntry.reason, "files differ from the manifest", diffs, _HINT_CORRUPT)
    if check_env:
        diffs = environment_problems(manifest)
        if diffs:
            yield Problem(
                "environment",
                IncompatibleEnvironment.reason,
                "built for another environment",
                diffs,
                "precompile on a host with the same software, or use an entry built for this one",
            )
        diffs = host_problems(manifest.recorded)
        if diffs:
            yield Problem(
                "environment",
                IncompatibleEnvironment.reason,
                "this host cannot run the entry's kernels",
                diffs,
                "precompile on a host like this one, or set TORCHINDUCTOR_CPP_MARCH to a baseline "
                "such as x86-64-v3 when precompiling",
            )
    if with_sources:
        sources = check_sources(manifest)
        if sources.changed:
            yield Problem(
                "sources", StaleEntry.reason, "traced source files changed", sources.changed, "precompile again"
            )
        unknown = sources.unknown_message()
        if unknown and warnings is not None:
            warnings.append(unknown)


_HINT_CORRUPT = "run `aotcache clear --broken` and precompile again"


def open_entry(
    path: Path,
    *,
    check_env: bool = True,
    check_sources: bool = True,
    verify_signature: SignatureCheck | None = None,
    model: Any = None,
) -> OpenedEntry:
    """Read and check a whole entry; raise the typed error of the first problem found.
    With `model`, the settings its trace read must hold on that model. Nothing of the
    entry has run when this returns or raises."""
    with entry_dir(path) as fd:
        manifest, raw = _read_manifest_at(path, fd)
        blobs: dict[str, bytes] = {}
        warnings: list[str] = []
        checks = entry_problems(
            fd,
            manifest,
            raw,
            blobs=blobs,
            verify_signature=verify_signature,
            check_env=check_env,
            with_sources=check_sources,
            warnings=warnings,
            model=model,
        )
        first = next(checks, None)
        signature = _signature_bytes(fd) if first is None else None
    if first is not None:
        raise first.error(manifest.entry_id)
    return OpenedEntry(path, manifest, blobs, raw, signature, warnings)


def problems(
    path: Path,
    *,
    verify_signature: SignatureCheck | None = None,
    check_sources: bool = True,
    warnings: list[str] | None = None,
    model: Any = None,
) -> tuple[Manifest | None, list[Problem]]:
    """Run every check and collect every failure (and into `warnings`, what is worth
    saying but no failure), for reports. The state check needs the model."""
    try:
        with entry_dir(path) as fd:
            manifest, raw = _read_manifest_at(path, fd)
            found = entry_problems(
                fd,
                manifest,
                raw,
                verify_signature=verify_signature,
                with_sources=check_sources,
                warnings=warnings,
                model=model,
            )
            return manifest, list(found)
    except CacheMiss as exc:
        return None, [Problem.from_error("manifest", exc)]
