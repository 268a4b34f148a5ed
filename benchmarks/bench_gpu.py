"""`make gpu-bench`: aotcache on a GPU against torch.compile, one command, under 8 minutes
on one H200. On the model of useful size (tests/gpu_models.py "bf16": tiny_llama's
decoder at 4 layers, hidden 512, Llama 2's vocabulary, bf16; `--models bf16,tiny_llama`
adds the 2-layer fp32 example), every start-up figure in a fresh process, timed from the
parent's spawn to the child's first output (interpreter start and `import torch`
included):

  1. cold precompile (empty Inductor and Triton caches) against torch.compile cold
     (dynamic=True, empty caches, to the first output);
  2. aotcache load with its CUDA graphs captured (FULL) to the first output, against
     torch.compile warm (a fresh process with the caches its cold run filled); medians;
  3. per-call latency at 1, 8 and 64 tokens (medians of 7 rounds of 100 calls, each
     round synchronized): eager, torch.compile(mode="reduce-overhead"), aotcache
     without graphs, with PIECEWISE graphs and with FULL graphs.

Writes gpu-bench.md and gpu-bench.json under --report ($OUT, else gpu-report). Without a
CUDA device it says so in one line and exits 1 before anything compiles. With --install
it first installs aotcache and what the machine lacks as `make gpu-check` does
(scripts/gpu_check.py's install: the machine's torch, the tree, `.wheelhouse/`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import FIRST_SIZE, REPO, run_child, stamp

# FULL graphs for the load: the sizes the latency child captures too.
LOAD_MODE = "FULL"


def gpu_check() -> ModuleType:
    """scripts/gpu_check.py as a module: its machine probe and its install."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module  # before running it: its dataclass looks itself up there
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


def _gpu_models() -> ModuleType:
    for path in (str(REPO / "tests"), str(REPO)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import gpu_models

    return gpu_models


# -- children: each runs in a fresh interpreter and prints one JSON line ------------------


def child(mode: str, name: str, cache: str, spawned: float) -> dict[str, Any]:
    import torch

    models = _gpu_models()
    model_def, device = models.MODELS[name], torch.device("cuda")
    if mode == "precompile":
        import aotcache

        result = aotcache.precompile(models.spec(name), model_def.config, cache_dir=cache)
        return {"seconds": time.time() - spawned, "entry": result.entry_id, "hit": result.hit}
    if mode == "latency":
        return models.latency(name, cache)
    model = model_def.build(device)
    inputs = model_def.inputs(FIRST_SIZE, device)
    if mode in ("torch_cold", "torch_warm"):
        compiled = torch.compile(model, dynamic=True)
        with torch.no_grad():
            compiled(*inputs)
        torch.cuda.synchronize()
        return {"seconds": time.time() - spawned}
    if mode == "load":
        import aotcache

        config = {
            **model_def.config,
            "cudagraph_mode": LOAD_MODE,
            "cudagraph_capture_sizes": models.LATENCY_CAPTURE_SIZES,
        }
        started = time.perf_counter()
        loaded = aotcache.load(model, config, cache_dir=cache, strict=True)
        load_seconds = time.perf_counter() - started
        loaded(*inputs)
        torch.cuda.synchronize()
        graphs = sum(len(w.graphs) for w in loaded.graph_runner.wrappers())
        return {"seconds": time.time() - spawned, "load_and_capture_seconds": load_seconds, "graphs": graphs}
    raise SystemExit(f"unknown mode {mode}")


# -- the parent ---------------------------------------------------------------------------


class Deadline:
    """What is left of the run's time: each child's timeout is its share or what is left."""

    def __init__(self, seconds: float) -> None:
        self.end = time.time() + seconds

    def left(self) -> float:
        return self.end - time.time()


def spawn(mode: str, name: str, cache: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """One measurement's fresh process (_common.run_child: its last line is its JSON)."""
    command = [sys.executable, __file__, "--child", mode, "--model", name, "--cache", str(cache)]
    command += ["--spawned", repr(time.time())]
    return run_child(command, env, f"{mode} ({name})", timeout=timeout)


def _env(caches: Path) -> dict[str, str]:
    """A child's environment: its own Inductor and Triton caches under `caches`."""
    env = dict(os.environ)
    env.pop("AOTCACHE_DIR", None)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        TORCHINDUCTOR_CACHE_DIR=str(caches / "inductor"),
        TRITON_CACHE_DIR=str(caches / "triton"),
        AOTCACHE_PROGRESS="0",
    )
    return env


def bench_model(name: str, reps: int, scratch: Path, deadline: Deadline) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "errors": {}}
    slug = name.replace(" ", "-")
    cache = scratch / f"aot-{slug}"

    def go(mode: str, caches: Path, share: float) -> dict[str, Any]:
        timeout = min(share, deadline.left())
        if timeout < 10:
            raise TimeoutError("not run: the run's time was spent")
        return spawn(mode, name, cache, _env(caches), timeout)

    def step(key: str, run: Any) -> Any:
        print(f"{name}: {key}", flush=True)
        try:
            return run()
        except Exception as exc:  # recorded in the report; the other steps still run
            row["errors"][key] = f"{type(exc).__name__}: {str(exc)[-1500:]}"
            return None

    built = step("precompile", lambda: go("precompile", scratch / f"cold-{slug}", 300))
    if built is not None:
        row["precompile_cold_s"] = built["seconds"]
    torch_caches = scratch / f"torch-{slug}"
    cold = step("torch_cold", lambda: go("torch_cold", torch_caches, 240))
    if cold is not None:
        row["torch_compile_cold_s"] = cold["seconds"]
        warm = step("torch_warm", lambda: [go("torch_warm", torch_caches, 120) for _ in range(reps)])
        if warm is not None:
            row["torch_compile_warm_s"] = statistics.median(r["seconds"] for r in warm)
    if built is None:
        return row
    # a serving machine's caches: empty, each load its own
    served = step("load", lambda: [go("load", scratch / f"serve-{slug}-{i}", 120) for i in range(reps)])
    if served is not None:
        row["load_first_output_s"] = statistics.median(r["seconds"] for r in served)
        row["load_and_capture_s"] = statistics.median(r["load_and_capture_seconds"] for r in served)
        row["graphs"] = served[0]["graphs"]
    latency = step("latency", lambda: go("latency", torch_caches, 300))
    if latency is not None:
        row["latency_us"], row["max_abs_from_eager"] = latency["us"], latency["max_abs"]
    return row


