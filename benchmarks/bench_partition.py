"""FX splitting against Inductor graph partition (use_inductor_graph_partition), side by
side in one run, on the same model and config: units compiled, cold precompile time
(a fresh process, empty Inductor cache, --jobs 1 so that both compile in one process),
and per-call latency of the loaded entry (a fresh process; median of 200 calls at each
of sizes 1, 5 and 64). `make bench` runs it and writes the "graph_partition" section of
benchmarks/results/latest.json.
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

from _common import CONFIG, REPO, run_child, run_rows

MODELS = {  # name: (layers, use_inductor_graph_partition)
    "tiny_llama 8 layers, FX split": (8, False),
    "tiny_llama 8 layers, graph partition": (8, True),
}
SIZES = (1, 5, 64)
CALLS = 200


def child(mode: str, layers: int, cache: str, partition: bool) -> dict[str, Any]:
    import torch

    import aotcache
    from examples import tiny_llama

    config = {**CONFIG, "use_inductor_graph_partition": partition}
    model = tiny_llama.build(layers)
    if mode == "precompile":
        started = time.perf_counter()
        summary = aotcache.precompile(model, config, tiny_llama.example_inputs, cache_dir=cache, jobs=1).summary
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "units_compiled": summary["units_compiled"], "pieces": summary["pieces_total"]}
    loaded = aotcache.load(model, config, cache_dir=cache, strict=True)
    latency = {}
    with torch.no_grad():
        for size in SIZES:
            inputs = tiny_llama.example_inputs(size)
            for _ in range(20):
                loaded(*inputs)
            times = []
            for _ in range(CALLS):
                started = time.perf_counter()
                loaded(*inputs)
                times.append(time.perf_counter() - started)
            latency[str(size)] = statistics.median(times) * 1e6
    return {"latency_us": latency}


def spawn(mode: str, layers: int, cache: Path, partition: bool, inductor: Path) -> dict[str, Any]:
    shutil.rmtree(inductor, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TORCHINDUCTOR_CACHE_DIR": str(inductor)}
    command = [sys.executable, __file__, "--child", mode, "--layers", str(layers), "--cache", str(cache)]
    command += ["--partition"] if partition else []
    return run_child(command, env, mode, timeout=1800)


def bench_model(name: str, reps: int, scratch: Path) -> dict[str, Any]:
    layers, partition = MODELS[name]
    cache = scratch / f"cache-{partition}"
    built = spawn("precompile", layers, cache, partition, scratch / "inductor")
    return {"model": name, **built, **spawn("load", layers, cache, partition, scratch / "inductor")}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'model':40} {'pieces':>6} {'units':>6} {'precompile s':>13} "
        + " ".join(f"{'us@' + str(s):>8}" for s in SIZES)
    ]
    for row in rows:
        latency = " ".join(f"{row['latency_us'][str(s)]:8.1f}" for s in SIZES)
        lines.append(f"{row['model']:40} {row['pieces']:6} {row['units_compiled']:6} {row['seconds']:13.1f} {latency}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--cache")
    parser.add_argument("--partition", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.layers, args.cache, args.partition)))
        raise SystemExit(0)
    raise SystemExit(run_rows("graph_partition", list(MODELS), 1, {}, bench_model, table))
