"""The guards of the newer paths, each proved by a test that fails without it (issue 33):
shape guards read by a grammar, never run; remote units checked for this host; an entry
id that covers its manifest; the signature on the no-change remote path; torch in the
unit key; the attention arguments aotcache::attention would drop; the routing check of
an `hf:` target; usage stamps; held locks; SOURCE_DATE_EPOCH; an entry from another
torch. Cheap: none compiles more than an eager build."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import settings_models as sm
import torch
import transformers
from _support import TINY_CONFIG, copy_cache, last_json, rewrite_manifest, rewrite_manifest_as_built, run_python

import aotcache
from aotcache import hf
from aotcache.backend.compile import readable_guards
from aotcache.backend.shape_guards import UnreadableGuard, holds
from aotcache.configuration import Range
from aotcache.errors import CorruptEntry, IncompatibleEnvironment
from aotcache.fleet.connect import open_remote
from aotcache.fleet.push import push
from aotcache.fleet.unit_reuse import RemoteArtifacts
from aotcache.key.factors import Factor
from aotcache.store import manifest as manifest_mod
from aotcache.store.root import CacheRoot
from examples import tiny_llama

# -- shape guards: data, never code ----------------------------------------------------------


def test_shape_guards_are_read_by_a_grammar_and_never_run(tmp_path) -> None:
    """What Inductor writes is read; a guard string that would run code where it is
    eval'd is refused before anything of it runs (a unit taken from another entry is
    then compiled here)."""
    assert [holds("2 <= L['s0']", n) for n in (1, 2, 9)] == [False, True, True]
    assert [holds("Eq(Mod(L['s0'], 8), 0) and L['s0'] <= 64", n) for n in (8, 12, 72)] == [True, False, False]
    assert holds("math.floor(L['s0'] / 2) >= 1 and Ne(L['s0'], 5)", 4)
    marker = tmp_path / "ran"
    attacks = [
        f"Eq.__globals__['__builtins__']['exec'](\"open({str(marker)!r}, 'w')\")",
        f"__import__('pathlib').Path({str(marker)!r}).touch()",
        "L['s0'].bit_length() > 1",
        "(lambda: 1)() == 1",
        "[x for x in range(3)] == 0",
        "2 ** 100000 > 1",
    ]
    for attack in attacks:
        with pytest.raises(UnreadableGuard):
            holds(attack, 4)
        assert readable_guards(attack, Range(1, 8)) is not None
    assert not marker.exists()


# -- remote units, checked for this host -------------------------------------------------------


def test_a_remote_unit_built_for_another_environment_is_compiled_here(tiny_entry, tmp_path) -> None:
    """The same unit, on a remote whose entry was built under another float32 matmul
    precision: a local reuse refuses such an entry, and so does a remote one."""
    key = sorted(json.loads((tiny_entry.path / "manifest.json").read_text())["unit_keys"])[0]
    honest = f"file://{tmp_path / 'honest'}"
    push(CacheRoot(tiny_entry.cache_dir), open_remote(honest))
    assert RemoteArtifacts(open_remote(honest), None).find(key) is not None

    other = copy_cache(tiny_entry.cache_dir, tmp_path / "other")

    def highest(manifest: Any) -> None:
        manifest.lookup = [
            Factor(f.name, "medium") if f.name == "torch.matmul_precision" else f for f in manifest.lookup
        ]

    rewrite_manifest_as_built(other / "entries" / tiny_entry.entry_id, highest)
    elsewhere = f"file://{tmp_path / 'elsewhere'}"
    push(CacheRoot(other), open_remote(elsewhere))
    assert RemoteArtifacts(open_remote(elsewhere), None).find(key) is None


# -- the entry id covers the manifest ------------------------------------------------------------


def test_an_entry_id_must_cover_what_its_manifest_holds(tiny_entry, tmp_path) -> None:
    """A manifest edited in one place only (its sources emptied, a part's record added
    without its factor, a factor changed under the same id) is not an entry."""
    edits = {
        "sources emptied": lambda m: setattr(m, "sources", []),
        "part_of without its factor": lambda m: m.recorded.update(part_of="Model.encoder"),
        "a factor under the same id": lambda m: setattr(m, "build", [*m.build[:-1], Factor("march", "x86-64")]),
    }
    for name, edit in edits.items():
        cache = copy_cache(tiny_entry.cache_dir, tmp_path / name.replace(" ", "-"))
        entry = cache / "entries" / tiny_entry.entry_id
        rewrite_manifest(entry, edit)
        with pytest.raises(CorruptEntry, match=r"manifest of entry .* is corrupt"):
            manifest_mod.parse((entry / "manifest.json").read_bytes(), entry.name)


# -- the signature on the no-change remote path --------------------------------------------------


def test_a_signing_build_takes_no_unsigned_entry_before_its_trace(tiny_entry, tmp_path) -> None:
    """The entry this build would make, unchanged, on the remote but unsigned: a build
    that signs never takes it (nor one signed by another key); the same entry signed by
    the build's own key is taken."""
    from aotcache.backend import _torch_compat as compat
    from aotcache.backend import unchanged
    from aotcache.configuration import from_dict
    from aotcache.serve.inputs import InputSpec
    from aotcache.store import signing

    unsigned = f"file://{tmp_path / 'unsigned'}"
    push(CacheRoot(tiny_entry.cache_dir), open_remote(unsigned))
    key_file = tmp_path / "release.secret"
    key_file.write_bytes(b"0123456789abcdef0123456789abcdef")
    key = signing.read_key(key_file)
    model = tiny_llama.build(2)
    manifest = manifest_mod.parse((tiny_entry.path / "manifest.json").read_bytes(), tiny_entry.entry_id)
    spec = InputSpec.from_json(manifest.input_spec).to_json()
    probe = unchanged.Probe.of(model, from_dict(TINY_CONFIG), spec, compat.cpp_march_unimported(), [])
    assert probe.matches(manifest)  # the entry is what this build would make
    signed_only = RemoteArtifacts(open_remote(unsigned), signing.checker(key))
    here = CacheRoot(tmp_path / "here")
    here.ensure_writable()
    assert unchanged.remote_entry(here, signed_only, probe) is None

    signed_cache = copy_cache(tiny_entry.cache_dir, tmp_path / "signed-cache")
    entry = signed_cache / "entries" / tiny_entry.entry_id
    (entry / "manifest.sig").write_bytes(signing.sign((entry / "manifest.json").read_bytes(), key))
    signed = f"file://{tmp_path / 'signed'}"
    push(CacheRoot(signed_cache), open_remote(signed))
    own_key = RemoteArtifacts(open_remote(signed), signing.checker(key))
    taken = unchanged.remote_entry(here, own_key, probe)
    assert taken is not None and taken.entry_id == tiny_entry.entry_id


