"""An entry serves only the model it was traced from, down to every plain setting its
trace read (issue 32): a norm's eps, an activation's name, a scale, a flag, a module's
constant, a torch.backends flag. Loading a model whose setting differs is a miss naming
the setting (in the entry -> here), in a fresh process; precompiling it builds its own
entry, and neither the no-change path nor a remote hands it the other model's.

One module fixture builds two entries of one tiny model (settings_models.py): A with
the defaults, B with another eps, and pushes both to a file:// remote."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import settings_models as sm
from _support import TINY_CONFIG, last_json, run_argv

import aotcache
from aotcache.backend.precompile import PrecompileResult
from aotcache.configuration import from_dict
from aotcache.errors import CompileError, StaleEntry
from aotcache.fleet.connect import open_remote
from aotcache.fleet.push import push
from aotcache.store.root import CacheRoot
from aotcache.verify.report import verify_entry, verify_target

TOLERANCE = 1e-4
B_EPS = 0.5

# Each variant: the model's settings, and what the serving process changes globally.
VARIANTS: dict[str, dict[str, Any]] = {
    "same": {},
    "eps": {"model": {"eps": B_EPS}},
    "act": {"model": {"act": "relu"}},
    "scale": {"model": {"scale": 3.0}},
    "residual": {"model": {"residual": False}},
    "module-constant": {"offset": 1.0},
    "backends-flag": {"mkldnn": False},
}
# The one setting each variant changes, as the miss names it: (name, in the entry, here).
EXPECTED = {
    "eps": ("norm.eps", "1e-06", "0.5"),
    "act": ("act", "'gelu'", "'relu'"),
    "scale": ("scale", "1.0", "3.0"),
    "residual": ("residual", "True", "False"),
    "module-constant": ("settings_models.OFFSET", "0.25", "1.0"),
    "backends-flag": ("settings_models.torch.backends.mkldnn.enabled", "True", "False"),
}

LOAD_VARIANTS = """
import json, sys
sys.path.insert(0, "tests")
import torch, aotcache
import settings_models as sm
cache, variants = sys.argv[1], json.loads(sys.argv[2])
x = sm.example_inputs(5)[0]
with torch.no_grad():
    reference = sm.SettingsModel().eval()(x)  # what model A computes
out = {}
for name, change in variants.items():
    sm.OFFSET = change.get("offset", 0.25)
    torch.backends.mkldnn.enabled = change.get("mkldnn", True)
    model = sm.SettingsModel(**change.get("model", {})).eval()
    with torch.no_grad():
        expected = model(x)
    result = {"eager_change": float((expected - reference).abs().max())}
    try:
        loaded = aotcache.load(model, sm.CONFIG, cache_dir=cache, strict=True)
        result.update(entry=loaded.entry_id, diff=float((loaded(x) - expected).abs().max()))
    except aotcache.CacheMiss as exc:
        differences = [[d.name, d.old, d.new] for d in exc.differences]
        result.update(miss=exc.reason, message=exc.one_line(), differences=differences)
    out[name] = result
