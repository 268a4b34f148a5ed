"""precompile --jobs: units compiled in forked workers give the same bytes as a
sequential build (each from an empty Inductor cache), and units whose compile inputs
are equal are compiled once, which Inductor's own cache key confirms."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _support import TINY_CONFIG, TINY_UNITS, run_cli

from aotcache.configuration import Range
from aotcache.serve.inputs import example_arguments, infer_dynamic_dims
from examples import tiny_llama


def _build(tmp_path: Path, name: str, jobs: int) -> tuple[dict, Path]:
    """A cold precompile in a fresh process, from an empty Inductor cache (always at the
    same path: g++ records the kernel source's path in each .so)."""
    cache = tmp_path / name
    shutil.rmtree(tmp_path / "inductor", ignore_errors=True)
    done = run_cli(
        "precompile",
        "examples/tiny_llama.py:spec",
        "--cache-dir",
        str(cache),
        "--jobs",
        str(jobs),
        "-O",
        json.dumps(TINY_CONFIG),
        "--json",
        env={"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    return summary, Path(summary["path"])


def _without_build_facts(manifest: Path) -> dict:
    body = json.loads(manifest.read_bytes())
    for name in ("created", "checksum", "stats"):  # when and how long: not what was built
        body.pop(name)
    return body


@pytest.mark.fault
def test_parallel_units_are_byte_identical_to_a_sequential_build(tmp_path) -> None:
    sequential, one = _build(tmp_path, "sequential", 1)
    parallel, two = _build(tmp_path, "parallel", 2)
    assert sequential["entry"] == parallel["entry"]
    # the workers really compiled (a fall-back to one process would compare a build with itself)
    assert (sequential["units_compiled_in_workers"], sequential["worker_processes"]) == (0, 0)
    assert parallel["units_compiled_in_workers"] >= parallel["units_compiled"] - 1 > 0
    assert parallel["worker_processes"] >= 1
    for summary in (sequential, parallel):
        assert summary["units_compiled"] == (TINY_UNITS - 1) * 3 and summary["units_shared"] == 3
    files_one = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    files_two = sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert files_one == files_two and len(files_one) > 10
    for rel in files_one:
        if rel.name != "manifest.json":
            assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    assert _without_build_facts(one / "manifest.json") == _without_build_facts(two / "manifest.json")
    verified = run_cli("verify", parallel["entry"], "--cache-dir", str(two.parent.parent), "--run")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_every_range_of_a_piece_is_one_compile_by_inductors_own_key() -> None:
    """The reason compile_inputs_key folds ranges together: compiled apart, two ranges of
    a piece get the same Inductor FX-graph cache key and the same code."""
    from aotcache.backend.capture import capture
    from aotcache.backend.compile import compile_unit
    from aotcache.backend.split import split_graph
    from aotcache.backend.units import compile_inputs_key

    model = tiny_llama.build()
    arguments = example_arguments(model, tiny_llama.spec.example_inputs, 8, None)
    captured = capture(model, arguments, infer_dynamic_dims(type(model).forward), TINY_CONFIG["splitting_ops"])
    piece = split_graph(captured.graph, TINY_CONFIG["splitting_ops"]).unique_pieces()[-1]
    low, high = Range(1, 8), Range(9, 32)
    assert compile_inputs_key(low, piece.digest) == compile_inputs_key(high, piece.digest)
    assert compile_inputs_key(Range(4, 4), piece.digest) != compile_inputs_key(low, piece.digest)
    with torch.no_grad():
        first = compile_unit(piece.graph, piece.digest, low, None, {})
        second = compile_unit(piece.graph, piece.digest, high, None, {})
    key = first.artifact._compiled_fn._fx_graph_cache_key
    assert key and key == second.artifact._compiled_fn._fx_graph_cache_key
    assert first.native is not None and second.native is not None
    assert first.native.wrapper == second.native.wrapper