# -- torch in the unit key ---------------------------------------------------------------------


def test_a_unit_key_names_the_torch_that_compiled_it(monkeypatch) -> None:
    from aotcache.backend.reuse import environment_facts, unit_key
    from aotcache.configuration import from_dict

    config = from_dict(TINY_CONFIG)
    ours = unit_key("0" * 64, Range(1, 8), config, environment_facts())
    monkeypatch.setattr(torch, "__version__", "2.99.0")
    assert unit_key("0" * 64, Range(1, 8), config, environment_facts()) != ours


# -- the attention arguments aotcache::attention would drop --------------------------------------


def test_each_attention_argument_the_op_would_drop_is_refused_and_an_empty_one_passes() -> None:
    q = torch.randn(1, 2, 3, 4)
    module = torch.nn.Module()
    refused = {
        "dropout": {"dropout": 0.1},
        "head_mask": {"head_mask": torch.ones(2)},
        "encoder_hidden_states": {"encoder_hidden_states": torch.ones(1, 3, 8)},
        "output_attentions": {"output_attentions": True},
    }
    for name, kwargs in refused.items():
        with pytest.raises(hf.UnsupportedAttention, match=name):
            hf.attention_forward(module, q, q, q, None, **kwargs)
    out, _ = hf.attention_forward(
        module, q, q, q, None, dropout=0.0, head_mask=None, encoder_hidden_states=None, output_attentions=False
    )
    assert out.shape == (1, 3, 2, 4)


