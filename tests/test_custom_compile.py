"""custom_ops and inductor_passes: what a CustomOp layer runs and which Inductor passes
run are chosen by the config, keyed, and in the stored code; loading imports no pass.

One module fixture builds three entries of one tiny model in one cache dir (no pass
with "+rms_norm", no pass with "-rms_norm", the split_addmm pass with "-rms_norm"), each
loaded in a fresh process and compared with eager there."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _support import REPO, last_json, run_argv
from custom_compile_models import CONFIG, SPEC, RMSNorm

import aotcache
from aotcache.backend.precompile import PrecompileResult
from aotcache.custom_op import CustomOp, bind_custom_ops, custom_op_choices
from aotcache.errors import EntryNotFound

ENABLED = {**CONFIG, "custom_ops": ["+rms_norm"]}
DISABLED = {**CONFIG, "custom_ops": ["-rms_norm"]}
PASS_SLOT = "post_grad_custom_post_pass"

LOAD = """
import json, sys
sys.path.insert(0, "tests")
import torch, aotcache
from aotcache.custom_op import bind_custom_ops
from aotcache.configuration import from_dict
from custom_compile_models import SPEC, example_inputs
config, cache = json.loads(sys.argv[1]), sys.argv[2]
model = SPEC.build_model()
bind_custom_ops(model, from_dict(config))  # eager runs what the trace ran
try:
    loaded = aotcache.load(model, config, cache_dir=cache, strict=True)
except aotcache.CacheMiss as exc:
    print(json.dumps({"miss": type(exc).__name__, "error": str(exc), "factors": [d.name for d in exc.differences]}))
    raise SystemExit(0)
worst = 0.0
for n in (1, 5, 16):
    (x,) = example_inputs(n)
    with torch.no_grad():
        expected = model.forward(x)
    worst = max(worst, float((loaded(x) - expected).abs().max()))
modules = sorted(m for m in sys.modules if "addmm_pass" in m)
print(json.dumps({"entry": loaded.entry_id, "worst": worst, "pass_modules": modules}))
"""


@dataclass
class Built:
    cache: Path
    pass_file: Path  # in a folder of its own on sys.path, as a project's package is
    pass_config: dict
    enabled: PrecompileResult
    disabled: PrecompileResult
    with_pass: PrecompileResult


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    folder = tmp_path_factory.mktemp("custom-compile")
    passes = folder / "passes"
    passes.mkdir()
    pass_file = passes / "addmm_pass.py"  # a copy the tests may edit (named apart from tests/' own)
    shutil.copy(REPO / "tests" / "split_addmm_pass.py", pass_file)
    pass_config = {**DISABLED, "inductor_passes": {PASS_SLOT: "addmm_pass:split_addmm"}}
    cache = folder / "cache"
    sys.path.insert(0, str(passes))
    try:
        enabled = aotcache.precompile(SPEC, ENABLED, cache_dir=cache)
        disabled = aotcache.precompile(SPEC, DISABLED, cache_dir=cache)
        with_pass = aotcache.precompile(SPEC, pass_config, cache_dir=cache)
        yield Built(cache, pass_file, pass_config, enabled, disabled, with_pass)
    finally:
        sys.path.remove(str(passes))
        sys.modules.pop("addmm_pass", None)


def _load(config: dict, cache: Path, pass_file: Path | None = None) -> dict:
    """Load and compare in a fresh process; the pass's folder on its sys.path (where a
    project's passes are at serve time), which loading never imports from."""
    path = {"PYTHONPATH": f"{REPO}{os.pathsep}{pass_file.parent}"} if pass_file else None
    done = run_argv([sys.executable, "-c", LOAD, json.dumps(config), str(cache)], env=path)
    assert done.returncode == 0, done.stderr[-3000:]
    return last_json(done.stdout)


def _wrappers(result: PrecompileResult) -> str:
    return "".join(p.read_text() for p in (result.path / "artifacts").glob("*.py"))


def test_custom_op_rules_follow_vllm_precedence_in_eager() -> None:
    """What a CustomOp runs under each config: vLLM's default ("none" under Inductor),
    "all", and "+name"/"-name" over either."""
    ran: list[str] = []

    class Spy(RMSNorm):
        def forward_native(self, x: torch.Tensor) -> torch.Tensor:
            ran.append("native")
            return super().forward_native(x)

        def forward_cpu(self, x: torch.Tensor) -> torch.Tensor:
            ran.append("cpu")
            return super().forward_cpu(x)

    layer, x = Spy(8), torch.randn(3, 8)
    layer(x)
    assert ran == ["native"]  # never bound: the native forward
    cases = [
        ({}, "native"),
        ({"backend": "eager"}, "cpu"),
        ({"custom_ops": ["+rms_norm"]}, "cpu"),
        ({"custom_ops": ["all", "-rms_norm"]}, "native"),
        ({"custom_ops": ["none", "+rms_norm"]}, "cpu"),
        ({"custom_ops": ["+other"]}, "native"),
    ]
    for fields, expected in cases:
        ran.clear()
        model = torch.nn.Sequential(layer)
        assert bind_custom_ops(model, aotcache.CompilationConfig(**fields)) == {"rms_norm": expected == "cpu"}
        assert custom_op_choices(model) == {"rms_norm": expected == "cpu"}
        layer(x)
        assert ran == [expected], fields
    assert torch.allclose(layer.forward_native(x), layer.forward_cpu(x), atol=1e-6)
    assert issubclass(Spy, CustomOp) and Spy.name == "rms_norm"


