"""Artifact formats: `native` (compiler-free, the default on CPU) and `inductor` (torch's
own CompiledArtifact, any device). An inductor-format entry of the example precompiles
and loads on CPU in a fresh process and matches eager: the format end to end where no
GPU is present."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest
from _support import LOAD_AND_COMPARE, TINY_CONFIG, last_json, run_cli, run_python
from conftest import INDUCTOR_CONFIG
from typer.testing import CliRunner

from aotcache.cli.app import app
from aotcache.configuration import CompilationConfig
from aotcache.errors import ConfigError
from aotcache.formats import Artifact
from aotcache.key.lookup import config_factors

CHECK_SIZES = [1, 2, 4, 3, 5, 8, 9, 20, 32]


def test_the_inductor_entry_holds_only_inductor_artifacts(inductor_entry) -> None:
    manifest = json.loads((inductor_entry.path / "manifest.json").read_bytes())
    assert {a["format"] for a in manifest["artifacts"].values()} == {"inductor"} and not manifest["recorded"]["kernels"]
    assert all(rel.endswith(".bin") for rel in manifest["files"] if rel.startswith("artifacts/"))
    # No Triton kernels on the CPU: nothing recorded about launching them.
    assert not any("triton_kernels" in a or "dynamic_launch" in a for a in manifest["artifacts"].values())


def test_artifact_format_is_validated_and_a_key_factor() -> None:
    assert CompilationConfig().artifact_format == "auto"
    with pytest.raises(ConfigError, match="artifact_format"):
        CompilationConfig(artifact_format="pickle")
    native = dict((f.name, f.value) for f in config_factors(CompilationConfig(artifact_format="native")))
    assert native["config.artifact_format"] == "native"
    assert config_factors(CompilationConfig(artifact_format="inductor")) != config_factors(CompilationConfig())


def test_inductor_format_loads_in_a_fresh_process_and_matches_eager(inductor_entry) -> None:
    cache, entry_id = inductor_entry.cache_dir, inductor_entry.entry_id
    code = LOAD_AND_COMPARE.format(
        layers=2,
        config=INDUCTOR_CONFIG,
        cache=str(cache),
        sizes=CHECK_SIZES,
        too_big=TINY_CONFIG["max_num_batched_tokens"] + 1,
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    report = last_json(done.stdout)
    assert report["entry"] == entry_id
    for size, (diff, _) in report["results"].items():
        assert diff <= 1e-4, size
    assert "size 33" in report["dispatch_error"]
    assert any(m.startswith("torch._inductor") for m in report["compile_side"])  # this format needs Inductor


def test_load_needs_are_reported(inductor_entry, tiny_entry) -> None:
    cache, entry_id = inductor_entry.cache_dir, inductor_entry.entry_id
    shown = CliRunner().invoke(app, ["inspect-cache", "--cache-dir", str(cache), "--json"])
    assert json.loads(shown.stdout)["entries"][0]["load_needs"] == ["c++ compiler", "inductor"]
    native = CliRunner().invoke(app, ["inspect-cache", "--cache-dir", str(tiny_entry.cache_dir), "--json"])
    assert json.loads(native.stdout)["entries"][0]["load_needs"] == []
    verified = CliRunner().invoke(app, ["verify", entry_id, "--cache-dir", str(cache), "--json"])
    assert json.loads(verified.stdout)["load_needs"] == ["c++ compiler", "inductor"]


def test_verify_strict_fails_where_the_host_lacks_what_loading_needs(inductor_entry, tiny_entry) -> None:
    cache, entry_id = inductor_entry.cache_dir, inductor_entry.entry_id
    no_compiler = {"PATH": "/nonexistent", "CXX": ""}
    lenient = run_cli("verify", entry_id, "--cache-dir", str(cache), "--json", env=no_compiler)
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    assert "needs c++ compiler, which this host lacks" in " ".join(json.loads(lenient.stdout)["warnings"])
    strict = run_cli("verify", entry_id, "--cache-dir", str(cache), "--strict", env=no_compiler)
    assert strict.returncode == 1 and "c++ compiler" in strict.stdout
    native = run_cli("verify", tiny_entry.entry_id, "--cache-dir", str(tiny_entry.cache_dir), "--json", env=no_compiler)
    assert not any("lacks" in w for w in json.loads(native.stdout)["warnings"])  # compiler-free: nothing lacking


def test_native_and_inductor_entries_live_side_by_side(inductor_entry, tiny_entry) -> None:
    assert inductor_entry.entry_id.split("-")[0] != tiny_entry.entry_id.split("-")[0]


TAMPERED_LOAD = """
import json, os, torch, aotcache
from examples import tiny_llama
model = tiny_llama.build(2)
loaded = aotcache.load(model, {config!r}, cache_dir={cache!r}, strict=True)
worst = 0.0
for size in (1, 3, 8, 20):
    ids = tiny_llama.example_inputs(size)[0]
    with torch.no_grad():
        worst = max(worst, float((loaded(ids) - model(ids)).abs().max()))
