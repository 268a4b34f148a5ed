"""Parallel units: compile units in forked worker processes (`precompile --jobs N`).

Workers are forked after the parent's first compile (the warm-up), so the costs a
process pays once (imports, ISA probes, header precompilation, the pieces' recorded
inputs) are paid once and inherited.

A forked child must never run OpenMP with more than one thread: GNU libgomp's thread
pool does not survive fork, and the child hangs (seen here with a plain matmul). So a
worker runs torch with one thread and only compiles; Inductor is told the parent's
thread count (`cpp.threads`), so the generated code is byte-for-byte what a sequential
build generates, and the parent runs every self-check. Inductor's own compile pool is
off (`compile_threads=1`) while workers exist, so none of its threads are forked.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

from aotcache.errors import AotCacheError, CompileError

from . import _torch_compat as compat

# The work of the pool being run, set in the parent right before it forks: each worker
# inherits it and runs the items it is given by index (nothing but results is pickled).
_TASKS: list[Callable[[], Any]] = []


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def usable_jobs(jobs: int, device_type: str) -> int:
    """The worker processes a build can use: one where fork is unavailable, and one for
    a GPU model (a forked child cannot use a CUDA context its parent created)."""
    if device_type != "cpu" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, jobs)


@contextlib.contextmanager
def no_inductor_pool() -> Iterator[None]:
    """Inductor compiles kernels in-process while our workers exist (its pool's threads
    must not be forked; our workers are the parallelism)."""
    with compat.one_compile_thread():
        yield


def _start_worker(threads: int) -> None:
    torch.set_num_threads(1)
    compat.set_kernel_threads(threads)  # the code generated for the parent's thread count


def _run(index: int) -> tuple[int, Any, str | None, str | None, int]:
    try:
        return index, _TASKS[index](), None, None, os.getpid()
    except AotCacheError as exc:
        return index, None, exc.message, exc.hint, os.getpid()
    except Exception as exc:
        return index, None, f"{type(exc).__name__}: {exc}", None, os.getpid()


def run_in_workers(
    tasks: list[Callable[[], Any]], jobs: int, on_done: Callable[[int], None]
) -> tuple[list[Any], set[int]]:
    """Run each task in one of `jobs` forked workers; return their results in order and
    the pids of the workers that ran them (never this process's). A task that raises
    stops the build with its error (a CompileError)."""
    global _TASKS
    results: list[Any] = [None] * len(tasks)
    pids: set[int] = set()
    _TASKS = tasks
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(jobs, initializer=_start_worker, initargs=(torch.get_num_threads(),)) as pool:
            for index, value, error, hint, pid in pool.imap_unordered(_run, range(len(tasks))):
                if error is not None:
                    raise CompileError(error, hint=hint)
                results[index] = value
                pids.add(pid)
                on_done(index)
    finally:
        _TASKS = []
    return results, pids
