"""The serving side of stats: what a replica loaded, served and missed, written to its
own file in a stats dir (opt-in: `load(stats_dir=...)` or AOTCACHE_STATS_DIR).

A call costs one dict increment (the size's count, shared by every LoadedModel of the
entry in this process); which unit serves a size, and everything else, is worked out
when the file is written: every AOTCACHE_STATS_INTERVAL seconds (60) and at exit, staged
and renamed, so a reader never sees half a file. Memory is bounded: sizes are those a
loaded entry accepts, load times and miss kinds are capped. Recording never fails a
load or a call: a full disk or a read-only dir is one warning.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import socket
import threading
import time
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aotcache.envs as envs

from .records import MAX_LOAD_TIMES, MAX_MISSES, EntryStats, MissStats, ProcessStats

log = logging.getLogger("aotcache.stats")

DEFAULT_INTERVAL = 60.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class StatsRecorder:
    """This process's record in one stats dir."""

    def __init__(self, directory: Path, interval: float = DEFAULT_INTERVAL) -> None:
        self.directory = directory
        host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:100] or "host"
        started = time.time_ns()
        name = f"{host}-{os.getpid()}-{started}.json"
        self.record = ProcessStats(name, host, os.getpid(), _now(), _now())
        self._serving: list[tuple[EntryStats, weakref.ref[Any]]] = []
        self._lock = threading.Lock()
        self._warned = False
        self._stop = threading.Event()
        if interval > 0:
            thread = threading.Thread(target=self._every, args=(interval,), name="aotcache-stats", daemon=True)
            thread.start()

    def loaded(self, loaded: Any, seconds: float) -> dict[int, int]:
        """A load of `loaded` (a LoadedModel) that took `seconds`: returns the calls-by-size
        dict its calls count into."""
        manifest = loaded.manifest
        with self._lock:
            entry = self.record.entries.get(loaded.entry_id)
            if entry is None:
                entry = EntryStats(loaded.entry_id, manifest.model_class, loaded.entry_id.split("-")[0])
                self.record.entries[loaded.entry_id] = entry
            entry.loads += 1
            entry.load_seconds = [*entry.load_seconds, seconds][-MAX_LOAD_TIMES:]
            self._serving.append((entry, weakref.ref(loaded)))
        return entry.calls

    def missed(self, model: str, lookup: str, miss: Any) -> None:
        """A load that missed: its reason and the factors that differed (old -> new)."""
        differences = [d.to_json() for d in getattr(miss, "differences", [])][:64]
        found = MissStats(model, lookup, miss.reason, miss.summary[:2000], differences)
        with self._lock:
            for existing in self.record.misses:
                if existing.kind == found.kind and existing.lookup == lookup:
                    existing.count += 1
                    return
            if len(self.record.misses) < MAX_MISSES:
                found.count = 1
                self.record.misses.append(found)

    def flush(self) -> None:
        """Write the record now (atomically); a failure is one warning, never an error."""
        with self._lock:
            for entry, ref in self._serving:
                loaded = ref()
                if loaded is not None:
                    for size in entry.calls:
                        if size not in entry.served_by:
                            entry.served_by[size] = _served_by(loaded, size)
            self.record.updated = _now()
            data = self.record.to_bytes()
        try:
            from aotcache.store.atomic import write_file_atomic

            self.directory.mkdir(parents=True, exist_ok=True)
            write_file_atomic(self.directory / self.record.name, data)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("aotcache stats: could not write %s: %s", self.directory, exc.strerror or exc)

    def _every(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush()


def _served_by(loaded: Any, size: int) -> str:
    try:
        return str(loaded.served_by(size))
    except Exception:  # a size the entry no longer serves: nothing to say
        return "?"


_recorders: dict[Path, StatsRecorder] = {}
_recorders_lock = threading.Lock()


def recorder_for(stats_dir: str | os.PathLike[str] | None) -> StatsRecorder | None:
    """This process's recorder for `stats_dir` (else AOTCACHE_STATS_DIR); None when
    neither is set: recording is opt-in."""
    chosen = stats_dir or envs.get(envs.AOTCACHE_STATS_DIR)
    if not chosen:
        return None
    directory = Path(chosen).expanduser().absolute()
    with _recorders_lock:
        recorder = _recorders.get(directory)
        if recorder is None:
            interval = _interval()
            recorder = _recorders[directory] = StatsRecorder(directory, interval)
            atexit.register(recorder.flush)
        return recorder


def _interval() -> float:
    text = envs.get(envs.AOTCACHE_STATS_INTERVAL)
    try:
        return float(text) if text else DEFAULT_INTERVAL
    except ValueError:
        log.warning("aotcache stats: AOTCACHE_STATS_INTERVAL=%r is not a number of seconds; using 60", text)
        return DEFAULT_INTERVAL
