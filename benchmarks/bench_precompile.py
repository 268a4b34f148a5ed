"""CI cost, side by side, in one run: what a precompile costs against torch.compile's own
cold start, what a rebuild costs, and how --jobs scales. Every measurement is a fresh
process with an empty Inductor cache, timed from the parent's spawn to the child's end
(interpreter start and `import torch` included); medians. `make bench` runs it and
writes the "precompile" section of benchmarks/results/latest.json.

For each model (tiny_llama with 2 and 8 layers, and hidden 512 with 8 layers):
  1. cold precompile with --jobs 1, 2 and the cores available;
  2. torch.compile(dynamic=True), cold, to its first output (the same model);
  3. a rebuild after a comment-only edit of the model's file (the aotcache cache dir
     kept, the Inductor cache empty, as on a fresh CI runner that restores only it);
  4. a rebuild with one more compile size (likewise).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import CONFIG, FIRST_SIZE, REPO, run_child, run_rows

ADDED_SIZE = 16
MODELS = {  # name: (layers, hidden, heads)
    "tiny_llama 2 layers": (2, 32, 4),
    "tiny_llama 8 layers": (8, 32, 4),
    "hidden 512, 8 layers": (8, 512, 8),
}
GOALS = {"cold_over_torch_cold": 1.0, "comment_edit_over_cold": 0.15, "added_size_over_cold": 0.5}


# -- children: each runs in a fresh interpreter and prints one JSON line ------------------


def child(
    mode: str, shape: list[int], package: str, cache: str, jobs: int, spawned: float, remote: str | None = None
) -> dict[str, Any]:
    import torch

    sys.path.insert(0, package)
    import bench_model  # a copy of examples/tiny_llama.py that the rebuild steps edit

    layers, hidden, heads = shape

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return bench_model.TinyLlama(layers, hidden=hidden, heads=heads).eval()

    if mode == "torch_cold":
        model = build()
        compiled = torch.compile(model, dynamic=True)
        with torch.no_grad():
            compiled(*bench_model.example_inputs(FIRST_SIZE))
        return {"seconds": time.time() - spawned}
    import aotcache

    config = dict(CONFIG)
    if mode == "added_size":
        config["compile_sizes"] = [*CONFIG["compile_sizes"], ADDED_SIZE]
    spec = aotcache.ModelSpec(model=build, example_inputs=bench_model.example_inputs, dynamic_arg_dims={"input_ids": 0})
    result = aotcache.precompile(spec, config, cache_dir=cache, jobs=jobs, remote=remote)
    summary = result.summary
    return {
        "seconds": time.time() - spawned,
        "hit": result.hit,
        "stages": summary["seconds"],
        "units_compiled": summary["units_compiled"],
        "units_reused": summary["units_reused"],
        "units_shared": summary["units_shared"],
        "units_reused_remote": summary["units_reused_remote"],
        "bytes_fetched": summary["bytes_fetched"],
        "bytes": summary["bytes"],
    }


# -- the driver -----------------------------------------------------------------------------


def spawn(
    mode: str,
    shape: tuple[int, ...],
    package: Path,
    cache: Path,
    jobs: int,
    inductor: Path,
    remote: str | None = None,
) -> dict[str, Any]:
    shutil.rmtree(inductor, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TORCHINDUCTOR_CACHE_DIR": str(inductor)}
    env.pop("AOTCACHE_DIR", None)
    command = [sys.executable, __file__, "--child", mode, "--shape", ",".join(map(str, shape))]
    command += ["--package", str(package), "--cache", str(cache), "--jobs", str(jobs)]
    command += ["--remote", remote] if remote else []
    command += ["--spawned", repr(time.time())]
    return run_child(command, env, mode, timeout=1800)


def fresh_package(scratch: Path) -> Path:
    package = scratch / "package"
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir()
    shutil.copy(REPO / "examples" / "tiny_llama.py", package / "bench_model.py")
    return package


def median(runs: list[dict[str, Any]]) -> float:
    return statistics.median(r["seconds"] for r in runs)


def cold_builds(shape: tuple[int, ...], jobs: int, reps: int, scratch: Path) -> list[dict[str, Any]]:
    runs = []
    for _ in range(reps):
        package, cache = fresh_package(scratch), scratch / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        runs.append(spawn("cold", shape, package, cache, jobs, scratch / "inductor"))
        assert not runs[-1]["hit"]
    return runs


def rebuilds(shape: tuple[int, ...], jobs: int, reps: int, scratch: Path) -> dict[str, list[dict[str, Any]]]:
    """A cold build, then a comment-only edit and a build, then one more compile size."""
    found: dict[str, list[dict[str, Any]]] = {"comment_edit": [], "added_size": []}
    for _ in range(reps):
        package, cache = fresh_package(scratch), scratch / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        spawn("cold", shape, package, cache, jobs, scratch / "inductor")
        with open(package / "bench_model.py", "a") as source:
            source.write("\n# a comment-only edit\n")
        found["comment_edit"].append(spawn("cold", shape, package, cache, jobs, scratch / "inductor"))
        found["added_size"].append(spawn("added_size", shape, package, cache, jobs, scratch / "inductor"))
    return found


def bench_model(name: str, reps: int, scratch: Path) -> dict[str, Any]:
    shape = MODELS[name]
    cores = len(os.sched_getaffinity(0))
    row: dict[str, Any] = {"model": name, "layers": shape[0], "hidden": shape[1], "cores": cores}
    by_jobs = {}
    for jobs in sorted({1, 2, cores}):
        runs = cold_builds(shape, jobs, reps, scratch)
        by_jobs[str(jobs)] = {"seconds": median(runs), "stages": runs[-1]["stages"], "units": _units(runs[-1])}
    row["cold_by_jobs"] = by_jobs
    default = by_jobs[str(cores)]["seconds"]
    torch_runs = [spawn("torch_cold", shape, fresh_package(scratch), scratch / "x", 1, scratch / "inductor")]
    torch_runs += [spawn("torch_cold", shape, fresh_package(scratch), scratch / "x", 1, scratch / "inductor")]
    row["torch_compile_cold_s"] = median(torch_runs)
    again = rebuilds(shape, cores, reps, scratch)
    row["comment_edit_s"] = median(again["comment_edit"])
    row["added_size_s"] = median(again["added_size"])
    row["rebuild_units"] = {k: _units(v[-1]) for k, v in again.items()}
    row["rebuild_stages"] = {k: v[-1]["stages"] for k, v in again.items()}
    row["ratios"] = {
        "cold_over_torch_cold": default / row["torch_compile_cold_s"],
        "comment_edit_over_cold": row["comment_edit_s"] / default,
        "added_size_over_cold": row["added_size_s"] / default,
        "jobs_speedup": {jobs: by_jobs["1"]["seconds"] / v["seconds"] for jobs, v in by_jobs.items()},
    }
    return row


def _units(run: dict[str, Any]) -> dict[str, int]:
    return {k: run[k] for k in ("units_compiled", "units_reused", "units_shared")}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | cold, --jobs 1 | cold, --jobs 2 | torch.compile cold | cold/torch | comment edit | /cold "
        "| +1 size | /cold |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        q, jobs = r["ratios"], r["cold_by_jobs"]
        lines.append(
            f"| {r['model']} | {jobs['1']['seconds']:.1f} s | {jobs['2']['seconds']:.1f} s "
            f"| {r['torch_compile_cold_s']:.1f} s | {q['cold_over_torch_cold']:.2f}× | {r['comment_edit_s']:.1f} s "
            f"| {q['comment_edit_over_cold']:.2f}× | {r['added_size_s']:.1f} s | {q['added_size_over_cold']:.2f}× |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child")
    parser.add_argument("--shape")
    parser.add_argument("--package")
    parser.add_argument("--cache")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--spawned", type=float)
    parser.add_argument("--remote")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--models", default="|".join(MODELS), help="model names, separated by |")
    args = parser.parse_args()
    if args.child:
        shape = [int(n) for n in args.shape.split(",")]
        print(json.dumps(child(args.child, shape, args.package, args.cache, args.jobs, args.spawned, args.remote)))
        return 0
    return run_rows("precompile", args.models.split("|"), args.reps, GOALS, bench_model, table)


if __name__ == "__main__":
    sys.exit(main())
