"""CI runners that share a remote, side by side in one run: what a fresh runner (empty
cache dir, empty Inductor cache) pays when another runner has pushed, against a cold
precompile and torch.compile's own cold start. Every measurement is a fresh process,
timed from the parent's spawn to the child's end (interpreter start and `import torch`
included); medians. The remote is a file:// object store (the same code as S3, without
the network). `make bench` runs it and writes the "ci" section of
benchmarks/results/latest.json.

  1. cold: a fresh runner with no remote (runner A, which then pushes);
  2. unchanged: a fresh runner, the same sources, --remote: the entry is pulled before
     any trace (no Dynamo, no Inductor);
  3. comment edit: a fresh runner after a comment-only edit, --remote: a new entry, every
     unit fetched from the entry runner A pushed, none compiled;
  4. torch.compile(dynamic=True), cold, to its first output.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from _common import run_rows
from bench_precompile import MODELS, fresh_package, median, spawn

GOALS = {"unchanged_over_cold": 0.10, "comment_edit_over_cold": 0.15, "remote_build_over_cold": 0.2}


def push(cache: Path, remote: str) -> None:
    from aotcache.fleet.connect import open_remote
    from aotcache.fleet.push import push as run_push
    from aotcache.store.root import CacheRoot

    results = run_push(CacheRoot(cache), open_remote(remote))
    assert results and all(r.status in ("pushed", "present") for r in results), results


def bench_model(name: str, reps: int, base: Path) -> dict[str, Any]:
    shape = MODELS[name]
    cores = len(os.sched_getaffinity(0))
    runs: dict[str, list[dict[str, Any]]] = {"cold": [], "unchanged": [], "comment_edit": [], "torch_cold": []}
    for rep in range(reps):
        # Every runner's cache dir and the remote are new: nothing of another model or rep is reused.
        scratch = base / f"{shape[0]}-{shape[1]}-{rep}"
        scratch.mkdir()
        remote = f"file://{scratch}/remote"
        package = fresh_package(scratch)
        runner_a = scratch / "a"
        runs["cold"].append(spawn("cold", shape, package, runner_a, cores, scratch / "inductor"))
        push(runner_a, remote)
        unchanged = spawn("cold", shape, package, scratch / "b", cores, scratch / "inductor", remote)
        assert unchanged["hit"], unchanged
        runs["unchanged"].append(unchanged)
        with open(package / "bench_model.py", "a") as source:
            source.write("\n# a comment-only edit\n")
        edited = spawn("cold", shape, package, scratch / "c", cores, scratch / "inductor", remote)
        assert edited["units_compiled"] == 0 and not edited["hit"], edited
        runs["comment_edit"].append(edited)
        runs["torch_cold"].append(
            spawn("torch_cold", shape, fresh_package(scratch), scratch / "x", 1, scratch / "inductor")
        )
    cold = median(runs["cold"])
    row: dict[str, Any] = {"model": name, "cores": cores, **{f"{k}_s": median(v) for k, v in runs.items()}}
    row["bytes_fetched"] = runs["comment_edit"][-1]["bytes_fetched"]
    row["entry_bytes"] = runs["cold"][-1]["bytes"]
    row["ratios"] = {
        "unchanged_over_cold": row["unchanged_s"] / cold,
        "comment_edit_over_cold": row["comment_edit_s"] / cold,
        "remote_build_over_cold": row["comment_edit_s"] / cold,
        "cold_over_torch_cold": cold / row["torch_cold_s"],
        "comment_edit_over_torch_cold": row["comment_edit_s"] / row["torch_cold_s"],
    }
    row["comment_edit_stages"] = runs["comment_edit"][-1]["stages"]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | cold | torch.compile cold | unchanged, fresh runner | /cold | comment edit, fresh runner | /cold "
        "| fetched / entry |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        q = r["ratios"]
        lines.append(
            f"| {r['model']} | {r['cold_s']:.1f} s | {r['torch_cold_s']:.1f} s | {r['unchanged_s']:.1f} s "
            f"| {q['unchanged_over_cold']:.2f}× | {r['comment_edit_s']:.1f} s | {q['comment_edit_over_cold']:.2f}× "
            f"| {r['bytes_fetched'] / 1e6:.2f} MB / {r['entry_bytes'] / 1e6:.2f} MB |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--models", default="tiny_llama 2 layers|tiny_llama 8 layers", help="names, separated by |")
    args = parser.parse_args()
    return run_rows("ci", args.models.split("|"), args.reps, GOALS, bench_model, table)


if __name__ == "__main__":
    sys.exit(main())
