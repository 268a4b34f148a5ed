"""End to end: trace once, compile every range and size, publish, load in a fresh process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _support import LOAD_AND_COMPARE, REPO, TINY_CONFIG, TINY_UNITS, last_json, python_env, run_argv, run_python

import aotcache
from aotcache.errors import CorruptEntry, EntryNotFound, StaleEntry
from aotcache.formats import native
from examples import tiny_llama

# every compile size, and the first, a middle and the last size of every range
CHECK_SIZES = [1, 2, 4, 3, 5, 8, 9, 20, 32]


def _load_in_fresh_process(cache_dir: Path, env: dict[str, str] | None = None, layers: int = 2) -> dict:
    code = LOAD_AND_COMPARE.format(
        layers=layers,
        config=TINY_CONFIG,
        cache=str(cache_dir),
        sizes=CHECK_SIZES,
        too_big=TINY_CONFIG["max_num_batched_tokens"] + 1,
    )
    done = run_python(code, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return last_json(done.stdout)


def test_entry_layout_and_units(tiny_entry) -> None:
    summary = tiny_entry.summary
    assert summary["hit"] is False
    assert summary["sizes_and_ranges"] == TINY_UNITS and summary["units"] == 3 * TINY_UNITS
    assert summary["pieces_unique"] == 3 and summary["pieces_total"] == 3
    # two ranges and three sizes per unique piece; both ranges of a piece are one compile
    assert summary["units_compiled"] == (TINY_UNITS - 1) * 3 and summary["units_shared"] == 3
    path = tiny_entry.path
    assert (path / "manifest.json").is_file() and (path / "graph.py").is_file()
    assert list((path / "kernels").glob("*.so")) and list((path / "artifacts").glob("*.py"))
    assert (tiny_entry.cache_dir / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    assert not list((tiny_entry.cache_dir / "staging").iterdir())


def test_fresh_process_matches_eager_at_every_size(tiny_entry) -> None:
    report = _load_in_fresh_process(tiny_entry.cache_dir)
    assert report["entry"] == tiny_entry.entry_id
    results = {int(k): v for k, v in report["results"].items()}
    for size in CHECK_SIZES:
        diff, _ = results[size]
        assert diff <= 1e-4, (size, diff)
    # exact compile sizes first, else the range that holds the size
    assert results[1][1] == [1, 1] and results[2][1] == [2, 2] and results[4][1] == [4, 4]
    assert (
        results[3][1] == [1, 8] and results[8][1] == [1, 8] and results[9][1] == [9, 32] and results[32][1] == [9, 32]
    )
    assert "size 33 is outside every compiled range" in report["dispatch_error"]
    assert report["compile_side"] == []


def test_load_needs_no_compiler_and_compiles_nothing(tiny_entry, tmp_path) -> None:
    """No gcc/g++/cc on PATH, a fresh empty Inductor cache: loading still works, and
    nothing is written to the Inductor cache (nothing compiled)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    for name in ("gcc", "g++", "cc", "c++", "clang"):
        assert shutil.which(name, path=str(bin_dir)) is None
    inductor_cache = tmp_path / "inductor"
    inductor_cache.mkdir()
    report = _load_in_fresh_process(
        tiny_entry.cache_dir, env={"PATH": str(bin_dir), "TORCHINDUCTOR_CACHE_DIR": str(inductor_cache)}
    )
    assert all(diff <= 1e-4 for diff, _ in report["results"].values())
    assert report["compile_side"] == []
    assert list(inductor_cache.rglob("*")) == []


def test_second_precompile_is_a_hit(tiny_entry) -> None:
    result = aotcache.precompile(tiny_llama.spec, TINY_CONFIG, cache_dir=tiny_entry.cache_dir)
    assert result.hit and result.entry_id == tiny_entry.entry_id
    assert result.summary["units_compiled"] == 0


def test_config_change_misses_with_reason_cache_dir_change_hits(tiny_entry, tmp_path) -> None:
    model = tiny_llama.build(2)
    with pytest.raises(EntryNotFound) as info:
        aotcache.load(model, {**TINY_CONFIG, "compile_sizes": [1, 2]}, cache_dir=tiny_entry.cache_dir, strict=True)
    assert [d.name for d in info.value.differences] == ["config.compile_sizes"]
    assert "config.compile_sizes: [1, 2, 4] -> [1, 2]" in str(info.value)
    # cache_dir is not graph-changing: a config that names another cache dir still hits
    loaded = aotcache.load(
        model, {**TINY_CONFIG, "cache_dir": str(tmp_path)}, cache_dir=tiny_entry.cache_dir, strict=True
    )
    assert loaded is not None and loaded.entry_id == tiny_entry.entry_id


def test_lenient_miss_returns_none_and_counts(tiny_entry) -> None:
    before = aotcache.counters.misses["not-found"]
    assert (
        aotcache.load(
            tiny_llama.build(2),
            {**TINY_CONFIG, "max_num_batched_tokens": 64},
            cache_dir=tiny_entry.cache_dir,
            strict=False,
        )
        is None
    )
    assert aotcache.counters.misses["not-found"] == before + 1


def test_force_load_env_makes_a_miss_an_error(tiny_entry, monkeypatch) -> None:
    monkeypatch.setenv("AOTCACHE_FORCE_LOAD", "1")
    with pytest.raises(EntryNotFound):
        aotcache.load(
            tiny_llama.build(2), {**TINY_CONFIG, "max_num_batched_tokens": 64}, cache_dir=tiny_entry.cache_dir
        )


