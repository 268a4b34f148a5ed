"""The GPU path on a real device (`pytest -m gpu`, `make test-gpu`): precompile the example
on `cuda` with Inductor (Triton), load it in a fresh process, compare with eager at every
compile size and both ends of every range, capture every CUDA-graph key, replay with new
data, count captures and replays, and print load and per-call latency next to
torch.compile. Every test is skipped, with its reason, where no CUDA device is present;
the same runner logic is proved on the CPU by tests/test_cudagraph.py's emulation."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from _support import last_json, run_cli, run_python

import aotcache
from aotcache.errors import IncompatibleEnvironment
from aotcache.modes import CUDAGraphMode
from aotcache.serve import cudagraph
from aotcache.serve.cudagraph import BatchDescriptor, CUDAGraphWrapper
from examples import tiny_llama

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device (the GPU path runs on CPU only as an emulation)"
    ),
]

CONFIG: dict[str, Any] = dict(tiny_llama.CONFIG)
CHECK_SIZES = [1, 2, 4, 8, 3, 16, 17, 40, 64]  # every compile size and both ends of each range
SPEC = "examples/tiny_llama.py:spec_cuda"


def _cuda_model() -> torch.nn.Module:
    return tiny_llama.build(2).cuda()


@pytest.fixture(scope="module")
def cuda_entry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    cache = tmp_path_factory.mktemp("cuda")
    result = aotcache.precompile(tiny_llama.spec_cuda, CONFIG, cache_dir=cache)
    return cache, result


def test_cuda_pieces_are_stored_in_the_inductor_format(cuda_entry) -> None:
    _, result = cuda_entry
    artifacts = result.manifest.artifacts.values()
    assert {a["format"] for a in artifacts} == {"inductor"}
    assert all(a["device_types"] == ["cuda"] for a in artifacts)
    assert result.manifest.recorded["device_type"] == "cuda"
    names = {f.name for f in result.manifest.lookup}
    assert {"cuda.capability", "cuda.device_name", "cuda.version", "triton.version"} <= names


def test_load_needs_name_inductor_and_triton(cuda_entry) -> None:
    cache, _ = cuda_entry
    shown = run_cli("inspect-cache", "--cache-dir", str(cache), "--json")
    assert json.loads(shown.stdout)["entries"][0]["load_needs"] == ["inductor", "triton"]


FRESH_LOAD = """
import json, time, torch, aotcache
from examples import tiny_llama
started = time.perf_counter()
model = tiny_llama.build(2).cuda()
loaded = aotcache.load(model, {config!r}, cache_dir={cache!r}, strict=True)
first = loaded(tiny_llama.example_inputs(5)[0].cuda())
torch.cuda.synchronize()
seconds = time.perf_counter() - started
diffs = {{}}
for size in {sizes!r}:
    ids = tiny_llama.example_inputs(size)[0].cuda()
    with torch.no_grad():
        expected = model(ids)
    diffs[size] = float((loaded(ids) - expected).abs().max())
print(json.dumps({{"seconds": seconds, "diffs": diffs}}))
"""


def test_cuda_entry_loads_in_a_fresh_process_and_matches_eager(cuda_entry) -> None:
    cache, _ = cuda_entry
    done = run_python(FRESH_LOAD.format(config=CONFIG, cache=str(cache), sizes=CHECK_SIZES))
    assert done.returncode == 0, done.stderr[-3000:]
    report = last_json(done.stdout)
    print(f"\ncuda load -> first output: {report['seconds']:.2f} s (after import torch)")
    assert all(diff <= 1e-3 for diff in report["diffs"].values()), report["diffs"]


def test_an_entry_for_another_capability_is_refused_by_name(cuda_entry, monkeypatch) -> None:
    cache, _ = cuda_entry
    real = torch.cuda.get_device_capability
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (real(*a)[0] + 1, 0))
    with pytest.raises(IncompatibleEnvironment, match=r"cuda\.capability"):
        aotcache.load(_cuda_model(), CONFIG, cache_dir=cache, strict=True)


@pytest.mark.parametrize("mode", ["FULL", "PIECEWISE", "FULL_AND_PIECEWISE", "FULL_DECODE_ONLY"])
def test_cuda_graphs_capture_every_key_and_replay_new_data(mode: str, cuda_entry) -> None:
    cache, _ = cuda_entry
    config = {**CONFIG, "cudagraph_mode": mode, "cudagraph_capture_sizes": [1, 2, 4, 8, 16]}
    model = _cuda_model()
    loaded = aotcache.load(model, config, cache_dir=cache, strict=True, capture_cudagraphs=True)
    wrappers = loaded.graph_runner.wrappers()
    captured = sum(w.captures for w in wrappers)
    assert captured == sum(len(w.graphs) for w in wrappers) > 0
    for call, (size, decode) in enumerate([(3, False), (5, True), (8, False), (1, True), (12, False), (20, False)]):
        ids = torch.randint(0, tiny_llama.VOCAB, (size,), device="cuda")
        with torch.no_grad():
            expected = model(ids)
        got = loaded.run_batch(ids, uniform_decode=decode).clone()
        torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3, msg=f"call {call} size {size}")
    assert sum(w.captures for w in wrappers) == captured and sum(w.replays for w in wrappers) > 0


def test_a_real_graph_replays_new_values_at_new_addresses() -> None:
    wrapper = CUDAGraphWrapper(lambda x: x * 2, CUDAGraphMode.FULL, backend=cudagraph.CUDAGraphs())
    with cudagraph.graph_context(CUDAGraphMode.FULL, BatchDescriptor(4)):
        first = wrapper(torch.ones(4, device="cuda")).clone()
        second = wrapper(torch.full((4,), 3.0, device="cuda")).clone()
    assert first.tolist() == [2.0] * 4 and second.tolist() == [6.0] * 4
    assert wrapper.captures == 1 and wrapper.replays == 1 and wrapper.input_copies == 1


def test_per_call_latency_next_to_torch_compile(cuda_entry) -> None:
    cache, _ = cuda_entry
    model = _cuda_model()
    loaded = aotcache.load(model, {**CONFIG, "cudagraph_mode": "FULL"}, cache_dir=cache, strict=True)
    compiled = torch.compile(model, dynamic=True)
    ids = tiny_llama.example_inputs(8)[0].cuda()
    timings = {}
    for name, fn in {"eager": model, "aotcache": loaded, "torch.compile": compiled}.items():
        with torch.no_grad():
            for _ in range(5):
                fn(ids)
            torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(100):
                fn(ids)
            torch.cuda.synchronize()
        timings[name] = (time.perf_counter() - started) / 100 * 1e6
    print("\nper call at 8 tokens (us): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    assert all(v > 0 for v in timings.values())


def test_verify_run_on_cuda(cuda_entry) -> None:
    cache, _ = cuda_entry
    done = run_cli("verify", SPEC, "--cache-dir", str(cache), "--run", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["run"]["ok"], done.stdout + done.stderr
