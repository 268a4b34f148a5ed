"""Scanning a cache dir: one record per entry with its status, for `inspect-cache`,
`clear` and `verify KEY`. Never raises on a damaged entry: it reports it as such."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aotcache.errors import AotCacheError, CacheMiss, EntryNotFound
from aotcache.formats import load_needs
from aotcache.key.factors import explain

from .checks import Problem, problems, read_manifest
from .manifest import Manifest
from .root import CacheRoot, staging_is_abandoned

OK = "ok"
INCOMPLETE = "incomplete"
BUILDING = "building"


@dataclass
class EntryReport:
    entry_id: str
    path: Path
    status: str
    bytes: int
    manifest: Manifest | None = None
    problems: list[Problem] = field(default_factory=list)
    created: str | None = None
    last_used: str | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. traced sources not found from here

    @property
    def model(self) -> str:
        return self.manifest.model_class if self.manifest else "?"

    @property
    def part_of(self) -> str | None:
        """ "Model.path" for a part of a model served as parts (backend/parts.py)."""
        return self.manifest.recorded.get("part_of") if self.manifest else None

    @property
    def load_needs(self) -> list[str]:
        """What loading the entry needs besides torch ([] for compiler-free entries)."""
        return load_needs(self.manifest.artifacts) if self.manifest else []

    @property
    def broken(self) -> bool:
        return self.status in ("corrupt", INCOMPLETE, "unsupported-format")

    def sort_time(self, which: str) -> str:
        value = self.last_used if which == "used" else self.created
        return value or self.created or ""

    def to_json(self, detail: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "key": self.entry_id,
            "path": str(self.path),
            "status": self.status,
            "model": self.model,
            "part_of": self.part_of,
            "bytes": self.bytes,
            "created": self.created,
            "last_used": self.last_used,
            "problems": [p.to_json() for p in self.problems],
            "warnings": self.warnings,
            "load_needs": self.load_needs,
        }
        if self.manifest is not None:
            config = self.manifest.config
            data.update(
                mode=config.get("mode"),
                backend=config.get("backend"),
                compile_sizes=config.get("compile_sizes"),
                ranges=[u.range for u in self.manifest.units if u.start != u.end],
                artifacts=len(self.manifest.artifacts),
                files=len(self.manifest.files),
            )
            if detail:
                data.update(
                    factors={
                        "lookup": [f.to_json() for f in self.manifest.lookup],
                        "build": [f.to_json() for f in self.manifest.build],
                    },
                    recorded=self.manifest.recorded,
                    config=config,
                    sources=self.manifest.sources,
                    units=[u.to_json() for u in self.manifest.units],
                    pieces={name: p.to_json() for name, p in self.manifest.pieces.items()},
                    traced_state={
                        "checks": self.manifest.traced_state.count,
                        "not_checked": self.manifest.traced_state.not_checked,
                    },
                    artifacts={name: a.to_json() for name, a in self.manifest.artifacts.items()},
                    artifact_files=[
                        {"path": rel, "bytes": rec.bytes, "sha256": rec.sha256}
                        for rel, rec in sorted(self.manifest.files.items())
                    ],
                    stats=self.manifest.stats,
                )
        return data


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


# The order in which problems decide an entry's single status word.
_STATUS_ORDER = ("unsupported-format", "corrupt", "untrusted", "incompatible-env", "stale")


def report_entry(
    root: CacheRoot, path: Path, *, verify_signature: Any = None, check_sources: bool = True
) -> EntryReport:
    warnings: list[str] = []
    try:
        manifest, found = problems(
            path, verify_signature=verify_signature, check_sources=check_sources, warnings=warnings
        )
    except OSError as exc:  # removed or unreadable while we looked
        manifest, found = None, [Problem("files", "corrupt", f"unreadable: {exc}")]
    statuses = {p.status for p in found}
    status = next((s for s in _STATUS_ORDER if s in statuses), OK)
    created = entry_created(path, manifest)
    return EntryReport(
        entry_id=path.name,
        path=path,
        status=status,
        bytes=root.size_of(path),
        manifest=manifest,
        problems=found,
        created=created,
        last_used=_iso(root.last_used(path.name)),
        warnings=warnings,
    )


def entry_created(path: Path, manifest: Manifest | None) -> str | None:
    """When the entry was built: the manifest's `created` (SOURCE_DATE_EPOCH) if it has
    one, else when it appeared in this cache dir (its directory's mtime)."""
    return (manifest.created if manifest else None) or _iso(_mtime(path))


def _mtime(path: Path) -> float | None:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return None


def _leftover(root: CacheRoot, path: Path, status: str, message: str) -> EntryReport:
    return EntryReport(
        path.name,
        path,
        status,
        root.size_of(path),
        problems=[Problem("files", status, message)],
        created=_iso(_mtime(path)),
    )


def leftovers(root: CacheRoot) -> list[EntryReport]:
    """Unfinished builds and signatures (staging), interrupted deletions (trash), and
    folders of the root that are not real directories (a link is never followed)."""
    found = []
    for name, kind in root.layout_problems():
        message = f"the cache dir's {name}/ is a {kind}; it is never followed"
        found.append(_leftover(root, root.path / name, "corrupt", message))
    for path in root.staging_dirs():
        abandoned = staging_is_abandoned(path)
        status = INCOMPLETE if abandoned else BUILDING
        message = "unfinished write (its process is gone)" if abandoned else "write in progress"
        found.append(_leftover(root, path, status, message))
    for path in root.trash_dirs():
        found.append(_leftover(root, path, INCOMPLETE, "interrupted deletion"))
    return found


def scan(root: CacheRoot, *, verify_signature: Any = None, check_sources: bool = True) -> list[EntryReport]:
    reports = [
        report_entry(root, p, verify_signature=verify_signature, check_sources=check_sources) for p in root.entry_dirs()
    ]
    return reports + leftovers(root)


def candidate_entries(root: CacheRoot, key: str) -> list[Path]:
    """Entries of this lookup key, newest first."""
    dated = []
    for path in root.entries_with_lookup(key):
        try:
            manifest, _ = read_manifest(path)
            dated.append((entry_created(path, manifest) or "", path))
        except CacheMiss:
            dated.append(("", path))  # broken: tried last, reported if nothing else loads
        except OSError:
            continue
    return [path for _, path in sorted(dated, key=lambda item: item[0], reverse=True)]


def model_class_of(factors: Sequence[Any]) -> Any:
    """The model class a list of lookup factors names."""
    return next((f.value for f in factors if f.name == "model.class"), None)


def nearest_entry(root: CacheRoot, factors: Sequence[Any], *, other_than: str | None = None) -> Manifest | None:
    """The entry of the same model class whose lookup factors differ least: the basis for
    explaining a miss factor by factor (`other_than`: a lookup key whose entries are
    left out, e.g. the load's own candidates)."""
    model_class = model_class_of(factors)
    best: tuple[int, Manifest] | None = None
    for path in root.entry_dirs():
        if other_than is not None and path.name.startswith(other_than + "-"):
            continue
        try:
            manifest, _ = read_manifest(path)
        except (CacheMiss, OSError):
            continue
        if manifest.model_class != model_class:
            continue
        distance = len(explain(manifest.lookup, factors))
        if best is None or distance < best[0]:
            best = (distance, manifest)
    return best[1] if best else None


def find_entry(root: CacheRoot, key: str) -> Path:
    """The entry whose id is `key` or starts with it (a unique prefix, as git allows)."""
    if not key or "/" in key or key.startswith("."):
        raise EntryNotFound(f"{key!r} is not an entry key", hint="list keys with `aotcache inspect-cache`")
    matches = [p for p in root.entry_dirs() if p.name.startswith(key)]
    if not matches:
        raise EntryNotFound(f"no entry {key!r} in {root.path}", hint="list keys with `aotcache inspect-cache`")
    if len(matches) > 1:
        raise AmbiguousKey(f"key {key!r} matches {len(matches)} entries", hint="give more characters of the key")
    return matches[0]


class AmbiguousKey(AotCacheError):
    exit_code = 2
