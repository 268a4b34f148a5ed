"""Hugging Face transformers models (real transformers, tiny configs, no network): `hf:`
targets built from config.json alone, served with real weights from `from_pretrained`,
the model's own output types, and attention as the op the graph is split at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers  # a dev dependency: missing, the suite fails here rather than skipping
from _support import last_json, run_cli, run_python
from hf_models import ARCHITECTURES, BY_NAME, FAST

import aotcache
from aotcache import hf
from aotcache.errors import EntryNotFound

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
    for padded in (False, True):
        mask = torch.ones_like(ids)
        if padded:
            mask[0, : size // 2] = 0  # left padding: rows with nothing to attend to
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask, use_cache=False) if cls != "AutoModel" else model(
                input_ids=ids, attention_mask=mask)
        got = loaded(input_ids=ids, attention_mask=mask)
        field = "logits" if cls != "AutoModel" else "last_hidden_state"
        diff = float((getattr(got, field) - getattr(expected, field)).abs().max())
        out[str(size) + (" left-padded" if padded else "")] = [type(got).__name__, diff]
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
    assert two["units_compiled"] + two["units_shared"] == four["units_compiled"] + four["units_reused"] == 12
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


def _masks() -> dict[str, Any]:
    causal = torch.ones(5, 5).tril().bool()
    left_padded = causal.clone()
    left_padded[:2] = False  # rows of padding attend to nothing
    return {
        "none": None,
        "bool": causal.reshape(1, 1, 5, 5),
        "bool, fully masked rows": left_padded.reshape(1, 1, 5, 5),
        "float": torch.zeros(1, 1, 5, 5).masked_fill(~causal, float("-inf")),
    }


@pytest.mark.parametrize("extra", ["plain", "softcap", "sinks", "softcap and sinks"])
@pytest.mark.parametrize("mask", list(_masks()))
def test_the_attention_op_fake_passes_opcheck_with_every_argument(mask: str, extra: str) -> None:
    q, k, v = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    softcap = 50.0 if "softcap" in extra else 0.0
    sinks = torch.randn(4) if "sinks" in extra else None
    args = (q, k, v, _masks()[mask], 0.35, mask == "none", softcap, sinks)
    results = torch.library.opcheck(torch.ops.aotcache.attention.default, args)
    assert set(results.values()) == {"SUCCESS"}, results


def test_softcap_and_sinks_are_computed_as_transformers_computes_them() -> None:
    """Against the formulas of transformers' eager functions (Gemma 2, gpt-oss), with
    scores large enough that the cap changes them."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 5, 8) * 4, torch.randn(1, 2, 5, 8) * 4, torch.randn(1, 2, 5, 8)
    mask = _masks()["bool"]
    k2, v2 = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (q @ k2.transpose(-1, -2)) * 0.35
    capped = torch.tanh(scores / 5.0) * 5.0
    masked = capped.masked_fill(~mask, float("-inf"))
    expected = torch.softmax(masked, dim=-1) @ v2
    got = torch.ops.aotcache.attention(q, k, v, mask, 0.35, False, 5.0, None).transpose(1, 2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    uncapped = torch.ops.aotcache.attention(q, k, v, mask, 0.35, False, 0.0, None).transpose(1, 2)
    assert (uncapped - expected).abs().max() > 1e-2  # the cap matters here
    sinks = torch.randn(4)
    logits = torch.cat([scores.masked_fill(~mask, float("-inf")), sinks.reshape(1, 4, 1, 1).expand(1, 4, 5, 1)], -1)
    expected = torch.softmax(logits, dim=-1)[..., :-1] @ v2
    got = torch.ops.aotcache.attention(q, k, v, mask, 0.35, False, 0.0, sinks).transpose(1, 2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_rows_with_nothing_to_attend_to_are_what_sdpa_gives_them() -> None:
    """Left padding: a query row whose boolean mask is all False gives zeros, as sdpa
    with that boolean mask does (not the mean of every value, which a finfo.min float
    mask gives), with and without softcap."""
    q, k, v = torch.randn(1, 4, 5, 8), torch.randn(1, 4, 5, 8), torch.randn(1, 4, 5, 8)
    mask = _masks()["bool, fully masked rows"]
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.35)
    for softcap in (0.0, 1e9):  # the explicit path, with a cap too large to change anything
        got = torch.ops.aotcache.attention(q, k, v, mask, 0.35, False, softcap, None).transpose(1, 2)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert got[:, :, :2].abs().max() == 0


def test_an_attention_argument_the_op_would_drop_fails_the_precompile_by_name(tmp_path) -> None:
    model_file = tmp_path / "oddattention.py"
    model_file.write_text(
        "import torch\nfrom aotcache import hf\nfrom aotcache.target import ModelSpec\n\n"
        "class OddAttention(torch.nn.Module):\n"
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
        "        q = x.reshape(1, 1, x.shape[0], 8)\n"
        "        out, _ = hf.attention_forward(self, q, q, q, None, alibi_slopes=torch.ones(1))\n"
        "        return out.reshape(x.shape)\n\n"
        "spec = ModelSpec(model=OddAttention, example_inputs=lambda n: (torch.randn(n, 8),),\n"
        "                 dynamic_arg_dims={'x': 0})\n"
    )
    done = run_cli("precompile", f"{model_file}:spec", "--cache-dir", str(tmp_path / "c"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "OddAttention passes alibi_slopes=<a tensor of shape [1]>" in done.stderr
    assert "does not know it" in done.stderr and "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.startswith("error:")]) == 1


def test_a_model_whose_attention_is_not_routed_is_refused_never_one_silent_piece() -> None:
    model = transformers.AutoModelForCausalLM.from_config(_llama(2)).eval()  # no split_attention
    with pytest.raises(aotcache.TargetError, match=r"llama: 0 of its 2 layers"):
        hf.check_routed(model, hf.example_inputs_for(model.config)(2))


def test_bad_hf_targets_are_one_line_errors(tmp_path) -> None:
    done = run_cli("precompile", f"hf:{tmp_path}", "--cache-dir", str(tmp_path / "c"))
    assert done.returncode == 2 and "has no config.json" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("precompile", "examples/mlp.py:spec", "--hf-class", "AutoModel", "--cache-dir", str(tmp_path / "c"))
    assert done.returncode == 2 and "only with an hf:PATH TARGET" in done.stderr


# -- every architecture of the set: split at attention, equal to eager -------------------

ARCH_SIZES = {"compile_sizes": [4], "compile_ranges_split_points": [8], "max_num_batched_tokens": 16}
ARCH_LENGTHS = [1, 2, 4, 5, 8, 9, 16]  # every compile size, both ends of each range, and between


def _selected(config: pytest.Config) -> list[str]:
    return [a.name for a in ARCHITECTURES if a.name in FAST or config.getoption("--run-slow")]


@pytest.fixture(scope="module")
def architectures(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each selected architecture written as a checkpoint, precompiled as an `hf:` TARGET
    in this process (one cache dir), then served from one fresh process with
    from_pretrained and compared with the model's own attention implementation, with an
    all-ones and a left-padded mask at every length."""
    root = tmp_path_factory.mktemp("architectures")
    cache = root / "cache"
    built: dict[str, Any] = {}
    for name in _selected(request.config):
        arch = BY_NAME[name]
        path = _checkpoint(root / name, arch.config(), getattr(transformers, arch.model_class), 7)
        target = f"hf:{path}@{arch.model_class}"
        built[name] = aotcache.precompile(target, hf.default_config(path, **ARCH_SIZES), cache_dir=cache).summary
        built[name]["path"] = str(path)
    code = SERVE_EVERY.format(
        models={n: (built[n]["path"], BY_NAME[n].model_class, BY_NAME[n].output) for n in built},
        config=ARCH_SIZES, cache=str(cache), lengths=ARCH_LENGTHS,
    )  # fmt: skip
    done = run_python(code, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"built": built, "served": last_json(done.stdout)}


SERVE_EVERY = """
import json, torch, aotcache, transformers
results = {{}}
for name, (path, cls, field) in {models!r}.items():
    model = getattr(transformers, cls).from_pretrained(path).eval()
    loaded = aotcache.load(model, aotcache.hf.default_config(path, **{config!r}), cache_dir={cache!r}, strict=True)
    worst = {{"ones": 0.0, "left-padded": 0.0}}
    for length in {lengths!r}:
        ids = torch.randint(0, 128, (1, length), generator=torch.Generator().manual_seed(length))
        for kind in worst:
            mask = torch.ones_like(ids)
            if kind == "left-padded" and length > 2:
                mask[0, : length // 2] = 0
            with torch.no_grad():
                expected = getattr(model(input_ids=ids, attention_mask=mask), field)
            got = getattr(loaded(input_ids=ids, attention_mask=mask), field)
            # padded positions are compared too where the model's own attention is sdpa,
            # whose rule for rows with nothing to attend to the op follows
            keep = slice(None) if model.config._attn_implementation == "sdpa" else mask[0].bool()
            worst[kind] = max(worst[kind], float((got[:, keep] - expected[:, keep]).abs().max()))
    results[name] = {{"worst": worst, "reference": model.config._attn_implementation}}
print(json.dumps(results))
"""


@pytest.mark.parametrize(
    "name", [pytest.param(a.name, marks=() if a.name in FAST else pytest.mark.slow) for a in ARCHITECTURES]
)
def test_every_architecture_is_split_at_attention_and_equal_to_eager(name: str, architectures) -> None:
    built, served = architectures["built"][name], architectures["served"][name]
    layers = 2
    assert built["pieces_total"] == layers + 1, built  # cut at each layer's attention
    for kind, worst in served["worst"].items():
        assert worst <= 1e-4, (name, kind, worst, served["reference"])


def test_no_split_compiles_an_hf_model_whole(checkpoints, tmp_path) -> None:
    done = run_cli(
        "precompile", f"hf:{checkpoints['llama']}", "--no-split", "--max-num-batched-tokens", "8",
        "--cache-dir", str(tmp_path), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["pieces_total"] == 1
    manifest = json.loads((Path(summary["path"]) / "manifest.json").read_text())
    assert manifest["recorded"]["target"].endswith("+whole") and manifest["config"]["splitting_ops"] == []


def test_aotcache_own_sources_are_found_from_any_directory(checkpoints, tmp_path) -> None:
    """An hf: entry records aotcache/hf.py; aotcache installed in editable mode (an import
    hook, not a sys.path entry) is found as Python finds it, from any working directory:
    no false "not found from here", and the sources check of verify --strict is ok."""
    import subprocess
    import sys

    from _support import python_env

    env = {k: v for k, v in python_env().items() if k != "PYTHONPATH"}  # as a user has it
    exe = str(Path(sys.executable).with_name("aotcache"))
    entry = checkpoints["llama-result"].entry_id
    args = ["--cache-dir", str(checkpoints["cache"]), "--json"]

    def run(*command: str) -> dict[str, Any]:
        done = subprocess.run([exe, *command, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        return json.loads(done.stdout)

    listed = run("inspect-cache", entry)
    assert "aotcache/hf.py" in [s["path"] for s in listed["sources"]]
    assert not listed["warnings"], listed["warnings"]
    report = run("verify", entry, "--strict")
    sources = next(c for c in report["checks"] if c["check"] == "sources")
    assert sources["status"] == "ok", sources  # not "unknown": every file found, so none fails --strict
    assert not any("not found from here" in w for w in report["warnings"]), report["warnings"]