print(json.dumps({{"worst": worst, "shared": os.environ["TORCHINDUCTOR_CACHE_DIR"]}}))
"""


def test_an_inductor_load_never_runs_what_the_shared_cache_holds(inductor_entry, tmp_path) -> None:
    """The shared Inductor cache (/tmp/torchinductor_$USER by default) holds the kernels
    the build compiled; any process of the user can plant others there. A load unpacks
    and compiles in a private cache dir of its own instead: with every kernel of the
    shared cache replaced by garbage, the entry still loads right."""
    shared = tmp_path / "shared-inductor-cache"
    shutil.copytree(os.environ["TORCHINDUCTOR_CACHE_DIR"], shared)
    planted = [p for p in shared.rglob("*.so")] + [p for p in shared.rglob("*.py")]
    assert planted
    for path in planted:
        path.write_bytes(b"\\x7fELF planted, not a kernel")
    code = TAMPERED_LOAD.format(config=INDUCTOR_CONFIG, cache=str(inductor_entry.cache_dir))
    done = run_python(code, env={"TORCHINDUCTOR_CACHE_DIR": str(shared)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert last_json(done.stdout)["worst"] <= 1e-4
    assert all(path.read_bytes() == b"\\x7fELF planted, not a kernel" for path in planted)  # never touched


def test_a_cuda_artifact_on_a_host_without_triton_is_an_environment_problem(monkeypatch) -> None:
    from aotcache.errors import IncompatibleEnvironment
    from aotcache.formats import inductor

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else object())
    record = Artifact.from_json({"format": "inductor", "binary": "artifacts/x.bin", "device_types": ["cuda"]})
    with pytest.raises(IncompatibleEnvironment, match="needs triton, which this host lacks"):
        inductor.load_artifact({"artifacts/x.bin": b"not even read"}, record, "x")


def test_kernels_the_static_launcher_cannot_take_make_loading_need_a_c_compiler(monkeypatch) -> None:
    """Triton's own launcher builds a C stub at load: an artifact that records such
    kernels says so in load_needs, and a host without a C compiler is told before any
    byte is loaded. (Which kernels those are is read from torch's Triton bundle at
    precompile, on GPUs only: the GPU suite checks a real entry's record.)"""
    from aotcache.errors import IncompatibleEnvironment
    from aotcache.formats import inductor, load_needs

    unknown_json = {"format": "inductor", "binary": "artifacts/x.bin", "device_types": ["cuda"], "triton_kernels": 3}
    static = Artifact.from_json({**unknown_json, "dynamic_launch": []})
    dynamic = Artifact.from_json({**unknown_json, "dynamic_launch": ["triton_red_fused_sum_0"]})
    assert load_needs({"x": static}) == ["inductor", "triton"]
    assert load_needs({"x": static, "y": dynamic}) == ["c compiler", "inductor", "triton"]
    # a torch whose Triton bundle does not say which kernels the static launcher takes
    assert load_needs({"x": Artifact.from_json(unknown_json)}) == ["c compiler", "inductor", "triton"]
    monkeypatch.setenv("TORCHINDUCTOR_USE_STATIC_CUDA_LAUNCHER", "0")  # the serving host turned it off
    assert load_needs({"x": static}) == ["c compiler", "inductor", "triton"]
    monkeypatch.setenv("TORCHINDUCTOR_USE_STATIC_CUDA_LAUNCHER", "1")
    assert load_needs({"x": static}) == ["inductor", "triton"]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(IncompatibleEnvironment, match="needs c compiler"):
        inductor.load_artifact({"artifacts/x.bin": b"not even read"}, dynamic, "x")


def test_verify_run_loads_cold_with_no_compiler_for_a_native_entry(tiny_entry) -> None:
    done = run_cli("verify", "examples/tiny_llama.py:spec", "--run", "-O", json.dumps(TINY_CONFIG),
                   "--cache-dir", str(tiny_entry.cache_dir), "--json")  # fmt: skip
    run = json.loads(done.stdout)["run"]
    assert done.returncode == 0 and run["ok"], done.stdout[-2000:] + done.stderr[-2000:]
    assert run["cold"]["compiler"] == "hidden" and run["cold"]["inductor_imported"] is False
    assert run["cold"]["compiled"] is False and "aotcache-verify-" in run["cold"]["caches"]