def test_an_hf_target_whose_attention_is_not_routed_is_refused_by_name(tmp_path, monkeypatch) -> None:
    """hf.spec runs the model once and counts the op's calls; precompile, which builds
    it without weights, counts them in the traced graph: a model split_attention could
    not route is refused naming its architecture, never compiled as one piece."""
    folder = tmp_path / "llama"
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    assert hf.spec(f"hf:{folder}").build_model() is not None
    monkeypatch.setattr(hf, "split_attention", lambda model: model)  # as if transformers would not switch it
    with pytest.raises(aotcache.TargetError, match=r"llama: 0 of its 2 layers"):
        hf.spec(f"hf:{folder}").build_model()
    with pytest.raises(aotcache.TargetError, match=r"llama: 0 of its 2 layers"):
        aotcache.precompile(f"hf:{folder}", {"max_num_batched_tokens": 16}, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "entries").exists() or not any((tmp_path / "cache" / "entries").iterdir())


# -- usage stamps, held locks ------------------------------------------------------------------


def test_a_load_stamps_its_entry_as_used(tiny_entry, tmp_path) -> None:
    """LRU eviction (`clear --max-size`, `--unused-for`) goes by these stamps."""
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "c")
    root = CacheRoot(cache)
    stamp = cache / "usage" / tiny_entry.entry_id
    if stamp.exists():
        stamp.unlink()
    started = time.time()
    assert aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=cache, strict=True) is not None
    used = root.last_used(tiny_entry.entry_id)
    assert used is not None and used >= started - 1


def test_clear_keeps_a_lock_a_builder_holds(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "c")
    root = CacheRoot(cache)
    held, idle = root.lock(tiny_entry.entry_id), root.lock("f" * 16 + "-" + "0" * 16)
    idle.acquire()
    idle.release()
    with held:
        removed, errors = root.remove_idle_locks()
        assert (removed, errors) == (1, [])
        assert Path(held.lock_file).exists() and not Path(idle.lock_file).exists()
    assert root.remove_idle_locks() == (1, [])


# -- SOURCE_DATE_EPOCH ---------------------------------------------------------------------------


def test_source_date_epoch_dates_the_manifest(tmp_path, monkeypatch) -> None:
    """The manifest's `created` is SOURCE_DATE_EPOCH's date (reproducible builds), and
    absent without it (no clock in the bytes). An eager build: nothing compiles."""
    config = {**sm.CONFIG, "backend": "eager"}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = aotcache.precompile(sm.spec(), config, cache_dir=tmp_path / "dated")
    assert dated.manifest.created == "2023-11-14T22:13:20+00:00"
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    undated = aotcache.precompile(sm.spec(), config, cache_dir=tmp_path / "undated")
    assert undated.manifest.created is None and b'"created":null' in (undated.path / "manifest.json").read_bytes()


# -- an entry from another torch -----------------------------------------------------------------

OTHER_TORCH = """
import json, torch
torch.__version__ = "2.99.0+fake"  # what another torch install reports
import aotcache
from examples import tiny_llama
try:
    aotcache.load(tiny_llama.build(2), {config!r}, cache_dir={cache!r}, strict=True)
    print(json.dumps({{"loaded": True}}))
except aotcache.CacheMiss as exc:
    print(json.dumps({{"reason": exc.reason, "differences": [[d.name, d.old, d.new] for d in exc.differences]}}))
"""


def test_an_entry_from_another_torch_is_a_clean_miss_naming_it(tiny_entry) -> None:
    """make test's form of test_cross_torch (which needs two real installs): a process
    whose torch reports another version finds the entry's lookup key differs, names
    torch.version old -> new, and runs nothing of it."""
    done = run_python(OTHER_TORCH.format(config=TINY_CONFIG, cache=str(tiny_entry.cache_dir)))
    assert done.returncode == 0, done.stderr[-2000:]
    result = last_json(done.stdout)
    assert result["reason"] == IncompatibleEnvironment.reason, result
    assert ["torch.version", torch.__version__, "2.99.0+fake"] in result["differences"], result
