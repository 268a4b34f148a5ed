"""Peak resident memory per precompile stage (trace, compile, self-check, publish), for
the progress lines and `precompile --json`: what a CI runner must hold, stage by stage.

Linux keeps a process's peak (VmHWM) and lets the process reset it (clear_refs 5), so
each stage's peak is its own; worker processes report through RUSAGE_CHILDREN.
Elsewhere nothing is measured and nothing is reported."""

from __future__ import annotations

import resource
import subprocess
import threading
import time
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


def resident(pid: int) -> int:
    """Another process's resident memory now, in bytes (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def child_pids(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return found


class ResidentWatcher:
    """The largest resident memory seen of a running process and of any process it
    started, sampled from outside every 20 ms (its own VmHWM is reset per stage):
    `with ResidentWatcher(popen) as seen: popen.communicate()`, then seen.main, .workers."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.main = 0
        self.workers = 0
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while self.process.poll() is None:
            self.main = max(self.main, resident(self.process.pid))
            for child in child_pids(self.process.pid):
                self.workers = max(self.workers, resident(child))
            time.sleep(0.02)

    def __enter__(self) -> ResidentWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join()
