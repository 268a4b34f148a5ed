"""Hugging Face transformers models (real transformers, tiny configs, no network): `hf:`
targets built from config.json alone, served with real weights from `from_pretrained`,
the model's own output types, and attention as the op the graph is split at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _support import last_json, run_cli, run_python

import aotcache
from aotcache import hf
from aotcache.errors import EntryNotFound

transformers = pytest.importorskip("transformers", reason="the hf extra is part of dev; install .[dev]")

SIZES = {"compile_sizes": [4], "compile_ranges_split_points": [8], "max_num_batched_tokens": 32}
CHECK_SIZES = [4, 1, 8, 9, 32]  # every compile size and both ends of each range


def _llama(layers: int, hidden: int = 32) -> Any:
    return transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )


def _bert() -> Any:
    return transformers.BertConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64,
    )  # fmt: skip


def _checkpoint(folder: Path, config: Any, model_class: Any, seed: int) -> Path:
    torch.manual_seed(seed)
    model_class.from_config(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hf")
    causal, encoder = transformers.AutoModelForCausalLM, transformers.AutoModel
    found: dict[str, Any] = {
        "llama": _checkpoint(root / "llama", _llama(2), causal, 1),
        "llama4": _checkpoint(root / "llama4", _llama(4), causal, 2),
        "bert": _checkpoint(root / "bert", _bert(), encoder, 3),
        "cache": root / "cache",
    }
    for name in ("llama", "llama4"):
        config = hf.default_config(found[name], **SIZES)
        found[f"{name}-result"] = aotcache.precompile(f"hf:{found[name]}", config, cache_dir=found["cache"])
    built = run_cli(
        "precompile", f"hf:{found['bert']}", "--hf-class", "AutoModel", "--compilation-config", json.dumps(SIZES),
        "--cache-dir", str(found["cache"]), "--json",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    found["bert-summary"] = json.loads(built.stdout)
    return found


SERVE = """
import json, torch, aotcache, transformers
path, cls, sizes = {path!r}, {cls!r}, {sizes!r}
model = getattr(transformers, cls).from_pretrained(path).eval()
loaded = aotcache.load(model, aotcache.hf.default_config(path, **{config!r}), cache_dir={cache!r}, strict=True)
out = {{}}
for size in sizes:
    ids = torch.randint(0, 128, (1, size), generator=torch.Generator().manual_seed(100 + size))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, use_cache=False) if cls != "AutoModel" else model(
            input_ids=ids, attention_mask=mask)
    got = loaded(input_ids=ids, attention_mask=mask)
    field = "logits" if cls != "AutoModel" else "last_hidden_state"
    out[size] = [type(got).__name__, float((getattr(got, field) - getattr(expected, field)).abs().max())]
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    ("name", "cls", "output_type"),
    [
        ("llama", "AutoModelForCausalLM", "CausalLMOutputWithPast"),
        ("bert", "AutoModel", "BaseModelOutputWithPoolingAndCrossAttentions"),
    ],
)
def test_served_with_real_weights_in_a_fresh_process(name: str, cls: str, output_type: str, checkpoints) -> None:
    """Precompiled from config.json alone (random weights); served with the checkpoint's
    own weights from from_pretrained; the model's output type comes back."""
    code = SERVE.format(
        path=str(checkpoints[name]), cls=cls, sizes=CHECK_SIZES, config=SIZES, cache=str(checkpoints["cache"])
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    for size, (returned, diff) in last_json(done.stdout).items():
        assert returned == output_type and diff <= 1e-4, (size, returned, diff)


def test_identical_layers_compile_once(checkpoints) -> None:
    two, four = checkpoints["llama-result"].summary, checkpoints["llama4-result"].summary
    assert two["pieces_total"] == 3 and four["pieces_total"] == 5  # split at each layer's attention
    assert two["pieces_unique"] == four["pieces_unique"] == 3
    # 4 layers need the units 2 do; built after the 2-layer entry, they reuse all of them
    assert two["units_compiled"] + two["units_deduplicated"] == four["units_compiled"] + four["units_reused"] == 12
    assert four["units_compiled"] == 0
    assert checkpoints["bert-summary"]["pieces_total"] == 3


def test_a_config_that_changes_shapes_is_a_miss_naming_the_parameters(checkpoints, tmp_path) -> None:
    wider = _checkpoint(tmp_path / "wider", _llama(2, hidden=48), transformers.AutoModelForCausalLM, 4)
    model = transformers.AutoModelForCausalLM.from_pretrained(wider).eval()
    with pytest.raises(EntryNotFound, match=r"model\.parameters") as info:
        aotcache.load(model, hf.default_config(wider, **SIZES), cache_dir=checkpoints["cache"], strict=True)
    assert "model.parameters" in {d.name for d in info.value.differences}


def test_verify_an_hf_target_with_run(checkpoints) -> None:
    done = run_cli(
        "verify", f"hf:{checkpoints['llama']}", "--run", "--compilation-config", json.dumps(SIZES),
        "--cache-dir", str(checkpoints["cache"]), "--json",
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["run"]["ok"], done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.parametrize("mask", [False, True])
def test_the_attention_op_fake_passes_opcheck(mask: bool) -> None:
    q, k, v = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    attn_mask = torch.zeros(1, 1, 5, 5).masked_fill(torch.ones(5, 5).triu(1).bool(), float("-inf")) if mask else None
    results = torch.library.opcheck(torch.ops.aotcache.attention.default, (q, k, v, attn_mask, 0.35, not mask))
    assert set(results.values()) == {"SUCCESS"}, results


def test_bad_hf_targets_are_one_line_errors(tmp_path) -> None:
    done = run_cli("precompile", f"hf:{tmp_path}", "--cache-dir", str(tmp_path / "c"))
    assert done.returncode == 2 and "has no config.json" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("precompile", "examples/mlp.py:spec", "--hf-class", "AutoModel", "--cache-dir", str(tmp_path / "c"))
    assert done.returncode == 2 and "only with an hf:PATH TARGET" in done.stderr
