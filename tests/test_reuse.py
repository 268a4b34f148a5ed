"""Incremental precompile: a rebuild compiles only the units whose inputs changed, and
takes every other artifact from an earlier valid entry (issue 15's reuse)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from _support import REPO, TINY_CONFIG, TINY_UNITS, copy_cache, last_json, run_argv, run_cli

from aotcache.store.root import CacheRoot

DRIVE = """
import json, sys, torch, aotcache
sys.path.insert(0, {folder!r})
from reusepkg import model
config = json.loads(sys.argv[2])
if sys.argv[1] == "build":
    result = aotcache.precompile(model.spec, config, cache_dir={cache!r})
    print(json.dumps(result.summary))
else:
    net = model.build(2)
    loaded = aotcache.load(net, config, cache_dir={cache!r}, strict=True)
    worst = 0.0
    for size in (1, 2, 4, 3, 8, 9, 16, 32):
        ids = model.example_inputs(size)[0]
        with torch.no_grad():
            worst = max(worst, float((loaded(ids) - net(ids)).abs().max()))
    print(json.dumps({{"worst": worst, "entry": loaded.entry_id}}))
"""


class Package:
    """A copy of the example model in a package of its own, to edit."""

    def __init__(self, folder: Path, cache: Path) -> None:
        self.folder = folder
        (folder / "reusepkg").mkdir()
        (folder / "reusepkg" / "__init__.py").write_text("")
        self.source = (REPO / "examples" / "tiny_llama.py").read_text().replace("tinyllama", "tinyllama_reuse")
        self.module = folder / "reusepkg" / "model.py"
        self.module.write_text(self.source)
        self.script = folder / "drive.py"
        self.script.write_text(DRIVE.format(folder=str(folder), cache=str(cache)))
        self.config = {**TINY_CONFIG, "splitting_ops": ["tinyllama_reuse::attention"]}

    def run(self, step: str, **config: Any) -> dict[str, Any]:
        done = run_argv([sys.executable, str(self.script), step, json.dumps({**self.config, **config})])
        assert done.returncode == 0, done.stderr[-3000:]
        return last_json(done.stdout)

    def edit(self, old: str, new: str) -> None:
        assert old in self.source
        self.source = self.source.replace(old, new)
        self.module.write_text(self.source)


def test_rebuilds_compile_only_what_changed(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    package = Package(tmp_path, cache)
    units = TINY_UNITS * 3
    # Another model file, the same pieces: every artifact comes from the example's entry.
    first = package.run("build")
    assert (first["units_compiled"], first["units_reused"]) == (0, units) and first["entry"] != tiny_entry.entry_id
    assert package.run("load")["worst"] <= 1e-4
    # A comment-only edit: a new entry (the sources changed), nothing compiled.
    package.edit("return self.lm_head(self.norm(x))", "return self.lm_head(self.norm(x))  # a comment")
    edited = package.run("build")
    assert edited["entry"] != first["entry"] and (edited["units_compiled"], edited["units_reused"]) == (0, units)
    # One more compile size: only its units (one per unique piece).
    sized = package.run("build", compile_sizes=[1, 2, 4, 16])
    assert (sized["units_compiled"], sized["units_reused"]) == (3, units)
    assert package.run("load", compile_sizes=[1, 2, 4, 16])["worst"] <= 1e-4
    # A changed last layer: only the last piece's units.
    package.edit("return self.lm_head(self.norm(x))  # a comment", "return self.lm_head(self.norm(x)) * 2.0")
    changed = package.run("build")
    assert (changed["units_compiled"], changed["units_reused"]) == (TINY_UNITS - 1, units - TINY_UNITS)
    assert changed["units_shared"] == 1  # its two ranges are one compile
    assert package.run("load")["worst"] <= 1e-4


def test_nothing_is_reused_from_an_entry_that_fails_its_checks(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    kernel = next((cache / "entries" / tiny_entry.entry_id / "kernels").iterdir())
    kernel.write_bytes(kernel.read_bytes()[:-1])  # the example's entry is now corrupt
    result = Package(tmp_path, cache).run("build")
    assert (result["units_compiled"] + result["units_shared"], result["units_reused"]) == (TINY_UNITS * 3, 0)
    assert len(list(CacheRoot(cache).index.iterdir())) >= TINY_UNITS * 3


def test_clear_drops_index_records_of_entries_that_are_gone(tiny_entry, tmp_path) -> None:
    from aotcache.store.clear import clear, select

    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    root = CacheRoot(cache)
    records = len(list(root.index.iterdir()))
    assert records >= TINY_UNITS * 3
    (root.index / "junk.json").write_text("not json")
    report = clear(root, *select(root, keys=[tiny_entry.entry_id]), dry_run=False)
    assert report.index_records_removed == records + 1 and list(root.index.iterdir()) == []


def test_a_signed_build_reuses_only_what_the_same_key_signed(tiny_entry, tmp_path) -> None:
    """Reusing an artifact puts it in the new entry, which the build then signs: from an
    unsigned entry (which anyone who can write the cache dir could have altered) that
    would vouch for bytes nobody checked. The unsigned control reuses the same units."""
    key, other_key = tmp_path / "release.secret", tmp_path / "other.secret"
    key.write_bytes(b"0123456789abcdef0123456789abcdef")
    other_key.write_bytes(b"fedcba9876543210fedcba9876543210")

    def build(cache: Path, max_tokens: int, *sign: str) -> dict[str, Any]:
        config = json.dumps({**TINY_CONFIG, "max_num_batched_tokens": max_tokens})
        done = run_cli(
            "precompile", "examples/tiny_llama.py:spec", "-O", config, "--cache-dir", str(cache), "--json", *sign
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    shared_units = (TINY_UNITS - 1) * 3  # the sizes and the first range, per unique piece
    unsigned = build(copy_cache(tiny_entry.cache_dir, tmp_path / "control"), 40)
    assert unsigned["units_reused"] == shared_units  # the control: these units can be reused
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "signed")
    signed = build(cache, 40, "--sign-key", str(key))
    assert signed["signed"] and signed["units_reused"] == 0, signed
    again = build(cache, 48, "--sign-key", str(key))
    assert again["units_reused"] == shared_units  # from the entry this key signed
    other = build(cache, 56, "--sign-key", str(other_key))
    assert other["units_reused"] == 0
