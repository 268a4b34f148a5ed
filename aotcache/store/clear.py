"""clear: remove entries, leftovers and stale locks; say what was (or would be) freed."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aotcache.errors import ConfigError

from .root import CacheRoot
from .scan import BUILDING, EntryReport, find_entry, scan

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "K": 1e3,
    "KB": 1e3,
    "M": 1e6,
    "MB": 1e6,
    "G": 1e9,
    "GB": 1e9,
    "T": 1e12,
    "TB": 1e12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ConfigError("max_size", text, "a size such as 500MB, 5GB or 1.5GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not match:
        raise ConfigError("older_than", text, "a duration such as 45m, 12h, 30d or 2w")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


@dataclass
class Removal:
    key: str
    path: str
    bytes: int  # really freed (or, on a dry run, what would be)
    reason: str
    status: str
    error: str | None = None  # why it could not be removed (wholly)


@dataclass
class ClearReport:
    dry_run: bool
    removed: list[Removal] = field(default_factory=list)
    not_removed: list[Removal] = field(default_factory=list)  # still there after an error: kept
    locks_removed: int = 0
    kept: int = 0
    lock_errors: list[str] = field(default_factory=list)
    index_records_removed: int = 0  # artifact-index records of entries that are gone
    unchecked: list[str] = field(default_factory=list)  # --stale: entries whose sources are not found from here

    @property
    def freed(self) -> int:
        return sum(r.bytes for r in (*self.removed, *self.not_removed))

    @property
    def errors(self) -> list[str]:
        return [r.error for r in (*self.removed, *self.not_removed) if r.error] + self.lock_errors

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "aotcache.clear/1",
            "dry_run": self.dry_run,
            "removed": [r.__dict__ for r in self.removed],
            "not_removed": [r.__dict__ for r in self.not_removed],
            "freed_bytes": self.freed,
            "locks_removed": self.locks_removed,
            "index_records_removed": self.index_records_removed,
            "kept": self.kept,
            "unchecked": self.unchecked,
            "errors": self.errors,
        }


def _timestamp(report: EntryReport) -> float:
    text = report.last_used or report.created
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def select(
    root: CacheRoot,
    *,
    keys: list[str] | None = None,
    all_entries: bool = False,
    stale: bool = False,
    broken: bool = False,
    older_than: float | None = None,
    max_size: int | None = None,
) -> tuple[list[tuple[EntryReport, str]], int, list[str]]:
    """What clear would remove, with the reason for each, how many entries stay, and (for
    --stale) the entries that could not be checked from here, each with why."""
    reports = scan(root)
    chosen: dict[str, tuple[EntryReport, str]] = {}

    def pick(report: EntryReport, reason: str) -> None:
        chosen.setdefault(str(report.path), (report, reason))

    for key in keys or []:
        path = find_entry(root, key)
        report = next(r for r in reports if r.path == path)
        pick(report, "requested")
    now = time.time()
    for report in reports:
        if report.status == BUILDING:
            continue  # never touch a build in progress
        if all_entries:
            pick(report, "all")
        elif broken and report.broken:
            pick(report, f"broken ({report.status})")
        elif stale and report.status == "stale":
            pick(report, "stale")
        elif older_than is not None and report.manifest is not None and now - _timestamp(report) > older_than:
            pick(report, "older than limit")
    if max_size is not None:
        remaining = [r for r in reports if str(r.path) not in chosen and r.manifest is not None]
        total = sum(r.bytes for r in remaining)
        for report in sorted(remaining, key=_timestamp):  # least recently used first
            if total <= max_size:
                break
            pick(report, "over max size (least recently used)")
            total -= report.bytes
    kept = sum(1 for r in reports if r.manifest is not None and str(r.path) not in chosen)
    unknown = [r for r in reports if stale and r.warnings and str(r.path) not in chosen]
    unchecked = [f"{r.entry_id}: {r.warnings[0]}" for r in unknown]
    return list(chosen.values()), kept, unchecked


def clear(
    root: CacheRoot,
    chosen: list[tuple[EntryReport, str]],
    kept: int,
    unchecked: list[str] | None = None,
    *,
    dry_run: bool,
) -> ClearReport:
    report = ClearReport(dry_run=dry_run, kept=kept, unchecked=list(unchecked or []))
    # Damaged folders of the root first: a link in place of trash/ must go before any
    # entry can be deleted through a real trash/.
    chosen = sorted(chosen, key=lambda item: item[0].path.parent != root.path)
    for entry, reason in chosen:
        removal = Removal(entry.entry_id, str(entry.path), entry.bytes, reason, entry.status)
        report.removed.append(removal)
        if dry_run:
            continue
        if entry.path.parent == root.entries:
            removal.bytes, removal.error = root.remove_entry(entry.path)
            root.forget_usage(entry.entry_id)
        else:
            removal.bytes, removal.error = root.remove_leftover(entry.path)
        if removal.error and os.path.lexists(entry.path):  # what failed is still there: kept, and said
            report.removed.remove(removal)
            report.not_removed.append(removal)
            report.kept += entry.manifest is not None
    if not dry_run:
        report.locks_removed, report.lock_errors = root.remove_idle_locks()
        report.index_records_removed = root.prune_index()
    return report
