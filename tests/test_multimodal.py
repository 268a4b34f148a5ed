"""compile_mm_encoder: a model served as parts (vLLM's multimodal models). The model
class is not decorated; its language model and its vision encoder (enable_if=
should_compile_mm_encoder) are, and each compiles as an entry of its own, listed by
inspect-cache under the model and loaded by the part itself in a serving process.

One module fixture precompiles tests/multimodal_models.py:TinyVLM through the CLI. Its
encoder sees n // 2 + 1 patches for n tokens, and has config fields of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from _support import CliBuild, cli_precompile, last_json, run_argv, run_cli
from multimodal_models import CONFIG, ENCODER_CONFIG, TinyLanguageModel, TinyVLM

import aotcache
from aotcache.configuration import from_dict
from aotcache.errors import TargetError
from aotcache.serve.parts import compiled_parts

TARGET = "tests/multimodal_models.py:TinyVLM"
WITH_ENCODER = {**CONFIG, "compile_mm_encoder": True}

SERVE = """
import json, sys
import torch, aotcache
from aotcache.compilation_counter import counters
from tests.multimodal_models import TinyVLM
fields, cache = json.loads(sys.argv[1]), sys.argv[2]
with aotcache.config(**fields, cache_dir=cache):
    model = TinyVLM()
with aotcache.config(mode="NONE"):
    reference = TinyVLM()
worst = 0.0
for n in (1, 5, 16):
    inputs = reference.example_inputs(n)
    with torch.no_grad():
        worst = max(worst, float((model(*inputs) - reference(*inputs)).abs().max()))
compile_side = sorted(m for m in sys.modules if m.startswith(("aotcache.backend", "torch._inductor.compile_fx")))
print(json.dumps({"worst": worst, "loaded": counters.entries_loaded, "traces": counters.traces,
                  "compiles": counters.compiles, "compile_side": compile_side}))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> CliBuild:
    return cli_precompile(TARGET, WITH_ENCODER, tmp_path_factory.mktemp("multimodal") / "cache")


def _config_of(fields: dict) -> aotcache.CompilationConfig:
    return from_dict({**fields, **CONFIG})


def test_precompile_builds_one_entry_per_part(built: CliBuild) -> None:
    """Both parts are entries of their own, each keyed by the part alone; the encoder's
    with its class's split point: ranges [1, 8] and [9, 16], and size 1 apart."""
    parts = built.summary["parts"]
    assert built.summary["schema"] == "aotcache.precompile-parts/1" and built.summary["model"] == "TinyVLM"
    assert set(parts) == {"vision", "language"}
    assert parts["vision"]["model"] == "TinyVisionEncoder" and parts["language"]["model"] == "TinyLanguageModel"
    assert parts["vision"]["entry"] != parts["language"]["entry"]
    assert all(not part["hit"] and part["units_compiled"] >= 1 for part in parts.values())
    assert parts["vision"]["sizes_and_ranges"] == 3 and parts["vision"]["added_sizes"] == [1]
    assert parts["language"]["sizes_and_ranges"] == 2


def test_inspect_cache_lists_the_parts_under_the_model(built: CliBuild) -> None:
    result = run_cli("inspect-cache", "--cache-dir", str(built.cache), "--json")
    assert result.returncode == 0, result.stderr
    rows = sorted((row["part_of"], row["model"]) for row in json.loads(result.stdout)["entries"])
    assert rows == [("TinyVLM.language", "TinyLanguageModel"), ("TinyVLM.vision", "TinyVisionEncoder")]
    # The MODEL column wraps on a narrow terminal; the width is pinned so the row reads the same anywhere.
    wide = run_cli("inspect-cache", "--cache-dir", str(built.cache), "--filter", "TinyVLM", env={"COLUMNS": "200"})
    assert "TinyVLM.vision (TinyVisionEncoder)" in wide.stdout
    narrow = run_cli("inspect-cache", "--cache-dir", str(built.cache), "--filter", "TinyVLM", env={"COLUMNS": "80"})
    assert narrow.returncode == 0 and "TinyVLM.vision" in narrow.stdout and "(TinyVisionEncoder)" in narrow.stdout


