"""Real scale, side by side, in one run: models with real checkpoints' shapes (Qwen2-0.5B
in fp32, Llama-3.1-8B in bf16; configs written here, weights random, no network), and
each at 2 layers for the depth curve. `make bench-scale` runs it and writes the "scale"
section of benchmarks/results/latest.json and benchmarks/results/scale.md.

For each model, every step a fresh process with an empty Inductor cache:
  1. `aotcache precompile hf:DIR` with the default config: wall time from spawn, peak
     RSS seen from outside (sampled every 20 ms) and per stage as --json reports it;
  2. torch.compile(dynamic=True), cold, then warm (its caches kept): the seconds from
     the torch.compile call to the first output at 16 tokens (the model build, which
     aotcache never pays, is reported apart), where the weights fit in memory;
  3. serving: build with real weights, aotcache.load, first output (seconds); the
     largest difference from eager at 3 lengths, each also left-padded, and per-call
     latency at 1, 16 and 128 tokens of eager, aotcache and torch.compile (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, stamp, write_section
from scale_models import MODELS, write_config

RUNS = [  # (model, layers or None for the model's own, whether its weights fit in memory here)
    ("qwen2-0.5b", None, True),
    ("qwen2-0.5b", 2, True),
    ("llama-3.1-8b", None, False),  # 16 GB of bf16 weights: torch.compile and serving are not run
    ("llama-3.1-8b", 2, True),
]
FIRST_TOKENS = 16
LATENCY_TOKENS = (1, 16, 128)
CHECK_LENGTHS = (5, 64, 300)
GOALS = {"precompile_over_torch_cold": 1.0, "precompile_peak_gib_qwen2_0_5b": 8.0, "precompile_peak_gib_llama_8b": 12.0}


# -- children: each runs in a fresh interpreter and prints one JSON line ------------------


def _model(folder: str) -> Any:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.AutoConfig.from_pretrained(folder)
    return config, transformers.AutoModelForCausalLM.from_config(config).eval()


def _inputs(config: Any, tokens: int, padded: bool = False) -> dict[str, Any]:
    import torch

    ids = torch.randint(0, config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(tokens))
    mask = torch.ones_like(ids)
    if padded:
        mask[0, : tokens // 3] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _latency(call: Any, config: Any) -> dict[str, float]:
    """Median seconds per call at each length (after one warm-up call each)."""
    import torch

    found = {}
    with torch.no_grad():
        for tokens in LATENCY_TOKENS:
            inputs = _inputs(config, tokens)
            call(inputs)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                call(inputs)
                times.append(time.perf_counter() - start)
            found[str(tokens)] = statistics.median(times)
    return found


def child_torch_compile(folder: str) -> dict[str, Any]:
    import torch

    start = time.perf_counter()
    config, model = _model(folder)
    built = time.perf_counter() - start
    compiled = torch.compile(model, dynamic=True)
    start = time.perf_counter()
    with torch.no_grad():
        compiled(**_inputs(config, FIRST_TOKENS), use_cache=False)
    first = time.perf_counter() - start
    latency = _latency(lambda inputs: compiled(**inputs, use_cache=False), config)
    differences = _differences(model, lambda inputs: compiled(**inputs, use_cache=False), config)
    return {"build_seconds": built, "first_output_seconds": first, "latency": latency, "differences": differences}


def _differences(model: Any, call: Any, config: Any) -> dict[str, dict[str, float]]:
    """The largest difference from eager's logits at each length, also left-padded (the
    rows with nothing to attend to are undefined, so left out), and eager's largest logit."""
    import torch

    found = {}
    with torch.no_grad():
        for tokens in CHECK_LENGTHS:
            for padded in (False, True):
                inputs = _inputs(config, tokens, padded)
                expected = model(**inputs, use_cache=False).logits.float()
                got = call(inputs).logits.float()
                rows = inputs["attention_mask"][0].bool()
                found[f"{tokens}{' left-padded' if padded else ''}"] = {
                    "max_abs": float((got[0][rows] - expected[0][rows]).abs().max()),
                    "max_logit": float(expected[0][rows].abs().max()),
                }
    return found