def test_every_flipped_byte_is_detected_before_anything_runs(tiny_entry, tmp_path, monkeypatch) -> None:
    executed: list[str] = []
    real_exec = native.exec_source

    def spy(source: bytes, filename: str) -> dict:
        executed.append(filename)
        return real_exec(source, filename)

    monkeypatch.setattr(native, "exec_source", spy)
    entry_files = sorted(p.relative_to(tiny_entry.path) for p in tiny_entry.path.rglob("*") if p.is_file())
    assert len(entry_files) > 10
    model = tiny_llama.build(2)
    for rel in entry_files:
        cache = tmp_path / f"c{len(executed)}-{rel.name[:8]}"
        shutil.copytree(tiny_entry.cache_dir, cache)
        target = cache / "entries" / tiny_entry.entry_id / rel
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        with pytest.raises(CorruptEntry) as info:
            aotcache.load(model, TINY_CONFIG, cache_dir=cache, strict=True)
        assert rel.as_posix() in str(info.value) or rel.name == "manifest.json"
        assert executed == [], f"code ran before the corruption of {rel} was detected"
        shutil.rmtree(cache)


def test_edited_source_makes_the_entry_stale(tmp_path) -> None:
    """A copy of the example in its own package: precompile, edit, load -> StaleEntry
    naming the file (old -> new hash)."""
    package = tmp_path / "stalepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = (REPO / "examples" / "tiny_llama.py").read_text().replace("tinyllama", "tinyllama_stale")
    module = package / "model.py"
    module.write_text(source)
    cache = tmp_path / "cache"
    config = {
        **TINY_CONFIG,
        "splitting_ops": ["tinyllama_stale::attention"],
        "compile_sizes": [],
        "max_num_batched_tokens": 16,
    }
    code = f"""
import json, sys, aotcache
sys.path.insert(0, {str(tmp_path)!r})
from stalepkg import model
if sys.argv[1] == "build":
    aotcache.precompile(model.spec, {config!r}, cache_dir={str(cache)!r})
    print("built")
else:
    try:
        aotcache.load(model.build(2), {config!r}, cache_dir={str(cache)!r}, strict=True)
        print(json.dumps({{"error": None}}))
    except aotcache.StaleEntry as exc:
        print(json.dumps({{"error": str(exc), "files": [d.name for d in exc.differences]}}))
"""
    script = tmp_path / "drive.py"
    script.write_text(code)

    def drive(step: str) -> str:
        done = run_argv([sys.executable, str(script), step])
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.strip().splitlines()[-1]

    assert drive("build") == "built"
    assert json.loads(drive("load"))["error"] is None
    module.write_text(
        source.replace("return self.lm_head(self.norm(x))", "return self.lm_head(self.norm(x))  # edited")
    )
    result = json.loads(drive("load"))
    assert result["files"] == ["stalepkg/model.py"]
    assert "stale" in result["error"] and "stalepkg/model.py" in result["error"]


def test_eight_layers_compile_the_same_units_as_two(tiny_entry, tmp_path) -> None:
    result = aotcache.precompile(tiny_llama.spec_8_layers, TINY_CONFIG, cache_dir=tmp_path)
    assert result.summary["pieces_total"] == 9 and result.summary["pieces_unique"] == 3
    assert result.summary["units_compiled"] == tiny_entry.summary["units_compiled"]
    report = _load_in_fresh_process(tmp_path, layers=8)
    assert all(diff <= 1e-4 for diff, _ in report["results"].values())


def test_two_processes_same_key_compile_once(tmp_path) -> None:
    code = f"""
import json, aotcache
from examples import tiny_llama
result = aotcache.precompile(tiny_llama.spec, {TINY_CONFIG!r}, cache_dir={str(tmp_path)!r})
print(json.dumps({{"hit": result.hit, "entry": result.entry_id, "compiles": aotcache.counters.compiles}}))
"""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=python_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(last_json(out))
    assert len({o["entry"] for o in outputs}) == 1
    assert sorted(o["hit"] for o in outputs) == [False, True]
    assert sorted(o["compiles"] for o in outputs) == [0, (TINY_UNITS - 1) * 3]  # both ranges: one compile
    assert len(list((tmp_path / "entries").iterdir())) == 1


def test_eager_backend_entry(tmp_path) -> None:
    result = aotcache.precompile(tiny_llama.spec, {**TINY_CONFIG, "backend": "eager"}, cache_dir=tmp_path)
    assert result.summary["units_compiled"] == 0 and result.summary["artifacts"] == 0
    model = tiny_llama.build(2)
    loaded = aotcache.load(model, {**TINY_CONFIG, "backend": "eager"}, cache_dir=tmp_path, strict=True)
    import torch

    for size in (1, 7, 32):
        inputs = tiny_llama.example_inputs(size)
        with torch.no_grad():
            assert torch.allclose(loaded(*inputs), model(*inputs), atol=1e-6)
    with pytest.raises(aotcache.DispatchError):
        loaded(*tiny_llama.example_inputs(33))


def test_single_piece_model_without_splitting_ops(tmp_path) -> None:
    from examples import mlp

    result = aotcache.precompile(mlp.spec, cache_dir=tmp_path)
    assert result.summary["pieces_total"] == 1
    code = f"""
import json, torch, aotcache
from examples import mlp
model = mlp.build()
loaded = aotcache.load(model, mlp.CONFIG, cache_dir={str(tmp_path)!r}, strict=True)
diffs = []
for n in (1, 3, 4, 8, 9, 32):
    x = mlp.example_inputs(n)
    with torch.no_grad():
        diffs.append(float((loaded(*x) - model(*x)).abs().max()))
print(json.dumps(diffs))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert max(last_json(done.stdout)) <= 1e-4


def test_stale_error_is_typed(tiny_entry) -> None:
    assert issubclass(StaleEntry, aotcache.CacheMiss)
