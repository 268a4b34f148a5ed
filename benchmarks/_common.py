"""What the benchmarks share: the model config they measure, and latest.json, of which
each benchmark owns one section."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
# tiny_llama's example config: ranges [1, 16] and [17, 64], concrete sizes 1, 2, 4, 8.
CONFIG = {
    "compile_sizes": [1, 2, 4, 8],
    "compile_ranges_split_points": [16],
    "max_num_batched_tokens": 64,
    "splitting_ops": ["tinyllama::attention"],
}
FIRST_SIZE = 5  # the size of the first call after a load (in no compile size)


def run_child(command: list[str], env: dict[str, str], what: str, timeout: float) -> dict[str, Any]:
    """Run one measurement's fresh process; its last line of output is its JSON result."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, check=False, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{what} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_section(name: str, report: dict[str, Any]) -> Path:
    """Replace one benchmark's section, keeping the others."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "latest.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or "rows" in data:  # the old one-benchmark layout
        data = {}
    data[name] = report
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def stamp() -> dict[str, str]:
    """When and where a benchmark ran: the date and the machine (cores, torch)."""
    import torch

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}",
    }


def run_rows(
    section: str,
    models: list[str],
    reps: int,
    goals: dict[str, float],
    bench_model: Callable[[str, int, Path], dict[str, Any]],
    table: Callable[[list[dict[str, Any]]], str],
) -> int:
    """Measure each model in a scratch dir of its own, write the section of latest.json
    (date, machine, reps, goals, rows) and print its table."""
    started = time.time()
    scratch = Path(tempfile.mkdtemp(prefix=f"aotcache-bench-{section}-"))
    try:
        rows = [bench_model(name, reps, scratch) for name in models]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {
        **stamp(),
        "reps": reps,
        "goals": goals,
        "rows": rows,
        "seconds": round(time.time() - started, 1),
    }
    path = write_section(section, report)
    print(f"{report['date']} — {report['machine']} — medians of {reps} fresh processes\n")
    print(table(rows))
    print(f"\nwrote {path}")
    return 0