def child_serve(folder: str, cache: str) -> dict[str, Any]:
    import torch

    import aotcache

    start = time.perf_counter()
    config, model = _model(folder)
    built = time.perf_counter() - start
    start = time.perf_counter()
    loaded = aotcache.load(model, aotcache.hf.default_config(folder), cache_dir=cache, strict=True)
    load = time.perf_counter() - start
    with torch.no_grad():
        loaded(**_inputs(config, FIRST_TOKENS))
    first = time.perf_counter() - start
    differences = _differences(model, lambda inputs: loaded(**inputs), config)
    return {
        "build_seconds": built,
        "load_seconds": load,
        "load_and_first_output_seconds": first,
        "dtype": str(next(model.parameters()).dtype),
        "differences": differences,
        "latency": {
            "eager": _latency(lambda inputs: model(**inputs, use_cache=False), config),
            "aotcache": _latency(lambda inputs: loaded(**inputs), config),
        },
    }


# -- the parent ---------------------------------------------------------------------------


def _last_json(text: str) -> Any:
    """The command's JSON: its whole output (precompile --json), else its last line."""
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(text.strip().splitlines()[-1])


def watched(argv: list[str], env: dict[str, str], timeout: float = 3600) -> dict[str, Any]:
    """Run a command: its wall time, its last JSON line, and the largest resident memory
    seen of it and of any process it started."""
    from aotcache.backend.peak_memory import ResidentWatcher

    spawned = time.perf_counter()
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with ResidentWatcher(process) as seen:
        stdout, stderr = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed:\n{stderr[-3000:]}")
    return {
        "seconds": time.perf_counter() - spawned,
        "result": _last_json(stdout),
        "peak_rss_main": seen.main,
        "peak_rss_workers": seen.workers,
    }


