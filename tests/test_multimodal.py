"""compile_mm_encoder: a model served as parts (vLLM's multimodal models). The model
class is not decorated; its language model and its vision encoder (enable_if=
should_compile_mm_encoder) are, and each compiles as an entry of its own, listed by
inspect-cache under the model and loaded by the part itself in a serving process.

One module fixture precompiles tests/multimodal_models.py:TinyVLM through the CLI."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from _support import last_json, run_argv, run_cli
from multimodal_models import CONFIG, TinyVisionEncoder, TinyVLM

import aotcache
from aotcache.config import from_dict
from aotcache.decorators import compiled_parts
from aotcache.errors import TargetError

TARGET = "tests/multimodal_models.py:TinyVLM"
WITH_ENCODER = {**CONFIG, "compile_mm_encoder": True}

SERVE = """
import json, sys
import torch, aotcache
from aotcache.counters import counters
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


@dataclass
class Built:
    cache: Path
    summary: dict


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    cache = tmp_path_factory.mktemp("multimodal") / "cache"
    result = run_cli(
        "precompile", TARGET, "-O", json.dumps(WITH_ENCODER), "--cache-dir", str(cache), "--json", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    return Built(cache, json.loads(result.stdout))


def test_precompile_builds_one_entry_per_part(built: Built) -> None:
    """Both parts are entries of their own, each keyed by the part alone."""
    parts = built.summary["parts"]
    assert built.summary["model"] == "TinyVLM"
    assert set(parts) == {"vision", "language"}
    assert parts["vision"]["model"] == "TinyVisionEncoder" and parts["language"]["model"] == "TinyLanguageModel"
    assert parts["vision"]["entry"] != parts["language"]["entry"]
    assert all(not part["hit"] and part["units_compiled"] >= 1 for part in parts.values())


def test_inspect_cache_lists_the_parts_under_the_model(built: Built) -> None:
    result = run_cli("inspect-cache", "--cache-dir", str(built.cache), "--json")
    assert result.returncode == 0, result.stderr
    models = sorted(row["model"] for row in json.loads(result.stdout)["entries"])
    assert models == ["TinyVLM.language (TinyLanguageModel)", "TinyVLM.vision (TinyVisionEncoder)"]


@pytest.mark.parametrize("encoder", [True, False], ids=["compile_mm_encoder", "eager-encoder"])
def test_a_serving_process_loads_each_part_equal_to_eager(built: Built, encoder: bool) -> None:
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


def test_verify_checks_and_runs_every_part_and_a_part_entry_by_its_key(built: Built) -> None:
    """verify TARGET --run checks each part's entry and compares each part with eager in
    a fresh process, on the inputs the model gives it; verify KEY --run of a part's
    entry finds the part through the entry's part_of."""
    result = run_cli(
        "verify", TARGET, "-O", json.dumps(WITH_ENCODER), "--cache-dir", str(built.cache), "--run", "--json"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and set(report["parts"]) == {"vision", "language"}
    for path, part in report["parts"].items():
        assert part["entry"] == built.summary["parts"][path]["entry"]
        assert part["run"]["ok"] and [r["size"] for r in part["run"]["results"]] == [1, 16]
    vision = built.summary["parts"]["vision"]["entry"]
    result = run_cli("verify", vision, "--cache-dir", str(built.cache), "--run", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["part_of"] == "TinyVLM.vision" and report["run"]["entry"] == vision


def test_without_compile_mm_encoder_the_encoder_is_not_a_part(built: Built) -> None:
    """The same model without compile_mm_encoder has one part, the language model, whose
    entry is the one already built (compile_mm_encoder is not in a part's key)."""
    assert [path for path, _ in compiled_parts(TinyVLM(), from_dict(CONFIG))] == ["language"]
    result = run_cli("precompile", TARGET, "-O", json.dumps(CONFIG), "--cache-dir", str(built.cache), "--json")
    assert result.returncode == 0, result.stderr
    parts = json.loads(result.stdout)["parts"]
    assert list(parts) == ["language"] and parts["language"]["hit"]
    assert parts["language"]["entry"] == built.summary["parts"]["language"]["entry"]


def test_a_decorated_model_holds_its_decorated_submodules_in_its_own_trace() -> None:
    """Only an undecorated model is served as parts: the encoder class itself, decorated,
    is one model (its own trace would hold any decorated submodule)."""
    assert compiled_parts(TinyVisionEncoder(), from_dict(WITH_ENCODER)) == []


def test_a_part_the_example_inputs_never_reach_is_a_target_error(tmp_path: Path) -> None:
    class Unreached(TinyVLM):
        def forward(self, input_ids, patches):  # type: ignore[no-untyped-def, override]
            return self.language(self.embed(input_ids))

    model = Unreached()
    with pytest.raises(TargetError, match="did not call its part 'vision'"):
        aotcache.precompile(model, WITH_ENCODER, model.example_inputs, cache_dir=tmp_path)
