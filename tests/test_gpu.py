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
from _support import copy_cache, last_json, rewrite_manifest_as_built, run_cli, run_python

import aotcache
from aotcache.errors import IncompatibleEnvironment
from aotcache.key.factors import Factor
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
    assert {a.format for a in artifacts} == {"inductor"}
    assert all(a.device_types == ("cuda",) for a in artifacts)
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
    wrapper = CUDAGraphWrapper(lambda x: x * 2, CUDAGraphMode.FULL, backend=cudagraph.CUDAGraphs(torch.device("cuda")))
    with cudagraph.graph_context(CUDAGraphMode.FULL, BatchDescriptor(4), capturing=True):
        first = wrapper(torch.ones(4, device="cuda")).clone()
    with cudagraph.graph_context(CUDAGraphMode.FULL, BatchDescriptor(4)):
        second = wrapper(torch.full((4,), 3.0, device="cuda")).clone()
    assert first.tolist() == [2.0] * 4 and second.tolist() == [6.0] * 4
    assert wrapper.captures == 1 and wrapper.replays == 1 and wrapper.input_copies == 1


def _per_call_us(fn: Any, ids: torch.Tensor) -> float:
    with torch.no_grad():
        for _ in range(10):
            fn(ids)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(200):
            fn(ids)
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / 200 * 1e6


def test_per_call_latency_with_graphs_is_not_slower_than_eager(cuda_entry) -> None:
    cache, _ = cuda_entry
    model = _cuda_model()
    loaded = aotcache.load(model, {**CONFIG, "cudagraph_mode": "FULL"}, cache_dir=cache, strict=True)
    compiled = torch.compile(model, dynamic=True)
    ids = tiny_llama.example_inputs(8)[0].cuda()
    timings = {
        name: _per_call_us(fn, ids) for name, fn in {"eager": model, "aotcache": loaded, "compile": compiled}.items()
    }
    print("\nper call at 8 tokens (us): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    assert timings["aotcache"] <= 1.2 * timings["eager"], timings  # a whole-model graph: one launch


COLD_LOAD = """
import json, os, sys, time, torch, aotcache
import triton, triton.compiler.compiler as compiler
attempts = []
def refuse(*a, **k):
    attempts.append(str(a[0])[:100] if a else "?")
    raise RuntimeError("compiled at load")
triton.compile = compiler.compile = refuse
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
        diffs[size] = float((loaded(ids) - model(ids)).abs().max())
print(json.dumps({{"seconds": seconds, "diffs": diffs, "attempts": attempts}}))
"""


def test_a_cold_load_compiles_nothing(cuda_entry, tmp_path) -> None:
    """A fresh process with empty Inductor and Triton caches, no C++ compiler, and
    Triton's compiler made to raise: the kernels come from the entry (torch's static
    CUDA launcher) or the entry said loading needs a compiler."""
    cache, _ = cuda_entry
    env = {
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
        "TRITON_CACHE_DIR": str(tmp_path / "triton"),
        "CXX": "/nonexistent/cxx",
        "CC": "/nonexistent/cc",
    }
    done = run_python(COLD_LOAD.format(config=CONFIG, cache=str(cache), sizes=CHECK_SIZES), env=env)
    listing = json.loads(run_cli("inspect-cache", "--cache-dir", str(cache), "--json").stdout)["entries"][0]
    detail = json.loads(run_cli("inspect-cache", listing["key"], "--cache-dir", str(cache), "--json").stdout)
    artifacts = [a for a in detail["artifacts"].values() if a["format"] == "inductor"]
    kernels = sum(a.get("triton_kernels", 0) for a in artifacts)
    dynamic = sorted({k for a in artifacts for k in a.get("dynamic_launch", [])})
    # The tiny Llama's pointwise and reduction kernels are all ones torch's static
    # launcher takes: the entry must record them, and say that loading needs no compiler.
    assert kernels > 0, f"no Triton kernels recorded in the entry's artifacts: {artifacts}"
    assert dynamic == [] and "c compiler" not in listing["load_needs"], (dynamic, listing["load_needs"])
    assert done.returncode == 0, done.stderr[-3000:]
    report = last_json(done.stdout)
    assert report["attempts"] == [] and all(d <= 1e-3 for d in report["diffs"].values()), report


@pytest.mark.parametrize("mode", ["FULL", "PIECEWISE", "FULL_AND_PIECEWISE", "FULL_DECODE_ONLY"])
def test_every_capture_size_after_unrelated_allocations(mode: str, cuda_entry) -> None:
    """Graphs replay on their own memory: allocations and empty_cache between captures
    and calls change nothing."""
    cache, _ = cuda_entry
    sizes = [1, 2, 4, 8, 16, 24, 32]
    config = {**CONFIG, "cudagraph_mode": mode, "cudagraph_capture_sizes": sizes}
    model = _cuda_model()
    noise = [torch.randn(1 << 20, device="cuda") for _ in range(4)]
    loaded = aotcache.load(model, config, cache_dir=cache, strict=True)
    del noise
    torch.cuda.empty_cache()
    more = [torch.randn(1 << 18, device="cuda") for _ in range(8)]
    for size in [*sizes, 3, 5, 17]:
        ids = torch.randint(0, tiny_llama.VOCAB, (size,), device="cuda")
        with torch.no_grad():
            expected = model(ids)
        torch.testing.assert_close(loaded(ids).clone(), expected, atol=1e-3, rtol=1e-3, msg=f"{mode} size {size}")
    assert more


def test_copied_outputs_survive_the_next_call(cuda_entry) -> None:
    cache, _ = cuda_entry
    config = {**CONFIG, "cudagraph_mode": "PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8, 16]}
    model = _cuda_model()
    loaded = aotcache.load(model, config, cache_dir=cache, strict=True, cudagraph_copy_outputs=True)
    ids8, ids16 = (torch.randint(0, tiny_llama.VOCAB, (n,), device="cuda") for n in (8, 16))
    out8 = loaded(ids8)
    loaded(ids16)
    with torch.no_grad():
        torch.testing.assert_close(out8, model(ids8), atol=1e-3, rtol=1e-3)


def test_graph_memory_after_capturing_the_defaults_is_about_the_largest_size(cuda_entry) -> None:
    cache, _ = cuda_entry
    model = _cuda_model()

    def reserved_by(sizes: list[int] | None) -> int:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_reserved()
        config = {**CONFIG, "cudagraph_mode": "PIECEWISE"}
        if sizes is not None:
            config["cudagraph_capture_sizes"] = sizes
        loaded = aotcache.load(model, config, cache_dir=cache, strict=True)
        torch.cuda.synchronize()
        used = torch.cuda.memory_reserved() - before
        del loaded
        return used

    largest = reserved_by([1, 2, 4, 8, 64])  # the compile sizes are captured too, as vLLM requires
    defaults = reserved_by(None)  # 1, 2, 4, then multiples of 8 up to 64
    print(f"\ngraph memory: largest size only {largest / 2**20:.1f} MiB, defaults {defaults / 2**20:.1f} MiB")
    assert defaults <= 3 * max(largest, 2 << 20)


def test_a_bf16_model(tmp_path) -> None:
    def bf16() -> torch.nn.Module:
        return tiny_llama.build(2).cuda().to(torch.bfloat16)

    spec = aotcache.ModelSpec(model=bf16, example_inputs=lambda n: (tiny_llama.example_inputs(n)[0].cuda(),))
    aotcache.precompile(spec, CONFIG, cache_dir=tmp_path)
    model = bf16()
    loaded = aotcache.load(model, {**CONFIG, "cudagraph_mode": "FULL_AND_PIECEWISE"}, cache_dir=tmp_path, strict=True)
    for size in (1, 5, 16, 40):
        ids = tiny_llama.example_inputs(size)[0].cuda()
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).float(), model(ids).float(), atol=5e-2, rtol=5e-2)


