"""The GPU path on a real device (`pytest -m gpu`, `make test-gpu`, `make gpu-check`):
precompile on `cuda` with Inductor (Triton), load in a fresh process, compare with eager
at every compile size and both ends of every range; CUDA graphs in every mode, loaded in
a fresh process and compared with eager at every capture size and the padded sizes
between them, for tiny_llama and for a model of useful size (4 layers, hidden 512, bf16:
tests/gpu_models.py); the CUDA memory of capturing several sizes against the largest
alone; per-call latency next to eager and torch.compile's reduce-overhead; an entry
built on a second device. Every test is skipped, with its reason, where no CUDA device
is present; the same runner logic is proved on the CPU by tests/test_cudagraph.py's
emulation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gpu_models
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


@pytest.fixture(scope="module")
def bf16_entry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model of useful size (4 layers, hidden 512, bf16), one dynamic range."""
    cache = tmp_path_factory.mktemp("bf16")
    aotcache.precompile(gpu_models.spec("bf16"), gpu_models.MODELS["bf16"].config, cache_dir=cache)
    return cache


def _child(function: str, *args: Any, timeout: float = 300) -> Any:
    """Run gpu_models.`function`(*args) in a fresh interpreter; its JSON result."""
    call = f"gpu_models.{function}(*{args!r})"
    code = f"import json, sys\nsys.path.insert(0, 'tests')\nimport gpu_models\nprint(json.dumps({call}))"
    done = run_python(code, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return last_json(done.stdout)


def _entry_of(model: str, request: pytest.FixtureRequest) -> str:
    return str(
        request.getfixturevalue("cuda_entry")[0] if model == "tiny_llama" else request.getfixturevalue("bf16_entry")
    )


def _check_graph_calls(report: dict[str, Any], mode: str, capture_sizes: list[int]) -> None:
    """Every graph captured once, at load; every call within the model's tolerance of
    eager; graphs replayed exactly where the mode and the size say they serve."""
    assert report["graphs"] > 0 and report["captures"] == report["graphs"], report
    assert report["captures_after_calls"] == report["captures"], "a graph was captured after the load"
    wrong = [c for c in report["calls"] if not c["close"]]
    assert not wrong, f"{len(wrong)} calls differ from eager (largest logit {report['max_abs_logit']:.2f}): {wrong}"
    for call in report["calls"]:
        served = call["size"] <= max(capture_sizes) and (mode != "FULL_DECODE_ONLY" or call["decode"])
        assert (call["replayed"] > 0) == served, call


def test_cuda_pieces_are_stored_in_the_inductor_format(cuda_entry) -> None:
    _, result = cuda_entry
    artifacts = result.manifest.artifacts.values()
    assert {a.format for a in artifacts} == {"inductor"}
    assert all(a.device_types == ("cuda",) for a in artifacts)
    assert result.manifest.recorded["device_type"] == "cuda"
    names = {f.name for f in result.manifest.lookup}
    assert {"cuda.capability", "cuda.version", "triton.version"} <= names and "cuda.device_name" not in names
    assert result.manifest.recorded["cuda_device_name"] == torch.cuda.get_device_name(0)


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


@pytest.mark.parametrize("mode", gpu_models.MODES)
@pytest.mark.parametrize("model", ["tiny_llama", "bf16"])
def test_a_fresh_process_with_graphs_matches_eager_at_every_size(model: str, mode: str, request) -> None:
    """A fresh process loads with CUDA graphs (captured at load) and calls every capture
    size, the padded sizes between them and sizes above the largest (no graph), as mixed
    and as uniform decode batches; tiny_llama in fp32, the hidden-512 model in bf16."""
    sizes = gpu_models.CAPTURE_SIZES
    report = _child("graphs_against_eager", model, _entry_of(model, request), mode, sizes, gpu_models.CHECK_SIZES)
    worst = max(c["max_abs"] for c in report["calls"])
    graphs, seconds = report["graphs"], report["load_seconds"]
    print(f"\nmeasured: {model} {mode}: load with {graphs} graphs {seconds:.2f} s, max |diff| {worst:.2e}")
    _check_graph_calls(report, mode, sizes)


def test_a_fresh_process_captures_a_graph_per_inductor_partition(tmp_path) -> None:
    """use_inductor_graph_partition with PIECEWISE: Inductor cuts the graph at the
    attention op after its fusions; each partition it hands to the partition wrapper is
    captured as its own graph at load, and every size matches eager."""
    result = aotcache.precompile(gpu_models.spec("tiny_partition"), cache_dir=tmp_path)
    recorded = [a.partitions for a in result.manifest.artifacts.values()]
    assert recorded and all(count and count >= 2 for count in recorded), recorded  # 2 layers: 3 partitions
    sizes = gpu_models.CAPTURE_SIZES
    report = _child("graphs_against_eager", "tiny_partition", str(tmp_path), "PIECEWISE", sizes, gpu_models.CHECK_SIZES)
    print(f"\nmeasured: partition graphs: {report['graphs']} graphs, load {report['load_seconds']:.2f} s")
    _check_graph_calls(report, "PIECEWISE", sizes)


@pytest.mark.parametrize("mode", ["FULL", "PIECEWISE"])
def test_capturing_every_size_takes_about_the_memory_of_the_largest_alone(mode: str, bf16_entry) -> None:
    """Graphs share one pool: capturing 1, 2, 4, 8 and 16 takes at most 1.5 times the CUDA
    memory of capturing 16 alone (allocated, reserved, and what the runner holds), each
    measured in a fresh process. The floor is one output at 16 tokens (16 × 32000 bf16
    logits, 1 MB; one allocator segment, 2 MiB, for reserved): graphs holding an output
    per size would take about twice that."""
    every = _child("graph_memory", "bf16", str(bf16_entry), mode, [1, 2, 4, 8, 16])
    largest = _child("graph_memory", "bf16", str(bf16_entry), mode, [16])
    mib = {k: f"{every[k] / 2**20:.2f} / {largest[k] / 2**20:.2f}" for k in ("allocated", "reserved", "held_bytes")}
    print(f"\nmeasured: {mode} graph memory, MiB, sizes 1-16 / 16 alone: {mib}")
    assert every["graphs"] > largest["graphs"] > 0, (every, largest)
    floor = largest["output_bytes"]
    for what, least in (("allocated", floor), ("held_bytes", floor), ("reserved", max(floor, 2 << 20))):
        assert every[what] <= 1.5 * max(largest[what], least), (what, every, largest)


def test_latency_with_graphs_next_to_eager_and_reduce_overhead(bf16_entry) -> None:
    """Per-call latency of the hidden-512 bf16 model at 1, 8 and 64 tokens (medians of 7
    rounds of 100 calls, synchronized): aotcache with graphs is not slower than eager
    (10 % margin) and within 1.2 times torch.compile's reduce-overhead with FULL graphs."""
    report = _child("latency", "bf16", str(bf16_entry), timeout=600)
    print("\nmeasured: per call, bf16 4 layers hidden 512 (medians):\n" + gpu_models.latency_table(report["us"]))
    assert report["graph_modes"] == {"aotcache, no graphs": False, "aotcache PIECEWISE": True, "aotcache FULL": True}
    for count, diffs in report["max_abs"].items():
        assert all(d <= 0.2 for d in diffs.values()), (count, diffs)  # bf16 logits within ±3
    for count, row in report["us"].items():
        for graphs in ("aotcache FULL", "aotcache PIECEWISE"):
            assert row[graphs] <= 1.1 * row["eager"], (count, graphs, row)
        assert row["aotcache FULL"] <= 1.2 * row["torch.compile reduce-overhead"], (count, row)


@pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason=f"needs a second CUDA device (this machine has {torch.cuda.device_count()})"
)
def test_an_entry_built_on_a_second_device_loads_with_graphs_there(tmp_path) -> None:
    """Built on cuda:1 (the index is a key factor), loaded in a fresh process on cuda:1,
    graphs captured and replayed there, outputs on cuda:1 and equal to eager's."""
    result = aotcache.precompile(gpu_models.spec("tiny_llama", "cuda:1"), CONFIG, cache_dir=tmp_path)
    assert ("cuda.device_index", 1) in {(f.name, f.value) for f in result.manifest.lookup}
    mode, sizes = "FULL_AND_PIECEWISE", gpu_models.CAPTURE_SIZES
    report = _child("graphs_against_eager", "tiny_llama", str(tmp_path), mode, sizes, gpu_models.CHECK_SIZES, "cuda:1")
    assert {c["device"] for c in report["calls"]} == {"cuda:1"}
    _check_graph_calls(report, mode, sizes)