def test_custom_ops_make_two_entries_whose_miss_names_the_rules(built: Built, tmp_path: Path) -> None:
    enabled, disabled = built.enabled, built.disabled
    assert enabled.entry_id != disabled.entry_id and not enabled.hit and not disabled.hit
    assert {f.name: f.value for f in enabled.manifest.build}["custom_ops"] == {"rms_norm": True}
    assert {f.name: f.value for f in disabled.manifest.build}["custom_ops"] == {"rms_norm": False}
    # what each trace ran is in its kernels: forward_cpu divides by sqrt, forward_native uses rsqrt
    assert "rsqrt" not in _wrappers(enabled) and "rsqrt" in _wrappers(disabled)
    for config, result in ((ENABLED, enabled), (DISABLED, disabled)):
        report = _load(config, built.cache)
        assert report["entry"] == result.entry_id and report["worst"] <= 1e-5, report
    only_disabled = tmp_path / "cache"
    shutil.copytree(disabled.path, only_disabled / "entries" / disabled.entry_id)
    with pytest.raises(EntryNotFound) as info:
        aotcache.load(SPEC.build_model(), ENABLED, cache_dir=only_disabled, strict=True)
    assert [d.name for d in info.value.differences] == ["config.custom_ops"]
    assert "config.custom_ops: ['-rms_norm'] -> ['+rms_norm']" in str(info.value)


def test_an_inductor_pass_runs_in_every_compile_and_loading_never_imports_it(built: Built) -> None:
    """The pass's effect is in the stored code (mm where Inductor alone calls addmm),
    its uuid keys the units (the entry without the pass, in the same cache dir, lends
    it nothing), and the loading process never imports it."""
    with_pass, without = built.with_pass, built.disabled
    assert with_pass.entry_id != without.entry_id
    assert with_pass.summary["units_reused"] == 0 and with_pass.summary["units_compiled"] >= 1
    assert "extern_kernels.addmm(" in _wrappers(without) and "extern_kernels.mm(" not in _wrappers(without)
    assert "extern_kernels.mm(" in _wrappers(with_pass) and "extern_kernels.addmm(" not in _wrappers(with_pass)
    report = _load(built.pass_config, built.cache, built.pass_file)
    assert report["entry"] == with_pass.entry_id and report["worst"] <= 1e-5, report
    assert report["pass_modules"] == []


def test_an_edited_pass_makes_its_entry_stale_naming_the_pass(built: Built) -> None:
    assert _load(built.pass_config, built.cache, built.pass_file)["entry"] == built.with_pass.entry_id
    original = built.pass_file.read_text()
    built.pass_file.write_text(original + "\n# an edit\n")
    try:
        report = _load(built.pass_config, built.cache, built.pass_file)
    finally:
        built.pass_file.write_text(original)
    assert report["miss"] == "StaleEntry", report
    assert report["factors"] == ["addmm_pass.py"], report


def test_a_pass_that_cannot_be_used_is_a_config_error_naming_the_slot(tmp_path: Path) -> None:
    from aotcache.backend.inductor_passes import resolve
    from aotcache.errors import ConfigError

    (tmp_path / "not_a_pass.py").write_text("VALUE = 3\n")
    here = os.path.relpath(tmp_path)  # a path in the lookup key: relative to the working directory
    cases = {
        f"{here}/not_a_pass.py:VALUE": "a torch CustomGraphPass, or a function taking the torch.fx.Graph",
        f"{here}/not_a_pass.py:missing": "a pass that imports",
        f"{here}/absent.py:x": "a pass that imports",
    }
    for target, allowed in cases.items():
        config = aotcache.CompilationConfig(inductor_passes={PASS_SLOT: target})
        with pytest.raises(ConfigError, match=f"inductor_passes.{PASS_SLOT}") as info:
            resolve(config)
        assert allowed in str(info.value), str(info.value)
    with pytest.raises(ConfigError, match="relative to the working directory"):  # the host's layout, in no key
        aotcache.CompilationConfig(inductor_passes={PASS_SLOT: f"{tmp_path}/not_a_pass.py:VALUE"})


def test_an_unbacked_trace_serves_size_1_from_its_range(tmp_path: Path) -> None:
    """dynamic_shapes_config.type: a backed trace specialises sizes 0 and 1, so the range
    [1, 16] gets the guard 2 <= size and size 1 a compile of its own; traced unbacked,
    the one range unit serves size 1 too. The type is in the key."""
    cache = tmp_path / "cache"
    built = {}
    for kind in ("backed", "unbacked", "backed_size_oblivious"):
        config = {**CONFIG, "dynamic_shapes_config": {"type": kind}}
        built[kind] = (config, aotcache.precompile(SPEC, config, cache_dir=cache))
    backed, unbacked = built["backed"][1], built["unbacked"][1]
    assert backed.summary["added_sizes"] == [1] and backed.summary["units"] == 2
    assert unbacked.summary["added_sizes"] == [] and unbacked.summary["units"] == 1
    assert len({result.entry_id for _, result in built.values()}) == 3
    for config, result in built.values():
        report = _load(config, cache)
        assert report["entry"] == result.entry_id and report["worst"] <= 1e-5, report
    only_unbacked = tmp_path / "only-unbacked"
    shutil.copytree(unbacked.path, only_unbacked / "entries" / unbacked.entry_id)
    report = _load(built["backed"][0], only_unbacked)
    assert report["factors"] == ["config.dynamic_shapes_config"], report