def test_a_cpu_model_on_a_gpu_host_runs_without_graphs(tmp_path) -> None:
    aotcache.precompile(tiny_llama.spec, {**CONFIG, "max_num_batched_tokens": 16}, cache_dir=tmp_path)
    model = tiny_llama.build(2)
    config = {**CONFIG, "max_num_batched_tokens": 16, "cudagraph_mode": "FULL"}
    loaded = aotcache.load(model, config, cache_dir=tmp_path, strict=True)
    assert loaded.graph_runner is None
    for size in (3, 7):
        ids = tiny_llama.example_inputs(size)[0]
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids), model(ids), atol=1e-4, rtol=1e-4)


WARM_START = """
import time, torch
started = time.perf_counter()
from examples import tiny_llama
model = tiny_llama.build(2).cuda()
{body}
torch.cuda.synchronize()
print(time.perf_counter() - started)
"""


def test_load_time_next_to_torch_compile_warm_start(cuda_entry, tmp_path) -> None:
    cache, _ = cuda_entry
    compile_body = "compiled = torch.compile(model, dynamic=True)\ncompiled(tiny_llama.example_inputs(5)[0].cuda())"
    load_body = (
        f"import aotcache\nloaded = aotcache.load(model, {CONFIG!r}, cache_dir={str(cache)!r}, strict=True)\n"
        "loaded(tiny_llama.example_inputs(5)[0].cuda())"
    )
    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    run_python(WARM_START.format(body=compile_body), env=env)  # fills Inductor's cache: the warm start
    warm = float(run_python(WARM_START.format(body=compile_body), env=env).stdout.strip().splitlines()[-1])
    ours = float(run_python(WARM_START.format(body=load_body), env=env).stdout.strip().splitlines()[-1])
    print(f"\nto the first output after import torch: aotcache {ours:.2f} s, torch.compile warm {warm:.2f} s")
    assert ours < warm


def test_verify_run_on_cuda(cuda_entry) -> None:
    cache, _ = cuda_entry
    done = run_cli("verify", SPEC, "--cache-dir", str(cache), "--run", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["run"]["ok"], done.stdout + done.stderr
    assert report["run"]["cold"]["compiler"] == "hidden"


def test_an_entry_is_for_one_device_index(cuda_entry, tmp_path) -> None:
    """Inductor's CUDA code names the device it was compiled for: the index is a key
    factor, and a host without that device is told so."""
    cache, result = cuda_entry
    assert ("cuda.device_index", 0) in {(f.name, f.value) for f in result.manifest.lookup}
    copy = copy_cache(cache, tmp_path / "c")
    entry = copy / "entries" / result.entry_id

    def other_index(manifest: Any) -> None:
        manifest.lookup = [Factor(f.name, 7) if f.name == "cuda.device_index" else f for f in manifest.lookup]

    rewrite_manifest_as_built(entry, other_index)
    with pytest.raises(IncompatibleEnvironment, match=r"cuda\.device_index"):
        aotcache.load(_cuda_model(), CONFIG, cache_dir=copy, strict=True)
