"""What a serving process records, as one JSON file per process (`aotcache.stats/1`).

One file per process, replaced atomically on every flush, so two replicas never write
the same file and a reader never sees half of one. Files travel to a remote (`push
--stats`) and back (`aotcache stats --remote`), so reading one trusts nothing: it is
plain JSON, size-capped, every field checked; a file that fails is skipped with a
warning, never an error.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("aotcache.stats")

SCHEMA = "aotcache.stats/1"
MAX_FILE_BYTES = 4 << 20
MAX_SIZES = 1 << 16  # distinct sizes per entry (a size above max_num_batched_tokens is refused anyway)
MAX_LOAD_TIMES = 64  # load times kept per entry per process (the newest)
MAX_MISSES = 256  # distinct (model, reason, differences) kept per process
FILE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}\.json$")


class BadStats(ValueError):
    """A stats file that is not what this format says."""


@dataclass
class EntryStats:
    """What one process saw of one entry: its loads, and its calls by size."""

    entry_id: str
    model: str
    lookup: str
    loads: int = 0
    load_seconds: list[float] = field(default_factory=list)
    calls: dict[int, int] = field(default_factory=dict)  # size -> calls
    served_by: dict[int, str] = field(default_factory=dict)  # size -> "size 4", "range 9-32", "graph FULL 8"

    def to_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry_id,
            "model": self.model,
            "lookup": self.lookup,
            "loads": self.loads,
            "load_seconds": [round(s, 6) for s in self.load_seconds],
            "calls": {str(size): count for size, count in sorted(self.calls.items())},
            "served_by": {str(size): unit for size, unit in sorted(self.served_by.items())},
        }

    @classmethod
    def from_json(cls, data: Any) -> EntryStats:
        data = _object(data, "entry")
        calls = _sizes(data.get("calls"), "calls", _count)
        served_by = _sizes(data.get("served_by"), "served_by", lambda v, what: _text(v, what, 80))
        seconds = data.get("load_seconds")
        if not isinstance(seconds, list) or len(seconds) > MAX_LOAD_TIMES:
            raise BadStats("load_seconds is not a short list")
        return cls(
            entry_id=_text(data.get("entry"), "entry", 64),
            model=_text(data.get("model"), "model", 300),
            lookup=_text(data.get("lookup"), "lookup", 64),
            loads=_count(data.get("loads"), "loads"),
            load_seconds=[_seconds(s) for s in seconds],
            calls=calls,
            served_by=served_by,
        )


@dataclass
class MissStats:
    """Misses of one kind: a model, a reason, the factors that differed (old -> new)."""

    model: str
    lookup: str
    reason: str
    message: str
    differences: list[dict[str, Any]] = field(default_factory=list)  # {"name", "old", "new"}
    count: int = 0

    @property
    def kind(self) -> tuple[str, str, str]:
        return self.model, self.reason, json.dumps(self.differences, sort_keys=True, default=str)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "lookup": self.lookup,
            "reason": self.reason,
            "message": self.message,
            "differences": self.differences,
            "count": self.count,
        }

    @classmethod
    def from_json(cls, data: Any) -> MissStats:
        data = _object(data, "miss")
        differences = data.get("differences")
        if not isinstance(differences, list) or len(differences) > 64:
            raise BadStats("differences is not a short list")
        checked = []
        for item in differences:
            item = _object(item, "difference")
            name = _text(item.get("name"), "name", 200)
            checked.append({"name": name, "old": item.get("old"), "new": item.get("new")})
        return cls(
            model=_text(data.get("model"), "model", 300),
            lookup=_text(data.get("lookup"), "lookup", 64),
            reason=_text(data.get("reason"), "reason", 64),
            message=_text(data.get("message"), "message", 2000),
            differences=checked,
            count=_count(data.get("count"), "count"),
        )


@dataclass
class ProcessStats:
    """One serving process's record: what it loaded, called and missed."""

    name: str  # the file's name: host-pid-start
    host: str
    pid: int
    started: str
    updated: str
    entries: dict[str, EntryStats] = field(default_factory=dict)
    misses: list[MissStats] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "host": self.host,
            "pid": self.pid,
            "started": self.started,
            "updated": self.updated,
            "entries": [e.to_json() for _, e in sorted(self.entries.items())],
            "misses": [m.to_json() for m in self.misses],
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, default=str).encode()

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> ProcessStats:
        if len(data) > MAX_FILE_BYTES:
            raise BadStats(f"over {MAX_FILE_BYTES >> 20} MiB")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadStats(f"not JSON ({exc})") from None
        except RecursionError:
            raise BadStats("nested too deeply") from None
        body = _object(body, "file")
        if body.get("schema") != SCHEMA:
            raise BadStats(f"schema is {body.get('schema')!r}, not {SCHEMA}")
        entries, misses = body.get("entries"), body.get("misses")
        if not isinstance(entries, list) or not isinstance(misses, list) or len(misses) > MAX_MISSES:
            raise BadStats("entries or misses is not a list")
        parsed = [EntryStats.from_json(e) for e in entries]
        pid = body.get("pid")
        return cls(
            name=name,
            host=_text(body.get("host"), "host", 255),
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
            started=_text(body.get("started"), "started", 64),
            updated=_text(body.get("updated"), "updated", 64),
            entries={e.entry_id: e for e in parsed},
            misses=[MissStats.from_json(m) for m in misses],
        )


def read_stats_file(path: Path) -> bytes:
    """A stats file's bytes, at most MAX_FILE_BYTES + 1 (from_bytes refuses more): a
    regular file only, never through a link, never blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        return handle.read(MAX_FILE_BYTES + 1)


def read_dir(path: Path) -> tuple[list[ProcessStats], list[str]]:
    """Every stats file in `path`, and a warning for each that could not be read."""
    found: list[ProcessStats] = []
    warnings: list[str] = []
    try:
        names = sorted(p.name for p in path.iterdir())
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"stats dir {path}: {exc.strerror or exc}"]
    for name in names:
        if not FILE_NAME.match(name):
            continue
        try:
            found.append(ProcessStats.from_bytes(name, read_stats_file(path / name)))
        except (OSError, BadStats) as exc:
            warnings.append(f"stats file {path / name} skipped: {exc}")
    return found, warnings


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadStats(f"{what} is not an object")
    return value


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise BadStats(f"{what} is not a string of at most {limit} characters")
    return value


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 62:
        raise BadStats(f"{what} is not a count")
    return value


def _seconds(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1e6:
        raise BadStats("a load time is not a number of seconds")
    return float(value)


def _sizes(value: Any, what: str, check: Any) -> dict[int, Any]:
    value = _object(value, what)
    if len(value) > MAX_SIZES:
        raise BadStats(f"{what} has over {MAX_SIZES} sizes")
    out = {}
    for key, item in value.items():
        if not key.isdigit() or len(key) > 9:
            raise BadStats(f"{what} has a size that is not a number")
        out[int(key)] = check(item, what)
    return out
