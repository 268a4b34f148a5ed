"""Peak resident memory per precompile stage (trace, compile, self-check, publish), for
the progress lines and `precompile --json`: what a CI runner must hold, stage by stage.

Linux keeps a process's peak (VmHWM) and lets the process reset it (clear_refs 5), so
each stage's peak is its own; worker processes report through RUSAGE_CHILDREN.
Elsewhere nothing is measured and nothing is reported."""

from __future__ import annotations

import resource
from pathlib import Path

from aotcache.progress import Progress

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss() -> int | None:
    """This process's peak resident set since the last reset, in bytes (None off Linux)."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak() -> None:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        pass


def workers_peak() -> int:
    """The largest peak of any worker process this one has waited for, in bytes."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


class StagePeaks:
    """A Progress that passes every event on and measures each stage's peak (the first
    `units` event starts the compile stage)."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner
        self.current: str | None = None
        self.peaks: dict[str, int] = {}

    def _enter(self, name: str) -> None:
        self._close()
        self.current = name
        reset_peak()

    def _close(self) -> None:
        if self.current is None:
            return
        peak = peak_rss()
        if peak is not None:
            self.peaks[self.current] = max(peak, self.peaks.get(self.current, 0))
            self.inner.stage_done(self.current, peak)
        self.current = None

    def finish(self) -> dict[str, int]:
        """The peaks so far, by stage, plus `workers` where workers compiled."""
        self._close()
        workers = workers_peak()
        return {**self.peaks, **({"workers": workers} if workers else {})}

    def stage(self, name: str) -> None:
        self._enter(name)
        self.inner.stage(name)

    def stage_done(self, name: str, peak_rss: int | None) -> None:
        self.inner.stage_done(name, peak_rss)

    def units(self, total: int) -> None:
        if self.current != "compile":
            self._enter("compile")
        self.inner.units(total)

    def unit_done(self, label: str) -> None:
        self.inner.unit_done(label)

    def waiting(self, what: str, seconds: float) -> None:
        self.inner.waiting(what, seconds)
