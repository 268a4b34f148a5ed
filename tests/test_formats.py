"""Artifact formats: `native` (compiler-free, the default on CPU) and `inductor` (torch's
own CompiledArtifact, any device). An inductor-format entry of the example precompiles
and loads on CPU in a fresh process and matches eager: the format end to end where no
GPU is present."""

from __future__ import annotations

import json

import pytest
from _support import LOAD_AND_COMPARE, TINY_CONFIG, last_json, run_cli, run_python
from aotcache.cli.app import app
from conftest import INDUCTOR_CONFIG
from typer.testing import CliRunner

from aotcache.config import CompilationConfig
from aotcache.errors import ConfigError
from aotcache.key.lookup import config_factors

CHECK_SIZES = [1, 2, 4, 3, 5, 8, 9, 20, 32]


def test_the_inductor_entry_holds_only_inductor_artifacts(inductor_entry) -> None:
    manifest = json.loads((inductor_entry.path / "manifest.json").read_bytes())
    assert {a["format"] for a in manifest["artifacts"].values()} == {"inductor"} and not manifest["recorded"]["kernels"]
    assert all(rel.endswith(".bin") for rel in manifest["files"] if rel.startswith("artifacts/"))


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
