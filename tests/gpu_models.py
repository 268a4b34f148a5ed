"""The models of the GPU suite (tests/test_gpu.py) and of the GPU benchmark
(benchmarks/bench_gpu.py), and what their fresh processes run: a load with CUDA graphs
compared with eager at every size, the CUDA memory a set of capture sizes takes, and
per-call latency next to eager and torch.compile. Each child function returns what it
measured as plain JSON-able values; the caller asserts.

"bf16" is a model of useful size: tiny_llama's decoder at 4 layers, hidden 512, 8 heads
and Llama 2's 32000-token vocabulary, in bf16."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from examples import tiny_llama

MODES = ("FULL", "PIECEWISE", "FULL_AND_PIECEWISE", "FULL_DECODE_ONLY")
# Capture sizes up to 32 (below max_num_batched_tokens, so larger batches run without
# graphs) holding every compile size of tiny_llama.CONFIG, as the config requires.
CAPTURE_SIZES = [1, 2, 4, 8, 16, 24, 32]
# Every capture size, the sizes between them (padded to the next), and sizes above the
# largest (no graph): 33 crosses nothing, 64 is the largest batch.
CHECK_SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 64]
LATENCY_TOKENS = (1, 8, 64)
LATENCY_CAPTURE_SIZES = [1, 2, 4, 8, 16, 32, 64]


@dataclass(frozen=True)
class GpuModel:
    build: Callable[[torch.device], torch.nn.Module]
    inputs: Callable[[int, torch.device], tuple[torch.Tensor]]
    config: dict[str, Any]
    tolerance: dict[str, float]  # torch.allclose's atol and rtol against eager


def _bf16_model(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = tiny_llama.TinyLlama(layers=4, vocab=32000, hidden=512, heads=8).eval()
    return model.to(device=device, dtype=torch.bfloat16)


def _bf16_inputs(num_tokens: int, device: torch.device) -> tuple[torch.Tensor]:
    generator = torch.Generator().manual_seed(num_tokens)
    return (torch.randint(0, 32000, (num_tokens,), generator=generator).to(device),)


MODELS: dict[str, GpuModel] = {
    "tiny_llama": GpuModel(
        build=lambda device: tiny_llama.build(2).to(device),
        inputs=lambda n, device: (tiny_llama.example_inputs(n)[0].to(device),),
        config=dict(tiny_llama.CONFIG),
        tolerance={"atol": 1e-3, "rtol": 1e-3},
    ),
    # Inductor cuts the graph at the attention op itself (use_inductor_graph_partition):
    # with PIECEWISE, one CUDA graph per Inductor partition (the partition wrapper).
    "tiny_partition": GpuModel(
        build=lambda device: tiny_llama.build(2).to(device),
        inputs=lambda n, device: (tiny_llama.example_inputs(n)[0].to(device),),
        config={
            "compile_sizes": [],
            "compile_ranges_split_points": [],
            "max_num_batched_tokens": 64,
            "splitting_ops": ["tinyllama::attention"],
            "use_inductor_graph_partition": True,
        },
        tolerance={"atol": 1e-3, "rtol": 1e-3},
    ),
    # One dynamic range and no compile size: any capture sizes may be chosen. bf16 logits
    # here are within ±3; bf16 eager itself is 0.02 from fp32 eager.
    "bf16": GpuModel(
        build=_bf16_model,
        inputs=_bf16_inputs,
        config={
            "compile_sizes": [],
            "compile_ranges_split_points": [],
            "max_num_batched_tokens": 64,
            "splitting_ops": ["tinyllama::attention"],
        },
        tolerance={"atol": 5e-2, "rtol": 5e-2},
    ),
}


def spec(name: str, device: str = "cuda") -> Any:
    """The aotcache.ModelSpec of a model here, on `device`."""
    import aotcache

    model, where = MODELS[name], torch.device(device)
    return aotcache.ModelSpec(
        model=lambda: model.build(where),
        example_inputs=lambda n: model.inputs(n, where),
        config=model.config,
        dynamic_arg_dims={"input_ids": 0},
    )


def _replays(loaded: Any) -> int:
    return sum(w.replays for w in loaded.graph_runner.wrappers())


def graphs_against_eager(
    name: str, cache: str, mode: str, capture_sizes: list[int], sizes: list[int], device: str = "cuda"
) -> dict[str, Any]:
    """Load with CUDA graphs in `mode` and call at every size, as a mixed batch and as a
    uniform decode batch: per call, the largest difference from eager, whether it is
    within the model's tolerance, how many graphs replayed and the output's device."""
    import aotcache

    model_def, where = MODELS[name], torch.device(device)
    model = model_def.build(where)
    config = {**model_def.config, "cudagraph_mode": mode, "cudagraph_capture_sizes": capture_sizes}
    started = time.perf_counter()
    loaded = aotcache.load(model, config, cache_dir=cache, strict=True, capture_cudagraphs=True)
    torch.cuda.synchronize(where)
    load_seconds = time.perf_counter() - started
    if loaded.graph_runner is None:
        return {"load_seconds": load_seconds, "graphs": 0, "captures": 0, "calls": []}
    wrappers = loaded.graph_runner.wrappers()
    captures = sum(w.captures for w in wrappers)
    calls, largest_logit = [], 0.0
    for size in sizes:
        inputs = model_def.inputs(size, where)
        with torch.no_grad():
            expected = model(*inputs).float()
        largest_logit = max(largest_logit, float(expected.abs().max()))
        for decode in (False, True):
            before = _replays(loaded)
            got = loaded.run_batch(*inputs, uniform_decode=decode)
            device_of = str(got.device)
            got = got.float()  # a copy: the graph's output is overwritten by the next call
            calls.append(
                {
                    "size": size,
                    "decode": decode,
                    "max_abs": float((got - expected).abs().max()),
                    "close": bool(torch.allclose(got, expected, **model_def.tolerance)),
                    "replayed": _replays(loaded) - before,
                    "device": device_of,
                }
            )
    return {
        "load_seconds": load_seconds,
        "graphs": sum(len(w.graphs) for w in wrappers),
        "captures": captures,
        "captures_after_calls": sum(w.captures for w in wrappers),
        "max_abs_logit": largest_logit,
        "calls": calls,
    }


def graph_memory(name: str, cache: str, mode: str, capture_sizes: list[int]) -> dict[str, int]:
    """The CUDA memory that capturing `capture_sizes` in `mode` adds: allocated and
    reserved (after empty_cache: what stays is what the graphs hold), and the runner's
    held_bytes. Measured after a first load that captured size 1 alone, which pays what
    only a process's first capture pays (its pool's first segment, the capture stream's
    cuBLAS workspace); `output_bytes` is one output at the largest size."""
    import aotcache

    model_def, device = MODELS[name], torch.device("cuda")
    model = model_def.build(device)
    config = {**model_def.config, "cudagraph_mode": mode}
    first = aotcache.load(model, {**config, "cudagraph_capture_sizes": [1]}, cache_dir=cache, strict=True)
    first(*model_def.inputs(1, device))

    def settled() -> tuple[int, int]:
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        return torch.cuda.memory_allocated(), torch.cuda.memory_reserved()

    allocated, reserved = settled()
    loaded = aotcache.load(model, {**config, "cudagraph_capture_sizes": capture_sizes}, cache_dir=cache, strict=True)
    after_allocated, after_reserved = settled()
    largest = max(capture_sizes)
    with torch.no_grad():
        out = model(*model_def.inputs(largest, device))
    return {
        "allocated": after_allocated - allocated,
        "reserved": after_reserved - reserved,
        "held_bytes": loaded.graph_runner.held_bytes(),
        "graphs": sum(len(w.graphs) for w in loaded.graph_runner.wrappers()),
        "output_bytes": out.numel() * out.element_size(),
        "first_graphs": sum(len(w.graphs) for w in first.graph_runner.wrappers()),
    }


def per_call_us(
    candidates: dict[str, Callable[[], Any]], rounds: int = 7, calls: int = 100, warmup: int = 20
) -> dict[str, float]:
    """Median µs per call of each candidate: `calls` calls and one synchronize, `rounds`
    times, the candidates interleaved so that drift hits them alike."""
    with torch.no_grad():
        for fn in candidates.values():
            for _ in range(warmup):
                fn()
        torch.cuda.synchronize()
        samples: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(rounds):
            for name, fn in candidates.items():
                torch.cuda.synchronize()
                started = time.perf_counter()
                for _ in range(calls):
                    fn()
                torch.cuda.synchronize()
                samples[name].append((time.perf_counter() - started) / calls * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def latency(
    name: str, cache: str, tokens: tuple[int, ...] = LATENCY_TOKENS, rounds: int = 7, device: str = "cuda"
) -> dict[str, Any]:
    """Per-call µs at each token count: eager, torch.compile(mode="reduce-overhead"),
    aotcache without graphs, with PIECEWISE graphs and with FULL graphs (and each
    aotcache variant's largest difference from eager)."""
    import aotcache

    model_def, where = MODELS[name], torch.device(device)
    model = model_def.build(where)
    reduce_overhead = torch.compile(model, mode="reduce-overhead")
    config = {**model_def.config, "cudagraph_capture_sizes": LATENCY_CAPTURE_SIZES}
    variants = {
        "aotcache, no graphs": aotcache.load(model, config, cache_dir=cache, strict=True, capture_cudagraphs=False),
        "aotcache PIECEWISE": aotcache.load(
            model, {**config, "cudagraph_mode": "PIECEWISE"}, cache_dir=cache, strict=True
        ),
        "aotcache FULL": aotcache.load(model, {**config, "cudagraph_mode": "FULL"}, cache_dir=cache, strict=True),
    }

    def compiled(ids: torch.Tensor) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        return reduce_overhead(ids)

    found: dict[str, Any] = {"us": {}, "max_abs": {}}
    for count in tokens:
        (ids,) = model_def.inputs(count, where)
        with torch.no_grad():
            expected = model(ids).float()
        found["max_abs"][str(count)] = {
            label: float((loaded(ids).float() - expected).abs().max()) for label, loaded in variants.items()
        }
        candidates: dict[str, Callable[[], Any]] = {
            "eager": lambda ids=ids: model(ids),
            "torch.compile reduce-overhead": lambda ids=ids: compiled(ids),
            **{label: (lambda ids=ids, loaded=loaded: loaded(ids)) for label, loaded in variants.items()},
        }
        found["us"][str(count)] = per_call_us(candidates, rounds=rounds)
    found["graph_modes"] = {label: loaded.graph_runner is not None for label, loaded in variants.items()}
    return found


def latency_table(us: dict[str, dict[str, float]]) -> str:
    """A markdown table of `latency`'s "us": one row per token count."""
    names = list(next(iter(us.values())))
    lines = ["| tokens | " + " | ".join(names) + " |", "| ---: |" + " ---: |" * len(names)]
    for count, row in us.items():
        lines.append(f"| {count} | " + " | ".join(f"{row[n]:.0f} µs" for n in names) + " |")
    return "\n".join(lines)