@pytest.mark.parametrize("encoder", [True, False], ids=["compile_mm_encoder", "eager-encoder"])
def test_a_serving_process_loads_each_part_equal_to_eager(built: CliBuild, encoder: bool) -> None:
    """In a fresh process, strict (a miss would be an error): each compiled part loads
    its own entry on its first call, nothing is traced or compiled; without
    compile_mm_encoder the encoder runs eagerly and only the language model loads."""
    fields = {**CONFIG, "compile_mm_encoder": encoder}
    served = run_argv(
        [sys.executable, "-c", SERVE, json.dumps(fields), str(built.cache)], env={"AOTCACHE_FORCE_LOAD": "1"}
    )
    assert served.returncode == 0, served.stderr
    report = last_json(served.stdout)
    assert report["worst"] < 1e-5
    assert report["loaded"] == (2 if encoder else 1)
    assert report["traces"] == 0 and report["compiles"] == 0 and report["compile_side"] == []


def test_verify_checks_and_runs_every_part_and_a_part_entry_by_its_key(built: CliBuild) -> None:
    """verify TARGET --run checks each part's entry and compares each part with eager in
    a fresh process, on the inputs the model gives it; verify KEY --run of a part's
    entry finds the part through the entry's part_of."""
    result = run_cli(
        "verify", TARGET, "-O", json.dumps(WITH_ENCODER), "--cache-dir", str(built.cache), "--run", "--json"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["schema"] == "aotcache.verify-parts/1"
    assert report["ok"] and set(report["parts"]) == {"vision", "language"}
    checked = {"vision": [1, 8, 9, 16], "language": [1, 16]}
    for path, part in report["parts"].items():
        assert part["entry"] == built.summary["parts"][path]["entry"]
        assert part["run"]["ok"] and [r["size"] for r in part["run"]["results"]] == checked[path]
    vision = built.summary["parts"]["vision"]["entry"]
    result = run_cli("verify", vision, "--cache-dir", str(built.cache), "--run", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["part_of"] == "TinyVLM.vision" and report["run"]["entry"] == vision


def test_without_compile_mm_encoder_the_encoder_is_not_a_part(built: CliBuild) -> None:
    """The same model without compile_mm_encoder has one part, the language model, whose
    entry is the one already built (compile_mm_encoder is not in a part's key)."""
    assert [part.path for part in compiled_parts(TinyVLM(), _config_of)] == ["language"]
    result = run_cli("precompile", TARGET, "-O", json.dumps(CONFIG), "--cache-dir", str(built.cache), "--json")
    assert result.returncode == 0, result.stderr
    parts = json.loads(result.stdout)["parts"]
    assert list(parts) == ["language"] and parts["language"]["hit"]
    assert parts["language"]["entry"] == built.summary["parts"]["language"]["entry"]


def test_a_decorated_model_holds_its_decorated_submodules_in_its_own_trace() -> None:
    """Only an undecorated model is served as parts: a decorated one is one model, whose
    own trace holds any decorated submodule."""

    @aotcache.support_compile(dynamic_arg_dims={"embeds": 0})
    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.language = TinyLanguageModel()

        def forward(self, embeds: torch.Tensor) -> torch.Tensor:
            return self.language(embeds)

    assert compiled_parts(Wrapper(), _config_of) == []
    undecorated = torch.nn.Module()
    undecorated.inner = Wrapper()  # the outermost decorated module is the part
    assert [part.path for part in compiled_parts(undecorated, _config_of)] == ["inner"]


def test_a_part_class_s_own_config_fields_apply_under_the_config_given() -> None:
    parts = {part.path: part.config for part in compiled_parts(TinyVLM(), lambda f: from_dict({**f, **WITH_ENCODER}))}
    assert parts["vision"].compile_ranges_split_points == ENCODER_CONFIG["compile_ranges_split_points"]
    assert parts["language"].compile_ranges_split_points == []


def test_loading_the_model_itself_says_it_is_served_as_parts(built: CliBuild) -> None:
    with pytest.raises(aotcache.CacheMiss) as missed:
        aotcache.load(TinyVLM(), WITH_ENCODER, cache_dir=built.cache, strict=True)
    assert "served as parts (vision, language)" in missed.value.one_line()


def test_a_part_the_example_inputs_never_reach_is_a_target_error(tmp_path: Path) -> None:
    class Unreached(TinyVLM):
        def forward(self, input_ids, patches):  # type: ignore[no-untyped-def, override]
            return self.language(self.embed(input_ids))

    model = Unreached()
    with pytest.raises(TargetError, match="did not call its part 'vision'"):
        aotcache.precompile(model, WITH_ENCODER, model.example_inputs, cache_dir=tmp_path)
