"""Progress of long operations (a precompile, a wait on another process's lock), as
events that a sink renders: the CLI's bar on a terminal, plain timed lines in a CI log,
or the `aotcache.progress` logger for the library (the decorator's first call, the
Python API).

One vocabulary everywhere: a *unit* is one unique piece of the split graph for one
compile range or concrete size; each unit is compiled, shares the compile of another
range of the same piece, or is reused from an earlier entry.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Protocol

import aotcache.envs as envs

log = logging.getLogger("aotcache.progress")

PROGRESS_ENV = envs.AOTCACHE_PROGRESS  # "0": the library logs no progress of its own
# A wait longer than this says so, again after each such period (tests shorten it).
HEARTBEAT_SECONDS = float(envs.text(envs.AOTCACHE_HEARTBEAT_SECONDS) or 10)

STAGE_LABELS = {
    "trace": "tracing with Dynamo",
    "compile": "compiling",
    "self-check": "checking every artifact against Inductor's own result",
    "publish": "publishing",
}


class Progress(Protocol):
    def stage(self, name: str) -> None: ...
    def stage_done(self, name: str, peak_rss: int | None) -> None: ...
    def units(self, total: int) -> None: ...
    def unit_done(self, label: str) -> None: ...
    def waiting(self, what: str, seconds: float) -> None: ...


class Silent:
    def stage(self, name: str) -> None:
        pass

    def stage_done(self, name: str, peak_rss: int | None) -> None:
        pass

    def units(self, total: int) -> None:
        pass

    def unit_done(self, label: str) -> None:
        pass

    def waiting(self, what: str, seconds: float) -> None:
        pass


class LineProgress:
    """One plain line per stage, per unit and per heartbeat of a wait, each with the
    seconds since the operation started: what a CI log (or a library log) shows."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.started = time.monotonic()
        self.total = 0
        self.done = 0

    def _line(self, text: str) -> None:
        self.emit(f"[{time.monotonic() - self.started:7.1f}s] {text}")

    def stage(self, name: str) -> None:
        self._line(STAGE_LABELS.get(name, name))

    def stage_done(self, name: str, peak_rss: int | None) -> None:
        if peak_rss is not None:
            self._line(f"{name}: done, peak RSS {peak_rss / 2**30:.2f} GiB")

    def units(self, total: int) -> None:
        if total != self.total:
            self.total = total
            self._line(f"{total} units to build")

    def unit_done(self, label: str) -> None:
        self.done += 1
        self._line(f"unit {self.done}/{self.total}: {label}")

    def waiting(self, what: str, seconds: float) -> None:
        self._line(f"waiting {seconds:.0f} s for {what}")


def _wants_default_handler() -> bool:
    """Whether nobody configured logging: then progress still reaches stderr (a first
    call that compiles for a minute must not be silent), unless AOTCACHE_PROGRESS=0."""
    if envs.text(PROGRESS_ENV) == "0":
        return False
    return not logging.getLogger().handlers and not log.handlers


def logged_progress() -> Progress:
    """The library's progress sink: lines on the `aotcache.progress` logger (INFO)."""
    if _wants_default_handler():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("aotcache: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return LineProgress(log.info)