def _ratio(row: dict[str, Any], ours: str, theirs: str) -> str:
    if ours in row and theirs in row:
        return f"{row[ours] / row[theirs]:.2f}×"
    return "-"


def _seconds(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2f} s" if key in row else "not run"


def markdown(report: dict[str, Any]) -> str:
    models = _gpu_models()
    lines = [
        "# aotcache gpu-bench",
        "",
        f"{report['date']} — {report['machine']} — {report['gpu']}; {report['reps']} fresh processes per "
        f"median; the whole run {report['seconds']:.0f} s",
        "",
        "| model | cold precompile | torch.compile cold | ratio | aotcache load + graphs → 1st output "
        "| torch.compile warm | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        cold, warm = ("precompile_cold_s", "torch_compile_cold_s"), ("load_first_output_s", "torch_compile_warm_s")
        cells = [_seconds(row, cold[0]), _seconds(row, cold[1]), _ratio(row, *cold)]
        cells += [_seconds(row, warm[0]), _seconds(row, warm[1]), _ratio(row, *warm)]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    for row in report["rows"]:
        if "latency_us" in row:
            lines += ["", f"Per call, {row['model']} (µs, medians of 7 rounds of 100 synchronized calls):", ""]
            lines.append(models.latency_table(row["latency_us"]))
            worst = max(d for sizes in row["max_abs_from_eager"].values() for d in sizes.values())
            lines.append(f"\nlargest difference of an aotcache output from eager's: {worst:.3g}")
        for key, error in row["errors"].items():
            lines.append(f"\n**{row['model']}, {key}**: {error}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="bf16", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--spawned", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--models", default="bf16", help="comma-separated: bf16, tiny_llama")
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per warm-start median")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run")
    parser.add_argument("--install", action="store_true", help="install aotcache first, as make gpu-check does")
    parser.add_argument("--report", default=os.environ.get("GPU_REPORT") or os.environ.get("OUT") or "gpu-report")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.cache, args.spawned)))
        return 0
    deadline = Deadline(args.budget)
    started = time.time()
    report_dir = Path(args.report)
    report_dir.mkdir(parents=True, exist_ok=True)
    check = gpu_check()
    machine = check.probe()
    why = check.no_device_reason(machine)
    if why is None and args.install:
        why = check.install([])
    if why is not None:
        line = f"gpu-bench: {why}; nothing measured"
        (report_dir / "gpu-bench.md").write_text(line + "\n")
        print(line)
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="aotcache-bench-gpu-"))
    try:
        rows = [bench_model(name, args.reps, scratch, deadline) for name in args.models.split(",")]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {
        **stamp(),
        "gpu": check.describe(machine),
        "reps": args.reps,
        "rows": rows,
        "seconds": round(time.time() - started, 1),
    }
    (report_dir / "gpu-bench.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (report_dir / "gpu-bench.md").write_text(text)
    print(text)
    print(f"wrote {report_dir / 'gpu-bench.md'} and {report_dir / 'gpu-bench.json'}")
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
