"""Shape guards: loaded artifacts never check them, so precompile evaluates every
compiled piece's guards over every size of its ranges. A size the guards exclude gets a
compile of its own where the trace still holds there (a range that starts at 1, which
Dynamo's 0/1 specialisation excludes), and is refused, with a clear error, where forward
itself takes another path (a branch on the size): never a wrong number."""

from __future__ import annotations

import json

import pytest
from _support import TINY_CONFIG, last_json, run_cli, run_python

BRANCHY = """
import torch
from aotcache.target import ModelSpec


class Branchy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        if x.shape[0] == 5:
            return y * 2
        return y + 1


spec = ModelSpec(model=Branchy, example_inputs=lambda n: (torch.randn(n, 4),), dynamic_arg_dims={"x": 0},
                 config={"compile_ranges_split_points": [8], "max_num_batched_tokens": 16})
"""

EVERY_SIZE = """
import json, sys, torch, aotcache
sys.path.insert(0, {folder!r})
from {module} import spec
model = spec.build_model().eval()
loaded = aotcache.load(model, {config!r}, cache_dir={cache!r}, strict=True)
results = {{}}
for size in range(1, {largest} + 1):
    args = spec.example_inputs(size)
    try:
        got = loaded(*args)
    except aotcache.DispatchError as exc:
        results[size] = str(exc)
        continue
    with torch.no_grad():
        results[size] = float((got - model(*args)).abs().max())
print(json.dumps(results))
"""


def _precompile(target: str, cache, *args: str) -> dict:
    done = run_cli("precompile", target, "--cache-dir", str(cache), "--json", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_a_range_starting_at_1_gets_size_1_compiled_apart(tmp_path) -> None:
    config = {**TINY_CONFIG, "compile_sizes": []}
    built = _precompile("examples/tiny_llama.py:spec", tmp_path, "-O", json.dumps(config))
    assert built["added_sizes"] == [1] and built["refused_sizes"] == []
    code = EVERY_SIZE.format(folder=".", module="examples.tiny_llama", config=config, cache=str(tmp_path), largest=32)
    results = last_json(run_python(code).stdout)
    assert all(isinstance(d, float) and d <= 1e-4 for d in results.values()), results


@pytest.mark.parametrize("compile_five", [False, True])
def test_a_size_where_forward_branches_is_refused_never_wrong(tmp_path, compile_five: bool) -> None:
    (tmp_path / "branchy.py").write_text(BRANCHY)
    extra = ["--compile-sizes", "5"] if compile_five else []
    built = _precompile(f"{tmp_path / 'branchy.py'}:spec", tmp_path / "cache", *extra)
    config = json.loads((tmp_path / "cache" / "entries" / built["entry"] / "manifest.json").read_bytes())["config"]
    if not compile_five:
        assert built["refused_sizes"] == [5] and 1 in built["added_sizes"]
    code = EVERY_SIZE.format(
        folder=str(tmp_path), module="branchy", config=config, cache=str(tmp_path / "cache"), largest=16
    )
    results = last_json(run_python(code).stdout)
    assert "forward takes another path at size 5" in results.pop("5")
    assert all(isinstance(d, float) and d <= 1e-4 for d in results.values()), results