def _env(scratch: Path, name: str) -> dict[str, str]:
    inductor = scratch / f"inductor-{name}"
    env = dict(os.environ)
    env.update(TORCHINDUCTOR_CACHE_DIR=str(inductor), TRITON_CACHE_DIR=str(inductor / "triton"), AOTCACHE_PROGRESS="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def bench_run(model: str, layers: int | None, fits: bool, scratch: Path) -> dict[str, Any]:
    name = f"{model}" + (f" ({layers} layers)" if layers else "")
    tag = name.replace(" ", "_").replace("(", "").replace(")", "")
    folder = write_config(model, scratch / tag, layers)
    cache = scratch / f"cache-{tag}"
    aotcache = str(Path(sys.executable).with_name("aotcache"))
    print(f"{name}: precompile", flush=True)
    built = watched([aotcache, "precompile", f"hf:{folder}", "--cache-dir", str(cache), "--json"], _env(scratch, tag))
    summary = built["result"]
    row: dict[str, Any] = {
        "model": name,
        "layers": layers or MODELS[model]["num_hidden_layers"],
        "dtype": MODELS[model]["dtype"],
        "precompile": {
            "seconds": built["seconds"],
            "peak_rss_main": built["peak_rss_main"],
            "peak_rss_workers": built["peak_rss_workers"],
            "peak_rss_by_stage": summary["peak_rss_bytes"],
            "stage_seconds": summary["seconds"],
            "units_compiled": summary["units_compiled"],
            "sizes_and_ranges": summary["sizes_and_ranges"],
            "pieces_unique": summary["pieces_unique"],
            "artifacts": sorted(json.loads((Path(summary["path"]) / "manifest.json").read_text())["artifacts"]),
        },
    }
    if not fits:
        row["not_run"] = "the weights do not fit in this machine's memory beside a compile: torch.compile, serving"
        return row
    me = [sys.executable, __file__, "--child"]
    print(f"{name}: torch.compile cold, warm", flush=True)
    env = _env(scratch, f"torch-{tag}")
    row["torch_compile_cold"] = watched([*me, "torch", str(folder)], env)
    row["torch_compile_warm"] = watched([*me, "torch", str(folder)], env)
    print(f"{name}: serve", flush=True)
    row["serve"] = watched([*me, "serve", str(folder), str(cache)], _env(scratch, f"serve-{tag}"))
    cold = row["torch_compile_cold"]["result"]["first_output_seconds"]
    row["precompile_over_torch_cold"] = built["seconds"] / cold
    return row


def _compare_depths(rows: list[dict[str, Any]]) -> None:
    """Whether each model's entry holds the same artifacts as its 2-layer version: its
    pieces, which at full depth cannot be run with real weights here, are checked
    through the 2-layer entry, served with real weights."""
    by_name = {row["model"]: row for row in rows}
    for row in rows:
        shallow = by_name.get(f"{row['model']} (2 layers)")
        if shallow is not None:
            row["same_artifacts_as_2_layers"] = row["precompile"]["artifacts"] == shallow["precompile"]["artifacts"]


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | precompile s | peak RSS GiB (main / workers) | torch.compile cold s (build) | warm s | ratio "
        "| load + first output s | max |diff| from eager: aotcache / torch.compile (max |logit|) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        built = row["precompile"]
        head = (
            f"| {row['model']} | {built['seconds']:.1f} | "
            f"{_gib(built['peak_rss_main'])} / {_gib(built['peak_rss_workers'])} |"
        )
        if "serve" not in row:
            lines.append(head + " not run | not run | - | not run | - |")
            continue
        cold, warm, serve = (row[k]["result"] for k in ("torch_compile_cold", "torch_compile_warm", "serve"))
        worst = max(serve["differences"].values(), key=lambda d: d["max_abs"])
        theirs = max(d["max_abs"] for d in cold["differences"].values())
        lines.append(
            head + f" {cold['first_output_seconds']:.1f} ({cold['build_seconds']:.1f}) | "
            f"{warm['first_output_seconds']:.1f} | {row['precompile_over_torch_cold']:.2f}× | "
            f"{serve['load_and_first_output_seconds']:.2f} | {worst['max_abs']:.2e} / {theirs:.2e} "
            f"({worst['max_logit']:.1f}) |"
        )
    for row in rows:
        if "same_artifacts_as_2_layers" in row:
            same = "the same artifacts" if row["same_artifacts_as_2_layers"] else "OTHER artifacts"
            lines.append(f"\n{row['model']}'s entry holds {same} as its 2-layer entry's.")
    lines += ["", "Per-call latency, ms (median of 5): eager / aotcache / torch.compile", ""]
    lines += ["| model | " + " | ".join(f"{t} tokens" for t in LATENCY_TOKENS) + " |", "|---|---|---|---|"]
    for row in rows:
        if "serve" not in row:
            continue
        serve, compiled = row["serve"]["result"]["latency"], row["torch_compile_cold"]["result"]["latency"]
        cells = [
            f"{serve['eager'][str(t)] * 1e3:.1f} / {serve['aotcache'][str(t)] * 1e3:.1f} / {compiled[str(t)] * 1e3:.1f}"
            for t in LATENCY_TOKENS
        ]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--only", help="run only the models whose name contains this")
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        result = child_torch_compile(*rest) if mode == "torch" else child_serve(*rest)
        print(json.dumps(result))
        return 0
    started = time.time()
    scratch = Path(tempfile.mkdtemp(prefix="aotcache-bench-scale-"))
    try:
        runs = [r for r in RUNS if not args.only or args.only in r[0]]
        rows = [bench_run(model, layers, fits, scratch) for model, layers, fits in runs]
        _compare_depths(rows)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {
        **stamp(),
        "goals": GOALS,
        "rows": rows,
        "seconds": round(time.time() - started, 1),
    }
    path = write_section("scale", report)
    text = f"{report['date']} — {report['machine']}\n\n{table(rows)}\n"
    (path.parent / "scale.md").write_text(text)
    print(text)
    print(f"wrote {path} and {path.parent / 'scale.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
