"""`verify --run`: load an entry in this (fresh) process and compare its outputs with
eager PyTorch at every compile size and at both ends of every range.

Run as `python -m aotcache.serve.checkrun TARGET --cache-dir DIR --config-json JSON`; prints
one JSON object. Uses only the serving path (no Dynamo, no Inductor).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch

from aotcache.config import from_dict
from aotcache.errors import AotCacheError
from aotcache.target import as_spec, import_target

from .inputs import example_arguments
from .loader import load

TOLERANCE = 1e-4


def check_sizes(units: list[list[int]]) -> list[int]:
    sizes: set[int] = set()
    for start, end in units:
        sizes.update((start, end))
    return sorted(sizes)


PROGRESS_PREFIX = "AOTCACHE_PROGRESS"


def report_progress(done: int, total: int, label: str) -> None:
    """A line on stderr that `aotcache verify --run` turns into its progress bar."""
    print(f"{PROGRESS_PREFIX} {done} {total} {label}", file=sys.stderr, flush=True)


def run(target: str, cache_dir: str | None, config: dict[str, Any], entry: str | None) -> dict[str, Any]:
    spec = as_spec(import_target(target), origin=target)
    model = spec.build_model().eval()
    resolved = from_dict(config)
    capture = torch.cuda.is_available() and resolved.cudagraph_mode.name != "NONE"
    started = time.perf_counter()
    loaded = load(
        model, resolved, cache_dir=cache_dir, strict=True, capture_cudagraphs=capture, progress=report_progress
    )
    assert loaded is not None
    load_seconds = time.perf_counter() - started
    if entry and not loaded.entry_id.startswith(entry):
        raise AotCacheError(f"the target loads entry {loaded.entry_id}, not {entry}")
    results = []
    for size in check_sizes([u["range"] for u in loaded.manifest.units]):
        arguments = example_arguments(model, spec.example_inputs, size, loaded.spec)
        with torch.no_grad():
            expected = model(**arguments)
        got = loaded(**arguments)
        expected_leaves = torch.utils._pytree.tree_leaves(expected)
        got_leaves = torch.utils._pytree.tree_leaves(got)
        diff = max((float((a - b).abs().max()) for a, b in zip(expected_leaves, got_leaves, strict=True)), default=0.0)
        unit = loaded.dispatch(size)
        finite = all(bool(torch.isfinite(t).all()) for t in got_leaves)
        results.append(
            {"size": size, "unit": [unit.start, unit.end], "max_abs_diff": diff, "ok": finite and diff <= TOLERANCE}
        )
    return {
        "entry": loaded.entry_id,
        "cudagraphs": capture,
        "load_seconds": round(load_seconds, 4),
        "tolerance": TOLERANCE,
        "results": results,
        "ok": all(r["ok"] for r in results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aotcache.serve.checkrun")
    parser.add_argument("target")
    parser.add_argument("--cache-dir")
    parser.add_argument("--config-json", default="{}")
    parser.add_argument("--entry")
    args = parser.parse_args(argv)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        report = run(args.target, args.cache_dir, json.loads(args.config_json), args.entry)
    except AotCacheError as exc:
        print(json.dumps({"ok": False, "error": exc.one_line(), "reason": getattr(exc, "reason", None)}))
        return 1
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
