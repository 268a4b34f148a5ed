"""`verify --run`: load an entry in this (fresh) process and compare its outputs with
eager PyTorch at every compile size and at both ends of every range.

Run as `python -m aotcache.verify.child TARGET --cache-dir DIR --config-json JSON`; prints
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

import aotcache.envs as envs
from aotcache.configuration import CompilationConfig, from_dict
from aotcache.custom_op import bind_custom_ops
from aotcache.errors import AotCacheError
from aotcache.serve.inputs import example_arguments
from aotcache.serve.loader import load
from aotcache.serve.parts import find_part, part_examples, part_path
from aotcache.store.root import CacheRoot, resolve_cache_dir
from aotcache.store.signing import signature_checker
from aotcache.target import as_spec, import_target

from .fresh_process import NO_COMPILER, PROGRESS_PREFIX
from .report import report_for
from .results import PartVerdict

TOLERANCE = 1e-4


def check_sizes(units: list[list[int]]) -> list[int]:
    sizes: set[int] = set()
    for start, end in units:
        sizes.update((start, end))
    return sorted(sizes)


def report_progress(done: int, total: int, label: str) -> None:
    """A line on stderr that `aotcache verify --run` turns into its progress bar."""
    print(f"{PROGRESS_PREFIX} {done} {total} {label}", file=sys.stderr, flush=True)


def check_entry(cache_dir: str | None, entry: str, trusted_key: str | None, strict: bool) -> PartVerdict:
    """Every check of the entry again, in this process, before any code is imported."""
    root = CacheRoot(resolve_cache_dir(cache_dir))
    report = report_for(root.entry_dir(entry), verify_signature=signature_checker(trusted_key), strict=strict)
    if not report.ok:
        failed = [c.check for c in report.checks if not c.ok] + report.warnings * strict
        raise AotCacheError(f"entry {entry} did not pass its checks ({', '.join(failed)}); nothing was run")
    return report


# The cold load `verify --run` proves: the parent (fresh_process) starts this process
# with empty Inductor and Triton caches, and with the C++ compiler hidden (CXX pointing
# nowhere) unless loading the entry needs one; here Triton's compiler is made to raise,
# so a kernel that would be compiled at load instead of launched from the entry shows.


def forbid_compiles(needs: list[str]) -> list[str]:
    """Make Triton's compiler refuse (where loading would use Triton); the list records
    each attempt."""
    attempts: list[str] = []
    if "triton" not in needs or "c compiler" in needs:
        return attempts  # no Triton, or kernels the entry says Triton's own launcher loads
    try:
        import triton
        import triton.compiler.compiler as triton_compiler
    except ImportError:
        return attempts

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(str(getattr(args[0], "fn", args[0]) if args else "a kernel")[:200])
        raise RuntimeError("verify --run: a Triton kernel was compiled at load (it should come from the entry)")

    triton.compile = triton_compiler.compile = refuse
    return attempts


def cold_facts(needs: list[str], attempts: list[str]) -> dict[str, Any]:
    compiler_hidden = envs.get(envs.CXX) == NO_COMPILER
    # The inductor format on CPU compiles its kernels again, by design; on CUDA, kernels the
    # static launcher cannot take get Triton's launcher stub built.
    expected = "c++ compiler" in needs or "c compiler" in needs
    return {
        "caches": envs.text(envs.TORCHINDUCTOR_CACHE_DIR),
        "compiler": "hidden" if compiler_hidden else ("present: loading needs it" if expected else "present"),
        "inductor_imported": "torch._inductor" in sys.modules,
        "compiled": bool(attempts) or expected,
        "compile_attempts": attempts,
    }


def run(
    target: str,
    cache_dir: str | None,
    config: dict[str, Any],
    entry: str | None,
    trusted_key: str | None = None,
    strict: bool = False,
    part_of: str | None = None,
) -> dict[str, Any]:
    """`part_of`: "Model.path" of a part of a model served as parts (its entry's
    part_of): that submodule is loaded and compared, on the example the model gives it."""
    needs = (check_entry(cache_dir, entry, trusted_key, strict).load_needs or []) if entry else []
    attempts = forbid_compiles(needs)
    spec = as_spec(import_target(target), origin=target)
    model = spec.build_model().eval()
    example_inputs = spec.example_inputs
    if part_of:
        path = part_path(model, part_of)
        example_inputs = part_examples(model, example_inputs, [path])[path]
        model = find_part(model, path)
    resolved = from_dict(config)
    capture = torch.cuda.is_available() and resolved.cudagraph_mode.name != "NONE"
    started = time.perf_counter()
    loaded = load(
        model,
        resolved,
        cache_dir=cache_dir,
        strict=True,
        trusted_key=trusted_key,
        capture_cudagraphs=capture,
        progress=report_progress,
    )
    assert loaded is not None
    load_seconds = time.perf_counter() - started
    if entry and not loaded.entry_id.startswith(entry):
        raise AotCacheError(f"the target loads entry {loaded.entry_id}, not {entry}")
    return {
        "entry": loaded.entry_id,
        "cudagraphs": capture,
        "load_seconds": round(load_seconds, 4),
        "tolerance": TOLERANCE,
        "signature_checked": trusted_key is not None,
        "strict": strict,
        "cold": cold_facts(needs, attempts),
        **compare_with_eager(model, example_inputs, loaded, resolved),
    }


def compare_with_eager(
    model: torch.nn.Module, example_inputs: Any, loaded: Any, config: CompilationConfig
) -> dict[str, Any]:
    """Outputs of the loaded entry against eager at every compile size and both ends of
    every range (CustomOp layers bound to the config's rules, as in the trace)."""
    bind_custom_ops(model, config)
    results = []
    for size in check_sizes([u.range for u in loaded.manifest.served_units]):
        arguments = example_arguments(model, example_inputs, size, loaded.spec)
        with torch.no_grad():
            expected = model.forward(**arguments)  # eager: a decorated __call__ would load
        got = loaded(**arguments)
        expected_leaves = torch.utils._pytree.tree_leaves(expected)
        got_leaves = torch.utils._pytree.tree_leaves(got)
        diff = max((float((a - b).abs().max()) for a, b in zip(expected_leaves, got_leaves, strict=True)), default=0.0)
        unit = loaded.dispatch(size)
        finite = all(bool(torch.isfinite(t).all()) for t in got_leaves)
        results.append(
            {"size": size, "unit": [unit.start, unit.end], "max_abs_diff": diff, "ok": finite and diff <= TOLERANCE}
        )
    return {"results": results, "ok": all(r["ok"] for r in results)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aotcache.verify.child")
    parser.add_argument("target")
    parser.add_argument("--cache-dir")
    parser.add_argument("--config-json", default="{}")
    parser.add_argument("--entry")
    parser.add_argument("--trusted-key")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--part-of")
    args = parser.parse_args(argv)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        config = json.loads(args.config_json)
        report = run(args.target, args.cache_dir, config, args.entry, args.trusted_key, args.strict, args.part_of)
    except AotCacheError as exc:
        print(json.dumps({"ok": False, "error": exc.one_line(), "reason": getattr(exc, "reason", None)}))
        return 1
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
