"""The parent half of `verify --run`: start aotcache.verify.child in a new interpreter
with a cold environment (empty Inductor and Triton caches, no C++ compiler unless
loading needs one), follow its progress lines, and read its one-line JSON result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aotcache.envs as envs
from aotcache.errors import TargetError

from .results import PartVerdict

Progress = Callable[[int, int, str], None]  # (done, total, label) of the CUDA-graph captures
PROGRESS_PREFIX = "AOTCACHE_PROGRESS"  # the child's stderr lines that are progress, not errors
NO_COMPILER = "/nonexistent/aotcache-no-compiler"  # CXX and CC in a cold environment


def checked_run(
    verdict: PartVerdict,
    target: str | None,
    cache_dir: Path,
    *,
    trusted_key: str | os.PathLike[str] | None,
    strict: bool,
    part_of: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """`verify --run` of one verified entry, started only when every check passed:
    nothing of an entry (nor a TARGET read from its manifest) runs before then. The
    child checks again itself, with the same trusted key and strictness."""
    if not verdict.ok:
        return {"ok": False, "started": False, "error": "not run: the entry did not pass its checks"}
    if not target:
        raise TargetError(
            "--run needs a TARGET: this entry does not record the one it was built from",
            hint="pass the TARGET instead of the key",
        )
    assert verdict.entry is not None and verdict.config is not None
    command = [
        sys.executable,
        "-m",
        "aotcache.verify.child",
        target,
        "--cache-dir",
        str(cache_dir),
        "--config-json",
        json.dumps(verdict.config),
        "--entry",
        verdict.entry,
        *(["--trusted-key", str(trusted_key)] if trusted_key else []),
        *(["--strict"] if strict else []),
        *(["--part-of", part_of] if part_of else []),
    ]
    with tempfile.TemporaryDirectory(prefix="aotcache-verify-") as caches:
        env = cold_environment(caches, verdict.load_needs or [])
        return _child_result(command, env, progress or (lambda done, total, label: None))


def cold_environment(caches: str, needs: list[str]) -> dict[str, str]:
    """The fresh process's environment: empty Inductor and Triton caches, and no C++
    compiler unless loading the entry needs one (see aotcache.verify.child)."""
    path = os.pathsep.join(filter(None, [os.getcwd(), envs.get(envs.PYTHONPATH)]))
    env = envs.child_environment(PYTHONPATH=path)
    env[envs.TORCHINDUCTOR_CACHE_DIR] = os.path.join(caches, "inductor")
    env[envs.TRITON_CACHE_DIR] = os.path.join(caches, "triton")
    if "c++ compiler" not in needs and "c compiler" not in needs:
        env[envs.CXX] = env[envs.CC] = NO_COMPILER
    return env


def _child_result(command: list[str], env: dict[str, str], progress: Progress) -> dict[str, Any]:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    errors = []
    assert process.stderr is not None and process.stdout is not None
    for line in process.stderr:
        if line.startswith(PROGRESS_PREFIX):
            _, done, total, label = line.rstrip("\n").split(" ", 3)
            progress(int(done), int(total), f"capturing CUDA graphs: {label}")
        else:
            errors.append(line.rstrip("\n"))
    lines = process.stdout.read().strip().splitlines()
    process.wait()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"ok": False, "error": ([e for e in errors if e.strip()] or ["the check process failed"])[-1]}
    result["started"] = True
    result["process_seconds"] = round(time.perf_counter() - started, 3)
    return result