print(json.dumps(out))
"""


@dataclass
class Built:
    cache_a: Path  # A's entry only
    cache_both: Path  # A's and B's entries
    remote: str  # a file:// remote holding both
    a: PrecompileResult
    b: PrecompileResult


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    folder = tmp_path_factory.mktemp("traced-state")
    remote = f"file://{folder / 'remote'}"
    a = aotcache.precompile(sm.spec(), sm.CONFIG, cache_dir=folder / "a")
    push(CacheRoot(folder / "a"), open_remote(remote))
    # B on a fresh runner whose remote holds A: nothing of A's may be taken for it.
    b = aotcache.precompile(
        sm.spec(eps=B_EPS), sm.CONFIG, cache_dir=folder / "b", remote=remote, trust_unsigned_remote=True
    )
    push(CacheRoot(folder / "b"), open_remote(remote))
    both = shutil.copytree(folder / "a", folder / "both")
    shutil.copytree(b.path, both / "entries" / b.entry_id)
    return Built(folder / "a", both, remote, a, b)


def _load_variants(cache: Path, variants: dict[str, Any]) -> dict[str, Any]:
    done = run_argv([sys.executable, "-c", LOAD_VARIANTS, str(cache), json.dumps(variants)])
    assert done.returncode == 0, done.stderr[-3000:]
    return last_json(done.stdout)


def test_each_changed_setting_is_a_miss_that_names_it(built) -> None:
    """Six settings of six kinds, each changing the output by far more than the
    tolerance: loading A's entry for the changed model is a typed miss naming exactly
    that setting, old -> new; the unchanged model loads and matches."""
    results = _load_variants(built.cache_a, VARIANTS)
    same = results.pop("same")
    assert same.get("entry") == built.a.entry_id and same["diff"] <= TOLERANCE, same
    for name, result in results.items():
        assert result["eager_change"] > 100 * TOLERANCE, (name, result)  # the setting matters
        assert result.get("miss") == StaleEntry.reason, (name, result)
        assert result["differences"] == [list(EXPECTED[name])], (name, result)
        assert f"{EXPECTED[name][0]}: {EXPECTED[name][1]} -> {EXPECTED[name][2]}" in result["message"], result


def test_a_cache_holding_both_serves_each_model_its_own_entry(built) -> None:
    """One lookup key, two entries: each model gets the entry traced from its settings,
    and its numbers."""
    assert built.a.entry_id.split("-")[0] == built.b.entry_id.split("-")[0]  # same lookup key
    results = _load_variants(built.cache_both, {"same": {}, "eps": VARIANTS["eps"]})
    assert results["same"]["entry"] == built.a.entry_id and results["same"]["diff"] <= TOLERANCE, results
    assert results["eps"]["entry"] == built.b.entry_id and results["eps"]["diff"] <= TOLERANCE, results


def test_precompiling_a_changed_model_builds_its_own_entry(built) -> None:
    """B's precompile traced and compiled, on a runner whose remote held A: A's entry
    was not taken (no-change path) and none of A's units was either."""
    assert not built.b.hit and built.b.entry_id != built.a.entry_id
    assert built.b.build["units_reused_remote"] == 0 and built.b.build["units_compiled"] > 0, built.b.build
    state_a = next(f.value for f in built.a.manifest.build if f.name == "traced_state")
    state_b = next(f.value for f in built.b.manifest.build if f.name == "traced_state")
    assert state_a != state_b


def test_the_no_change_path_takes_only_the_entry_of_this_model(built, tmp_path) -> None:
    """With A's entry here and both on the remote, precompiling B traces nothing and
    takes B's entry from the remote, never A's; precompiling A takes A's."""
    cache = shutil.copytree(built.cache_a, tmp_path / "cache")
    b = aotcache.precompile(
        sm.spec(eps=B_EPS), sm.CONFIG, cache_dir=cache, remote=built.remote, trust_unsigned_remote=True
    )
    assert b.hit and b.entry_id == built.b.entry_id and "trace" not in b.seconds
    a = aotcache.precompile(sm.spec(), sm.CONFIG, cache_dir=cache)
    assert a.hit and a.entry_id == built.a.entry_id


def test_a_load_pulls_nothing_whose_settings_differ(built, tmp_path) -> None:
    """A replica with an empty cache and a remote holding A and B only: a model with a
    third scale is a miss naming the setting, and nothing was downloaded for it."""
    model = sm.SettingsModel(scale=3.0).eval()
    with pytest.raises(StaleEntry) as caught:
        aotcache.load(model, sm.CONFIG, cache_dir=tmp_path / "replica", strict=True, remote=built.remote)
    assert "scale: 1.0 -> 3.0" in str(caught.value)
    assert not list((tmp_path / "replica" / "entries").glob("*"))


