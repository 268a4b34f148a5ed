"""Serve-time start-up, side by side, in one run: every measurement in a fresh process,
several repetitions, medians. `make bench` runs it; it prints a table and writes
the "load" section of benchmarks/results/latest.json with the ratios.

Measured, for tiny_llama with 2 and 8 layers and a larger config (hidden 512, 8 layers):
  1. cold precompile (empty Inductor and aotcache caches), process start to done;
  2. aotcache load to first output, with and without a compiler on PATH;
  3. torch.compile warm start (a second process, same TORCHINDUCTOR_CACHE_DIR);
  4. torch Mega-Cache warm start (torch.compiler.load_cache_artifacts, empty cache dir);
  5. an AOTInductor package of the same model (torch.export with a dynamic size,
     aoti_compile_and_package), loaded with aoti_load_package, to its first output;
  6. the floor: import torch, read the entry's files and dlopen its kernels, nothing else;
  7. steady-state per-call latency at sizes 1 and 8: eager, aotcache, the compiled
     pieces called directly (no binding, checks or dispatch), and torch.compile;
  8. the check of the entry's traced state on the model (part of every load): its
     median in the load child, after the load, over 50 runs.
Start-up times run from the parent's spawn of the child to the child's first output, so
interpreter start-up and `import torch` are included everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import CONFIG, FIRST_SIZE, REPO, run_child, write_section

MODELS = {  # name: (layers, hidden, heads)
    "2 layers": (2, 32, 4),
    "8 layers": (8, 32, 4),
    "hidden 512, 8 layers": (8, 512, 8),
}


# -- children: each runs in a fresh interpreter and prints one JSON line ------------------


def child(mode: str, model_name: str, cache: str, spawned: float, extra: str | None) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(REPO))
    from examples import tiny_llama

    layers, hidden, heads = MODELS[model_name]

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return tiny_llama.TinyLlama(layers, hidden=hidden, heads=heads).eval()

    ids = tiny_llama.example_inputs(FIRST_SIZE)[0]
    if mode == "cold":
        import aotcache

        spec = aotcache.ModelSpec(
            model=build, example_inputs=tiny_llama.example_inputs, dynamic_arg_dims={"input_ids": 0}
        )
        result = aotcache.precompile(spec, CONFIG, cache_dir=cache)
        return {"seconds": time.time() - spawned, "entry": result.entry_id, "hit": result.hit}
    if mode == "load":
        import aotcache

        model = build()
        loaded = aotcache.load(model, CONFIG, cache_dir=cache, strict=True)
        out = loaded(ids)
        seconds = time.time() - spawned
        from aotcache.serve import COMPILE_SIDE_MODULES

        heavy = [m for m in sys.modules if m.startswith(COMPILE_SIDE_MODULES)]
        return {
            "seconds": seconds,
            "shape": list(out.shape),
            "compile_side_modules": len(heavy),
            "state_check_us": state_check_us(loaded.manifest.traced_state, model),
        }
    if mode in ("torch_cold", "torch_warm", "mega_load"):
        if mode == "mega_load":
            torch.compiler.load_cache_artifacts(Path(extra or "").read_bytes())
        model = build()
        compiled = torch.compile(model, fullgraph=True)
        torch._dynamo.mark_dynamic(ids, 0)
        with torch.no_grad():
            out = compiled(ids)
        seconds = time.time() - spawned
        if mode == "torch_cold" and extra:
            artifacts = torch.compiler.save_cache_artifacts()
            assert artifacts is not None
            Path(extra).write_bytes(artifacts[0])
        return {"seconds": seconds, "shape": list(out.shape)}
    if mode == "aoti_build":
        model = build()
        n = torch.export.Dim("n", min=2, max=CONFIG["max_num_batched_tokens"])
        with torch.no_grad():
            program = torch.export.export(model, (ids,), dynamic_shapes={"input_ids": {0: n}})
            torch._inductor.aoti_compile_and_package(program, package_path=extra)
        return {"seconds": time.time() - spawned}
    if mode == "aoti_load":
        runner = torch._inductor.aoti_load_package(extra)
        out = runner(ids)
        return {"seconds": time.time() - spawned, "shape": list(out.shape)}
    if mode == "floor":
        from aotcache.formats.kernels import load_kernel

        entry = next(Path(cache, "entries").iterdir())
        for path in sorted(entry.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                if path.suffix == ".so":
                    load_kernel(data, path.stem)
        return {"seconds": time.time() - spawned}
    if mode == "steady":
        return steady_state(build, cache)
    raise SystemExit(f"unknown mode {mode}")


def state_check_us(state: Any, model: Any) -> float:
    """The median cost of checking the traced state on the model, as a load does."""
    from aotcache.store.traced_state import problems

    runs = []
    for _ in range(50):
        started = time.perf_counter()
        assert not problems(state, model)
        runs.append((time.perf_counter() - started) * 1e6)
    return statistics.median(runs)


def steady_state(build: Any, cache: str) -> dict[str, Any]:
    import torch

    import aotcache

    model = build()
    loaded = aotcache.load(model, CONFIG, cache_dir=cache, strict=True)
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    sizes = {str(size): time_calls(model, loaded, compiled, size) for size in (1, 8)}
    overhead = python_overhead(loaded)
    return {"sizes": sizes, "python_overhead_us": overhead, "stats_overhead_us": stats_overhead(loaded)}


def time_calls(model: Any, loaded: Any, compiled: Any, size: int) -> dict[str, float]:
    """Per-call latency (µs) of eager, aotcache, the compiled pieces called directly and
    torch.compile, interleaved so that drift hits every candidate alike."""
    import timeit

    import torch

    from examples import tiny_llama

    ids = tiny_llama.example_inputs(size)[0]
    values = loaded.graph_values({"input_ids": ids}, size)
    variant = loaded.unit_pieces[loaded.unit_index(size)]
    stitch = loaded.stitch

    def direct() -> Any:
        with torch.no_grad():
            return stitch(variant, *values)

    def eager() -> Any:
        with torch.no_grad():
            return model(ids)

    def via_torch_compile() -> Any:
        with torch.no_grad():
            return compiled(ids)

    candidates = {
        "eager": eager,
        "aotcache": lambda: loaded(ids),
        "pieces_direct": direct,
        "torch_compile": via_torch_compile,
    }
    for fn in candidates.values():
        for _ in range(20):
            fn()
    timings: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(7):
        for name, fn in candidates.items():
            timings[name].append(timeit.timeit(fn, number=300) / 300 * 1e6)
    return {name: statistics.median(t) for name, t in timings.items()}


def python_overhead(loaded: Any) -> float:
    """The CPU cost (µs) of binding, checking and dispatching a call, measured with the
    pieces replaced by a stub, so that kernel time and its noise drop out."""
    import timeit

    import torch

    from examples import tiny_llama

    ids = tiny_llama.example_inputs(8)[0]
    values = loaded.graph_values({"input_ids": ids}, 8)
    variant = loaded.unit_pieces[loaded.unit_index(8)]
    result = (torch.zeros(8, 128),)
    loaded.stitch = lambda unit, *args: result

    def direct() -> Any:
        with torch.no_grad():
            return loaded.stitch(variant, *values)

    def full() -> Any:
        return loaded(ids)

    best = {fn: min(timeit.repeat(fn, number=20000, repeat=5)) / 20000 * 1e6 for fn in (direct, full)}
    return best[full] - best[direct]


def stats_overhead(loaded: Any) -> float:
    """What recording serving stats (load(stats_dir=...)) adds to a call (µs), with the
    pieces stubbed (python_overhead ran first), on and off interleaved, best of many."""
    import timeit

    from examples import tiny_llama

    ids = tiny_llama.example_inputs(8)[0]

    def call() -> Any:
        return loaded(ids)

    best = {"off": float("inf"), "on": float("inf")}
    for _ in range(7):
        for state, counts in (("off", None), ("on", {})):
            loaded._call_counts = counts
            best[state] = min(best[state], timeit.timeit(call, number=20000) / 20000 * 1e6)
    loaded._call_counts = None
    return best["on"] - best["off"]


# -- the driver -----------------------------------------------------------------------------


def spawn(mode: str, model: str, cache: Path, env: dict[str, str], extra: str | None = None) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--model",
        model,
        "--cache",
        str(cache),
        "--spawned",
        repr(time.time()),
    ]
    if extra:
        command += ["--extra", extra]
    return run_child(command, env, mode, timeout=900)


def no_compiler_path(scratch: Path) -> str:
    folder = scratch / "bin-no-compiler"
    folder.mkdir(exist_ok=True)
    target = folder / "python"
    if not target.exists():
        os.symlink(sys.executable, target)
    return str(folder)


def median_of(runs: list[dict[str, Any]]) -> float:
    return statistics.median(r["seconds"] for r in runs)


def bench_model(model: str, reps: int, cold_reps: int, scratch: Path) -> dict[str, Any]:
    base = {**os.environ, "PYTHONPATH": str(REPO)}
    base.pop("AOTCACHE_DIR", None)
    slug = re.sub(r"[^a-z0-9]+", "-", model)
    row: dict[str, Any] = {"model": model}
    cold = []
    cache = scratch / f"aot-{slug}"
    for i in range(cold_reps):
        shutil.rmtree(cache, ignore_errors=True)
        inductor = scratch / f"inductor-cold-{slug}-{i}"
        cold.append(spawn("cold", model, cache, {**base, "TORCHINDUCTOR_CACHE_DIR": str(inductor)}))
        assert not cold[-1]["hit"]
    row["cold_precompile_s"] = median_of(cold)
    row["entry_bytes"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    empty_inductor = {**base, "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor-empty")}
    loads = [spawn("load", model, cache, empty_inductor) for _ in range(reps)]
    assert all(r["compile_side_modules"] == 0 for r in loads)
    row["aotcache_load_s"] = median_of(loads)
    row["state_check_us"] = statistics.median(r["state_check_us"] for r in loads)
    no_cc = {**empty_inductor, "PATH": no_compiler_path(scratch)}
    row["aotcache_load_no_compiler_s"] = median_of([spawn("load", model, cache, no_cc) for _ in range(reps)])
    row["floor_s"] = median_of([spawn("floor", model, cache, empty_inductor) for _ in range(reps)])
    warm_dir = {**base, "TORCHINDUCTOR_CACHE_DIR": str(scratch / f"inductor-torch-{slug}")}
    mega = scratch / f"mega-{slug}.bin"
    row["torch_compile_cold_s"] = spawn("torch_cold", model, cache, warm_dir, str(mega))["seconds"]
    row["torch_compile_warm_s"] = median_of([spawn("torch_warm", model, cache, warm_dir) for _ in range(reps)])
    mega_runs = []
    for i in range(min(reps, 3)):  # each takes ~15 s here
        fresh = {**base, "TORCHINDUCTOR_CACHE_DIR": str(scratch / f"inductor-mega-{slug}-{i}")}
        mega_runs.append(spawn("mega_load", model, cache, fresh, str(mega)))
    row["mega_cache_warm_s"] = median_of(mega_runs)
    package = str(scratch / f"aoti-{slug}.pt2")
    spawn(
        "aoti_build", model, cache, {**base, "TORCHINDUCTOR_CACHE_DIR": str(scratch / f"inductor-aoti-{slug}")}, package
    )
    row["aoti_package_load_s"] = median_of(
        [spawn("aoti_load", model, cache, empty_inductor, package) for _ in range(reps)]
    )
    steady = spawn("steady", model, cache, warm_dir)
    row["steady_us"] = steady["sizes"]
    load = row["aotcache_load_s"]
    row["ratios"] = {
        "load_over_cold": load / row["cold_precompile_s"],
        "load_over_torch_warm": load / row["torch_compile_warm_s"],
        "load_over_mega_cache": load / row["mega_cache_warm_s"],
        "load_over_aoti_package": load / row["aoti_package_load_s"],
        "load_over_floor": load / row["floor_s"],
        "dispatch_overhead_us": {size: t["aotcache"] - t["pieces_direct"] for size, t in row["steady_us"].items()},
        "dispatch_python_cpu_us": steady["python_overhead_us"],
        "stats_recording_us": steady["stats_overhead_us"],
    }
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| tiny_llama | cold precompile | aotcache load→1st output | same, no compiler on PATH | floor "
        "| torch.compile warm | Mega-Cache warm | AOTInductor package | load/cold | load/torch warm "
        "| load/AOTI | load/floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        q = r["ratios"]
        lines.append(
            f"| {r['model']} | {r['cold_precompile_s']:.1f} s | {r['aotcache_load_s']:.2f} s "
            f"| {r['aotcache_load_no_compiler_s']:.2f} s | {r['floor_s']:.2f} s | {r['torch_compile_warm_s']:.2f} s "
            f"| {r['mega_cache_warm_s']:.2f} s | {r['aoti_package_load_s']:.2f} s | 1/{1 / q['load_over_cold']:.0f} "
            f"| 1/{1 / q['load_over_torch_warm']:.1f} | 1/{1 / q['load_over_aoti_package']:.1f} "
            f"| {q['load_over_floor']:.2f}× |"
        )
    lines += [
        "",
        "| per call (µs, median) | size | eager | aotcache | pieces direct | torch.compile | dispatch overhead |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        for size, t in r["steady_us"].items():
            lines.append(
                f"| {r['model']} | {size} | {t['eager']:.0f} | {t['aotcache']:.0f} | {t['pieces_direct']:.0f} "
                f"| {t['torch_compile']:.0f} | {t['aotcache'] - t['pieces_direct']:.1f} |"
            )
    lines.append("")
    lines += [
        f"binding, checks and dispatch alone (pieces stubbed), {r['model']}: "
        f"{r['ratios']['dispatch_python_cpu_us']:.1f} µs per call"
        for r in rows
    ]
    lines += [
        f"recording serving stats (load(stats_dir=...)), {r['model']}: "
        f"{r['ratios']['stats_recording_us']:+.2f} µs per call"
        for r in rows
    ]
    lines += [
        f"the traced state's check at load, {r['model']}: {r['state_check_us']:.0f} µs "
        f"({r['state_check_us'] / 1e4 / r['aotcache_load_s']:.2f} % of the load)"
        for r in rows
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child")
    parser.add_argument("--model", default="2 layers")
    parser.add_argument("--cache")
    parser.add_argument("--spawned", type=float)
    parser.add_argument("--extra")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cold-reps", type=int, default=2)
    parser.add_argument("--models", default="|".join(MODELS), help="model names, separated by |")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.cache, args.spawned, args.extra)))
        return 0
    started = time.time()
    scratch = Path(tempfile.mkdtemp(prefix="aotcache-bench-"))
    try:
        rows = [bench_model(name, args.reps, args.cold_reps, scratch) for name in args.models.split("|")]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    import torch

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "reps": args.reps,
        "cold_reps": args.cold_reps,
        "rows": rows,
        "seconds": round(time.time() - started, 1),
    }
    path = write_section("load", report)
    print(
        f"{report['date']} — {report['machine']} — medians of {args.reps} fresh processes "
        f"({args.cold_reps} for cold precompile); the whole run took {report['seconds']:.0f} s\n"
    )
    print(table(rows))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
