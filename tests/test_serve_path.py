"""The serving path: no compiler, no Dynamo, and a refusal (never a result) on a host
that cannot run what the entry was compiled for."""

from __future__ import annotations

import json

import pytest
import torch
from _support import TINY_CONFIG, copy_cache, last_json, rewrite_manifest, rewrite_manifest_as_built, run_python

import aotcache
from aotcache.errors import IncompatibleEnvironment
from aotcache.key.env import flags_from_arch_options, host_cpu_flags, required_cpu_flags
from aotcache.key.factors import Factor
from examples import tiny_llama

STRICT_LOAD = """
import json, aotcache
from examples import tiny_llama
try:
    loaded = aotcache.load(tiny_llama.build(2), {config!r}, cache_dir={cache!r}, strict=True)
    out = loaded(*tiny_llama.example_inputs(5))
    print(json.dumps({{"loaded": True, "finite": bool(out.isfinite().all())}}))
except aotcache.CacheMiss as exc:
    print(json.dumps({{"loaded": False, "type": type(exc).__name__, "message": str(exc),
                      "factors": [d.name for d in exc.differences]}}))
"""


def _strict_load(cache: str, env: dict[str, str]) -> dict:
    done = run_python(STRICT_LOAD.format(config=TINY_CONFIG, cache=cache), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return last_json(done.stdout)


def test_manifest_records_what_the_build_host_knew(tiny_entry) -> None:
    manifest = aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=tiny_entry.cache_dir, strict=True).manifest
    recorded = manifest.recorded
    assert recorded["vec_isa"] and recorded["compiler"].startswith(("g++", "c++"))
    assert recorded["march"] == "native" and recorded["cpu_flags"] and len(recorded["torch_key"]) == 64
    assert "libc.so.6" in recorded["runtime_versions"]
    assert set(flags_from_arch_options(recorded["vec_isa_flags"])) <= set(required_cpu_flags(recorded))


def test_host_without_the_recorded_isa_is_refused(tiny_entry) -> None:
    required = required_cpu_flags(
        aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=tiny_entry.cache_dir, strict=True).manifest.recorded
    )
    dropped = required[0]
    fewer = " ".join(sorted(host_cpu_flags() - {dropped}))
    report = _strict_load(str(tiny_entry.cache_dir), {"AOTCACHE_CPU_FLAGS": fewer})
    assert report["loaded"] is False and report["type"] == "IncompatibleEnvironment"
    assert report["factors"] == ["cpu.flags"] and dropped in report["message"]


def test_other_aten_cpu_capability_is_refused_with_the_factor_named(tiny_entry) -> None:
    host = torch.backends.cpu.get_cpu_capability()
    other = "default" if host != "DEFAULT" else "avx2"
    report = _strict_load(str(tiny_entry.cache_dir), {"ATEN_CPU_CAPABILITY": other})
    assert report["loaded"] is False and report["type"] == "IncompatibleEnvironment"
    assert report["factors"] == ["cpu.capability"]
    assert f"cpu.capability: {host} -> {other.upper()}" in report["message"]


@pytest.mark.parametrize(("factor", "value"), [("torch.version", "1.0.0"), ("cpu.capability", "SVE256")])
def test_verify_by_key_compares_the_recorded_environment(factor: str, value: str, tiny_entry, tmp_path) -> None:
    """An entry built elsewhere is never found under this host's lookup key (the load
    above misses, naming the factor); named by its key, as `verify KEY`, a pull and a
    remote unit reuse find it, its recorded environment is what refuses it."""
    from aotcache.store.root import CacheRoot
    from aotcache.verify.report import verify_entry

    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "c")

    def edit(manifest: aotcache.store.manifest.Manifest) -> None:
        manifest.lookup = [Factor(f.name, value) if f.name == factor else f for f in manifest.lookup]

    moved = rewrite_manifest_as_built(cache / "entries" / tiny_entry.entry_id, edit)
    verdict = verify_entry(CacheRoot(cache), moved.name)
    environment = next(c for c in verdict.checks if c.check == "environment")
    assert not verdict.ok and not environment.ok, verdict
    assert [d["name"] for d in environment.differences] == [factor], environment
    assert all(c.ok for c in verdict.checks if c.check != "environment"), verdict


def test_kernels_from_a_newer_compiler_runtime_are_refused(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "c")
    entry = cache / "entries" / tiny_entry.entry_id

    def newer(manifest: aotcache.store.manifest.Manifest) -> None:
        manifest.recorded["compiler"] = "g++: g++ (GCC) 99.1.0"
        manifest.recorded["runtime_versions"]["libstdc++.so.6"] = ["GLIBCXX_3.4.99"]

    rewrite_manifest(entry, newer)
    with pytest.raises(IncompatibleEnvironment) as info:
        aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=cache, strict=True)
    assert [d.name for d in info.value.differences] == ["compiler"]
    assert "GLIBCXX_3.4.99" in str(info.value) and "99.1.0" in str(info.value)


@pytest.mark.parametrize(
    ("factor", "value"),
    [("torch.version", "1.0.0"), ("python.version", "3.99"), ("cpu.capability", "SVE256"), ("device.type", "cuda")],
)
def test_edited_environment_factor_is_refused(factor: str, value: str, tiny_entry, code_runs, tmp_path) -> None:
    """An entry built for another environment is refused naming the factor, and nothing of
    it runs (the spies fire on a good load first)."""
    assert aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=tiny_entry.cache_dir, strict=True) is not None
    assert {"exec", "dlopen"} <= set(code_runs)
    code_runs.clear()
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "c")
    entry = cache / "entries" / tiny_entry.entry_id

    def edit(manifest: aotcache.store.manifest.Manifest) -> None:
        manifest.lookup = [Factor(f.name, value) if f.name == factor else f for f in manifest.lookup]
        if factor == "device.type":
            manifest.recorded["device_type"] = value

    rewrite_manifest_as_built(entry, edit)
    with pytest.raises(IncompatibleEnvironment) as info:
        aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=cache, strict=True)
    assert [d.name for d in info.value.differences] == [factor]
    assert code_runs == [], f"code of an entry built for another {factor} ran"


def test_verify_reports_the_refusal(tiny_entry) -> None:
    from _support import run_cli

    done = run_cli(
        "verify",
        tiny_entry.entry_id,
        "--cache-dir",
        str(tiny_entry.cache_dir),
        "--json",
        env={"AOTCACHE_CPU_FLAGS": "sse2"},
    )
    assert done.returncode == 1
    environment = next(c for c in json.loads(done.stdout)["checks"] if c["check"] == "environment")
    assert not environment["ok"] and environment["differences"][0]["name"] == "cpu.flags"