def test_verify_of_a_target_checks_its_state_and_verify_of_a_key_says_it_cannot(built) -> None:
    root = CacheRoot(built.cache_a)
    report = verify_target(root, sm.SettingsModel(eps=B_EPS).eval(), from_dict(sm.CONFIG)).to_json()
    state = next(c for c in report["checks"] if c["check"] == "state")
    assert not report["ok"] and not state["ok"] and state["status"] == StaleEntry.reason, report
    assert state["differences"] == [{"name": "norm.eps", "old": "1e-06", "new": "0.5"}]
    report = verify_target(root, sm.SettingsModel().eval(), from_dict(sm.CONFIG)).to_json()
    assert report["ok"], report
    by_key = verify_entry(root, built.a.entry_id).to_json()
    state = next(c for c in by_key["checks"] if c["check"] == "state")
    assert by_key["ok"] and state["status"] == "unknown" and "no model" in state["message"], by_key


def test_state_an_entry_cannot_check_fails_the_precompile_by_name(tmp_path) -> None:
    """forward reads a dict by an object key: no plain check can say "the same key"
    at load, so the precompile fails naming where, and writes nothing."""
    spec = aotcache.ModelSpec(
        model=lambda: sm.ObjectKeyModel().eval(), example_inputs=sm.example_inputs, dynamic_arg_dims={"x": 0}
    )
    with pytest.raises(CompileError) as caught:
        aotcache.precompile(spec, sm.CONFIG, cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert "cannot check when loading" in message and "model.scales" in message, message
    assert not list((tmp_path / "cache" / "entries").glob("*"))


def test_a_module_level_singleton_is_checked_by_its_global_name(tmp_path) -> None:
    """forward reaches an object by identity through a decorator's closure (transformers
    >= 5.25 with `kernels`): it is recorded as the global its class's module holds it
    under, and a model whose closure holds another object is refused at load."""
    from aotcache.store import traced_state

    spec = aotcache.ModelSpec(
        model=lambda: sm.SingletonModel().eval(), example_inputs=sm.example_inputs, dynamic_arg_dims={"x": 0}
    )
    state = aotcache.precompile(spec, sm.CONFIG, cache_dir=tmp_path / "cache").manifest.traced_state
    assert ["is", None, "object settings_models:DOUBLE"] in [c[:3] for c in state.checks], state.checks
    model = sm.SingletonModel().eval()
    assert not traced_state.problems(state, model)
    original = sm.DOUBLE
    try:
        sm.DOUBLE = sm.Doubler()  # the closure's object is no longer the module's global
        found = traced_state.problems(state, model)
    finally:
        sm.DOUBLE = original
    assert any("cell_contents" in problem.name for problem in found), found
    assert not traced_state.problems(state, model)


def test_the_example_models_eps_is_checked(tiny_entry) -> None:
    """The bundled example's norm eps (a plain setting of examples/tiny_llama.py): the
    session's entry is a miss for a model built with another."""
    from examples import tiny_llama

    with pytest.raises(StaleEntry) as caught:
        aotcache.load(tiny_llama.build(2, norm_eps=1e-2), TINY_CONFIG, cache_dir=tiny_entry.cache_dir, strict=True)
    assert "layers.0.input_norm.eps: 1e-06 -> 0.01" in str(caught.value)


# -- transformers: one number of config.json ------------------------------------------------

QWEN2_CHANGES: dict[str, dict[str, Any]] = {
    "rms_norm_eps": {"rms_norm_eps": 1e-2},
    "sliding_window": {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 0},
    "unread": {"initializer_range": 0.5},  # forward never reads it: config.json's fields are a factor too
}
HF_SIZES = {"compile_sizes": [], "compile_ranges_split_points": [], "max_num_batched_tokens": 16}

LOAD_CHECKPOINTS = """
import json, sys, torch, transformers, aotcache
cache, folders, sizes = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
ids = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(0))
mask = torch.ones_like(ids)
out = {}
for name, folder in folders.items():
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    try:
        loaded = aotcache.load(model, aotcache.hf.default_config(folder, **sizes), cache_dir=cache, strict=True)
        out[name] = {"diff": float((loaded(input_ids=ids, attention_mask=mask).logits - expected).abs().max())}
    except aotcache.CacheMiss as exc:
        out[name] = {"miss": exc.reason, "names": [d.name for d in exc.differences], "message": exc.one_line()}
print(json.dumps(out))
"""


def test_a_checkpoint_whose_config_differs_in_one_number_is_a_miss_naming_it(tmp_path) -> None:
    """An `hf:` entry of a tiny Qwen2, loaded for checkpoints whose config.json differs
    from the base model's in one setting (fine-tunes do this): a miss naming the config
    field and, where forward reads it, the module attribute it became. The base
    checkpoint, served with transformers' own attention implementation, loads."""
    import torch
    import transformers

    base = tmp_path / "base"
    config = transformers.Qwen2Config(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(base)
    folders = {"base": str(base)}
    for name, change in QWEN2_CHANGES.items():
        folder = shutil.copytree(base, tmp_path / name)
        fields = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**fields, **change}))
        folders[name] = str(folder)
    cache = tmp_path / "cache"
    aotcache.precompile(f"hf:{base}", aotcache.hf.default_config(base, **HF_SIZES), cache_dir=cache)
    done = run_argv([sys.executable, "-c", LOAD_CHECKPOINTS, str(cache), json.dumps(folders), json.dumps(HF_SIZES)])
    assert done.returncode == 0, done.stderr[-3000:]
    results = last_json(done.stdout)
    assert results["base"].get("diff", 1.0) <= TOLERANCE, results["base"]
    eps = results["rms_norm_eps"]
    assert eps.get("miss") == StaleEntry.reason, eps
    assert {"config.rms_norm_eps", "model.layers.0.input_layernorm.variance_epsilon"} <= set(eps["names"]), eps
    assert "config.rms_norm_eps: 1e-06 -> 0.01" in eps["message"], eps
    window = results["sliding_window"]
    assert window.get("miss") == StaleEntry.reason and "config.use_sliding_window" in window["names"], window
    assert any(name.endswith("sliding_window") and name != "config.sliding_window" for name in window["names"]), window
    unread = results["unread"]
    assert unread.get("miss") == StaleEntry.reason and unread["names"] == ["config.initializer_range"], unread


