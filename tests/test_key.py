from __future__ import annotations

import shutil

import pytest
import torch
from _support import TINY_CONFIG, last_json, run_python

from aotcache.configuration import CompilationConfig, from_dict
from aotcache.errors import Difference
from aotcache.key.factors import EntryKey, Factor, explain, hash_factors
from aotcache.key.lookup import lookup_factors
from examples import tiny_llama

KEY_SNIPPET = """
import json, os
from aotcache.configuration import from_dict
from aotcache.key.factors import hash_factors
from aotcache.key.lookup import lookup_factors
from examples import tiny_llama
factors = lookup_factors(from_dict({config!r}), tiny_llama.build(2))
print(json.dumps({{"hash": hash_factors(factors), "factors": [[f.name, f.value] for f in factors]}}))
"""


def test_key_is_a_list_of_named_factors() -> None:
    factors = lookup_factors(from_dict(TINY_CONFIG), tiny_llama.build(2))
    names = [f.name for f in factors]
    assert len(names) == len(set(names))
    for expected in (
        "aotcache.format",
        "config.compile_sizes",
        "config.splitting_ops",
        "model.class",
        "model.parameters",
        "torch.version",
        "torch.git_version",
        "python.version",
        "platform.machine",
        "cpu.capability",
        "torch.default_dtype",
        "torch.deterministic",
        "torch.matmul_precision",
    ):
        assert expected in names
    assert "config.cache_dir" not in names and "config.debug_dump_path" not in names


def test_same_inputs_same_key_across_processes(tmp_path) -> None:
    here = hash_factors(lookup_factors(from_dict(TINY_CONFIG), tiny_llama.build(2)))
    # Another process, another HOME and cache location: the key must not change.
    done = run_python(
        KEY_SNIPPET.format(config=TINY_CONFIG), env={"HOME": str(tmp_path), "AOTCACHE_DIR": str(tmp_path)}
    )
    assert done.returncode == 0, done.stderr
    assert last_json(done.stdout)["hash"] == here


def test_weights_do_not_change_the_key_but_shapes_do() -> None:
    config = from_dict(TINY_CONFIG)
    a, b = tiny_llama.build(2, seed=0), tiny_llama.build(2, seed=1)
    assert hash_factors(lookup_factors(config, a)) == hash_factors(lookup_factors(config, b))
    bigger = tiny_llama.TinyLlama(layers=3)
    assert [d.name for d in explain(lookup_factors(config, a), lookup_factors(config, bigger))] == ["model.parameters"]


def test_cache_dir_is_not_a_factor() -> None:
    model = tiny_llama.build(2)
    a = lookup_factors(CompilationConfig(**TINY_CONFIG, cache_dir="/a"), model)
    b = lookup_factors(CompilationConfig(**TINY_CONFIG, cache_dir="/b"), model)
    assert hash_factors(a) == hash_factors(b)


def test_explain_names_the_changed_factor() -> None:
    model = tiny_llama.build(2)
    old = lookup_factors(from_dict(TINY_CONFIG), model)
    new = lookup_factors(from_dict({**TINY_CONFIG, "compile_sizes": [1, 2]}), model)
    assert explain(old, new) == [Difference("config.compile_sizes", [1, 2, 4], [1, 2])]
    torch.set_default_dtype(torch.float64)
    try:
        newer = lookup_factors(from_dict(TINY_CONFIG), model)
    finally:
        torch.set_default_dtype(torch.float32)
    assert [d.name for d in explain(old, newer)] == ["torch.default_dtype"]
    assert str(explain(old, newer)[0]) == "torch.default_dtype: torch.float32 -> torch.float64"


def test_explain_factor_on_one_side_only() -> None:
    assert explain([Factor("a", 1)], [Factor("a", 1), Factor("b", 2)]) == [Difference("b", None, 2)]


def test_entry_id_combines_lookup_and_build() -> None:
    lookup = [Factor("x", 1)]
    a = EntryKey(lookup, [Factor("sources", "s1")])
    b = EntryKey(lookup, [Factor("sources", "s2")])
    assert a.lookup_hash == b.lookup_hash and a.entry_id != b.entry_id
    assert a.entry_id.startswith(a.lookup_hash + "-")


@pytest.mark.parametrize("var", ["HOME", "AOTCACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"])
def test_per_host_paths_never_enter_the_key(var: str, tmp_path, monkeypatch) -> None:
    model = tiny_llama.build(2)
    before = hash_factors(lookup_factors(from_dict(TINY_CONFIG), model))
    monkeypatch.setenv(var, str(tmp_path / "elsewhere"))
    assert hash_factors(lookup_factors(from_dict(TINY_CONFIG), model)) == before


def test_moved_cache_dir_still_hits(tiny_entry, tmp_path) -> None:
    moved = tmp_path / "moved-cache"
    shutil.copytree(tiny_entry.cache_dir, moved, symlinks=True)
    import aotcache

    loaded = aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=moved, strict=True)
    assert loaded is not None and loaded.entry_id == tiny_entry.entry_id


def test_a_gpu_of_the_same_capability_and_versions_has_the_same_key(monkeypatch) -> None:
    """What the kernels depend on is the capability (and the CUDA, HIP and Triton
    versions), not the product name: an H100 entry serves an H200."""
    from aotcache.key.env import cuda_factors

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))
    keys = []
    for name in ("NVIDIA H100 80GB HBM3", "NVIDIA H200"):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None, name=name: name)
        keys.append(hash_factors(cuda_factors(0)))
    assert keys[0] == keys[1]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (8, 0))
    assert hash_factors(cuda_factors(0)) != keys[0]
