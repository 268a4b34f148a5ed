"""Real scale: weights are never needed to precompile, and the self-check holds a
bounded amount of memory whatever sizes the config covers.

The large test precompiles a Llama whose fp32 weights are 4.8 GB with the default
config (sizes up to 8192) inside a 2 GiB budget, watched from outside: every 20 ms the
test reads the resident memory of the precompile and of its workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import transformers

from aotcache.backend.check_budget import CheckMemory, range_check_sizes
from aotcache.backend.peak_memory import ResidentWatcher
from aotcache.configuration import Range
from tests._support import REPO, last_json, python_env, run_cli

# 16 layers of hidden 2048 and MLP 8192, vocabulary 32000: 1.2 billion fp32 parameters.
BIG = {
    "vocab_size": 32000,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "max_position_embeddings": 8192,
    "dtype": "float32",
}
BUDGET = 2 * 2**30  # the precompile's resident memory, in any process, at any time
CHECK_BYTES = 256 * 2**20
OVER_BUDGET_SIZE = 4096  # a compile size whose check would hold ~2 GB of logits: compiled, not run


def _weights_bytes(config: dict[str, Any]) -> int:
    hidden, mlp = config["hidden_size"], config["intermediate_size"]
    per_layer = 4 * hidden * hidden + 3 * hidden * mlp + 2 * hidden
    return 4 * (config["num_hidden_layers"] * per_layer + 2 * config["vocab_size"] * hidden + hidden)


def _watched(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], int, int]:
    """Run a command; the largest resident memory seen of it and of any of its workers."""
    process = subprocess.Popen(
        argv, cwd=REPO, env=python_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with ResidentWatcher(process) as seen:
        stdout, stderr = process.communicate(timeout=900)
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr), seen.main, seen.workers


def test_a_model_whose_weights_exceed_the_budget_precompiles_within_it(tmp_path) -> None:
    folder = tmp_path / "big"
    transformers.LlamaConfig(**BIG).save_pretrained(folder)
    assert _weights_bytes(BIG) > 2 * BUDGET  # 4.8 GB: building the weights alone would break the budget
    config = {"compile_sizes": [OVER_BUDGET_SIZE]}  # beside hf's defaults: one range [1, 8192]
    argv = [str(Path(sys.executable).with_name("aotcache")), "precompile", f"hf:{folder}", "--json"]
    argv += ["--compilation-config", json.dumps(config), "--cache-dir", str(tmp_path / "cache")]
    done, main, workers = _watched(argv, {"AOTCACHE_CHECK_BYTES": str(CHECK_BYTES)})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert main < BUDGET and workers < BUDGET, (main / 2**30, workers / 2**30)
    # every stage's own peak is reported, and agrees with what was seen from outside
    peaks = summary["peak_rss_bytes"]
    assert {"trace", "compile", "self-check", "publish"} <= set(peaks)
    assert main * 0.95 <= max(peaks[s] for s in ("trace", "compile", "self-check", "publish")) < BUDGET
    assert "peak RSS" in done.stderr
    # the unit count is said once, right: size 1, which the range's guards leave out, counted from the start
    counts = [line for line in done.stderr.splitlines() if line.endswith("units to build")]
    assert len(counts) == 1 and counts[0].split("] ")[1] == f"{summary['units']} units to build", counts
    # the size over the check's budget is compiled, not run, and both outputs say so
    assert summary["unchecked_sizes"] == [OVER_BUDGET_SIZE]
    assert f"size {OVER_BUDGET_SIZE} is compiled but not self-checked" in done.stderr
    # the self-check ran on random values: one layer's and the embeddings', never 16 layers'
    assert 0 < summary["check_weights_bytes"] < _weights_bytes(BIG) / 4
    assert summary["sizes_and_ranges"] == 3 and summary["added_sizes"] == [1]  # [1, 8192], 4096, and 1


def test_check_sizes_stay_within_the_budget_and_off_concrete_sizes() -> None:
    assert range_check_sizes(Range(1, 8192), {1}, 440) == [2, 440]
    assert range_check_sizes(Range(1, 8192), {1}, 10**6) == [2, 4096]
    assert range_check_sizes(Range(17, 64), set(), 1000) == [17, 40]
    assert range_check_sizes(Range(17, 64), set(), 3) == [17]  # never past the budget, never below the range
    assert range_check_sizes(Range(1, 4), {1, 2}, 40) == [3]
    assert range_check_sizes(Range(2, 3), {2, 3}, 40) == []


def test_check_memory_counts_the_recorded_activations_and_the_largest_tensor() -> None:
    captured: dict[str, Any] = {}

    def backend(gm: torch.fx.GraphModule, inputs: list[Any]) -> Any:
        captured.update(gm=gm, inputs=inputs)
        return gm.forward

    def piece(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (x @ w).softmax(-1)

    x = torch.randn(8, 16)
    torch._dynamo.mark_dynamic(x, 0)
    torch.compile(piece, backend=backend, fullgraph=True)(x, torch.randn(16, 1000))
    torch._dynamo.reset()
    symbol = next(v.node.expr for v in captured["inputs"] if isinstance(v, torch.SymInt))
    memory = CheckMemory.of([captured["gm"]], symbol)
    # x's rows are recorded (w does not depend on the size); the [n, 1000] result is the largest
    assert memory.bytes_at(10) == 10 * 16 * 4 + 4 * (10 * 1000 * 4)
    assert memory.largest_size(memory.bytes_at(100), 8192) == 100
    assert memory.largest_size(1, 8192) == 1


def test_a_spec_built_without_weights_serves_its_real_weights_in_a_fresh_process(tmp_path) -> None:
    """A user's own spec with model_without_weights: the entry is built from meta
    parameters, and a serving process with real weights (and the buffer its __init__
    computes) gets eager's numbers."""
    source = tmp_path / "weightless.py"
    source.write_text(
        "import torch, aotcache\nfrom aotcache.target import ModelSpec\n\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self) -> None:\n"
        "        super().__init__()\n"
        "        self.up = torch.nn.Linear(16, 64)\n"
        "        self.down = torch.nn.Linear(64, 16)\n"
        "        self.register_buffer('scale', torch.arange(1, 17).float().reciprocal())\n\n"
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
        "        return self.down(torch.relu(self.up(x))) * self.scale\n\n"
        "def real() -> Net:\n"
        "    torch.manual_seed(3)\n"
        "    return Net().eval()\n\n"
        "def weightless() -> Net:\n"
        "    with aotcache.without_weights():\n"
        "        return Net().eval()\n\n"
        "spec = ModelSpec(model=real, model_without_weights=weightless,\n"
        "                 example_inputs=lambda n: (torch.randn(n, 16),), dynamic_arg_dims={'x': 0},\n"
        "                 config={'compile_sizes': [4], 'max_num_batched_tokens': 32})\n"
    )
    assert all(p.is_meta for p in __import__("runpy").run_path(str(source))["weightless"]().parameters())
    cache = tmp_path / "cache"
    built = run_cli("precompile", f"{source}:spec", "--cache-dir", str(cache), "--json")
    assert built.returncode == 0, built.stderr[-3000:]
    serve = (
        "import json, sys, torch, aotcache\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import weightless\n"
        "model = weightless.real()\n"
        f"loaded = aotcache.load(model, weightless.spec.config, cache_dir={str(cache)!r}, strict=True)\n"
        "out = {}\n"
        "for n in (3, 4, 17):\n"
        "    x = torch.randn(n, 16)\n"
        "    with torch.no_grad():\n"
        "        out[n] = float((loaded(x) - model(x)).abs().max())\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", serve], cwd=REPO, env=python_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(diff <= 1e-5 for diff in last_json(done.stdout).values()), done.stdout


def test_a_spec_check_graph_reaches_the_cli_precompile(tmp_path) -> None:
    source = tmp_path / "checked.py"
    source.write_text(
        "import torch\nfrom aotcache.target import ModelSpec\n\n"
        "def refuse(graph):\n"
        "    from aotcache.errors import TargetError\n"
        "    raise TargetError(f'refused a graph of {len(graph.graph.nodes)} nodes')\n\n"
        "spec = ModelSpec(model=lambda: torch.nn.Linear(4, 4), example_inputs=lambda n: (torch.randn(n, 4),),\n"
        "                 dynamic_arg_dims={'input': 0}, check_graph=refuse)\n"
    )
    done = run_cli("precompile", f"{source}:spec", "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 2 and "refused a graph of" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