def _perturbations() -> dict[str, Any]:
    """Ways a live model can differ from the one an entry was traced from, each applied
    to a fresh SettingsModel (what the load-time check must catch)."""
    import torch

    def hook(model: Any) -> None:
        model.norm.register_forward_hook(lambda module, args, out: out * 2)

    def own_forward(model: Any) -> None:
        model.proj.forward = lambda x: x  # an instance-level override of forward

    def other_class(model: Any) -> None:
        model.norm = torch.nn.LayerNorm(sm.HIDDEN)

    def attribute_gone(model: Any) -> None:
        del model.scale

    return {
        "eps": lambda m: setattr(m.norm, "eps", 0.5),
        "eps-type": lambda m: setattr(m.norm, "eps", 1),  # an int where the trace read a float
        "act": lambda m: setattr(m, "act", "relu"),
        "hook": hook,
        "own-forward": own_forward,
        "other-class": other_class,
        "attribute-gone": attribute_gone,
    }


def test_the_fast_check_agrees_with_the_full_one(built) -> None:
    """A load checks the state with a fast pass (map and attrgetter over the nodes) and
    explains failures with a full one: every perturbation fails both; none, neither."""
    from aotcache.store import traced_state

    state = built.a.manifest.traced_state
    model = sm.SettingsModel().eval()
    assert not traced_state.problems(state, model)
    assert traced_state._all_hold(state, traced_state.resolve(state, model))
    for name, perturb in _perturbations().items():
        model = sm.SettingsModel().eval()
        perturb(model)
        found = traced_state.problems(state, model)
        assert found, name
        assert not traced_state._all_hold(state, traced_state.resolve(state, model)), name
