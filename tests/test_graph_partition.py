"""use_inductor_graph_partition: the graph is not cut before Inductor; Inductor compiles
it whole, one unit per size or range, with the splitting ops as the points it
partitions at (custom_should_partition_ops), so that its fusions cross them. On the CPU
Inductor makes no partition (every CPU op runs outside CUDA-graph partitions): the
splitting op is a fallback call inside the one compiled wrapper.

One module fixture precompiles the 2-layer tiny Llama with it through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _support import LOAD_AND_COMPARE, CliBuild, cli_precompile, last_json, run_cli, run_python

from aotcache.configuration import from_dict
from aotcache.errors import ConfigError

CONFIG = {
    "compile_sizes": [4],
    "compile_ranges_split_points": [],
    "max_num_batched_tokens": 64,
    "splitting_ops": ["tinyllama::attention"],
    "use_inductor_graph_partition": True,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> CliBuild:
    return cli_precompile("examples/tiny_llama.py:spec", CONFIG, tmp_path_factory.mktemp("graph-partition") / "cache")


def test_inductor_compiles_the_whole_graph_once_per_size_or_range(built: CliBuild) -> None:
    """One piece: the graph is not cut; the range [1, 64], size 1 (compiled apart: the
    range's guard is 2 <= s0) and size 4 are one unit each, and no unit has an Inductor
    partition on the CPU."""
    summary = built.summary
    assert summary["pieces_total"] == 1 and summary["pieces_unique"] == 1
    assert summary["units"] == 3 and summary["units_compiled"] == 3
    assert summary["inductor_partitions"] == [0, 0, 0]
    entry = Path(summary["path"])
    wrappers = [entry / a["wrapper"] for a in json.loads((entry / "manifest.json").read_text())["artifacts"].values()]
    for wrapper in wrappers:  # the splitting op runs inside the compiled code, twice (2 layers)
        assert wrapper.read_text().count("= torch.ops.tinyllama.attention.default(") == 2


def test_a_fresh_process_loads_it_equal_to_eager(built: CliBuild) -> None:
    code = LOAD_AND_COMPARE.format(layers=2, config=CONFIG, cache=str(built.cache), sizes=[1, 3, 4, 64], too_big=65)
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    assert report["compile_side"] == []
    units = {size: tuple(unit) for size, (_, unit) in report["results"].items()}
    assert units == {"1": (1, 1), "3": (1, 64), "4": (4, 4), "64": (1, 64)}
    assert max(worst for worst, _ in report["results"].values()) < 1e-5


def test_the_same_model_split_before_inductor_is_a_miss_naming_the_field(built: CliBuild) -> None:
    fx_split = {**CONFIG, "use_inductor_graph_partition": False}
    result = run_cli(
        "verify", "examples/tiny_llama.py:spec", "-O", json.dumps(fx_split), "--cache-dir", str(built.cache), "--json"
    )
    assert result.returncode != 0
    report = json.loads(result.stdout)
    differences = [d for check in report["checks"] for d in check["differences"]]
    assert [d["name"] for d in differences] == ["config.use_inductor_graph_partition"]


def test_partitions_with_piecewise_graphs_need_a_torch_with_partition_wrappers(monkeypatch) -> None:
    """Accepted where Inductor has set_customized_partition_wrappers (torch 2.9 on: the
    whole supported window); a ConfigError naming the torch elsewhere."""
    from importlib import metadata

    assert from_dict({**CONFIG, "cudagraph_mode": "PIECEWISE"}).use_inductor_graph_partition
    version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "2.8.0" if name == "torch" else version(name))
    with pytest.raises(ConfigError, match=r"use_inductor_graph_partition.*on torch 2\.8\.0, whose Inductor has no"):
        from_dict({**CONFIG, "cudagraph_mode": "PIECEWISE"})


def test_partitions_without_inductor_are_refused() -> None:
    with pytest.raises(ConfigError, match="use_inductor_graph_partition"):
        from_dict({**CONFIG, "backend": "eager"})
    with pytest.raises(ConfigError, match="use_inductor_graph_partition"):
        from_dict({"use_inductor_graph_partition": 1})


# -- CUDA graphs per Inductor partition (the seed's partition wrapper) ------------------------------


def _partition(scale: float) -> Any:
    """A partition in Inductor's calling convention: one list, which it clears."""

    def run(args: list[Any]) -> tuple[torch.Tensor]:
        x, w = args
        args.clear()
        return (x * scale + w,)

    return run


def test_inductors_own_hook_hands_each_partition_to_a_slot_with_vllms_options() -> None:
    """Driven as Inductor's post_compile drives it: the registered wrapper is called with
    each partition and its CUDAGraphWrapperMetadata; the hook is put back after the load.
    Under the emulation every slot's graph shares the device's pool, only the first logs
    its captures, only the last hands its capture-time output back over pool memory; the
    partitions replay new data right."""
    import torch._inductor.utils as inductor_utils

    from aotcache.errors import CorruptEntry
    from aotcache.formats import torch_internals
    from aotcache.formats.partitions import PartitionCollector
    from aotcache.modes import CUDAGraphMode
    from aotcache.serve import cudagraph
    from aotcache.serve.cudagraph.backends import shared_graphs
    from aotcache.serve.cudagraph.runner import install_partition_graphs
    from aotcache.serve.cudagraph.wrapper import GraphMemory

    collector = PartitionCollector("unit 0")
    with torch_internals.partition_wrapper(collector):
        hook = inductor_utils._unstable_customized_partition_wrapper.wrapper
        wrapped = [hook(_partition(s), inductor_utils.CUDAGraphWrapperMetadata(3, i)) for i, s in enumerate((2, 3, 4))]
    assert inductor_utils._unstable_customized_partition_wrapper.wrapper is None  # put back
    slots = collector.check(3)
    assert wrapped == slots and [s.last for s in slots] == [False, False, True]
    with pytest.raises(CorruptEntry, match="records 4 graph partition"):
        collector.check(4)

    backend = cudagraph.EmulatedGraphs()
    shared = shared_graphs(backend)
    options = {"backend": backend, "pool": shared.pool, "stream": shared.stream, "memory": GraphMemory()}
    wrappers = install_partition_graphs(slots, {**options, "num_warmups": 1, "copy_inputs": False})
    assert [w.log_captures for w in wrappers] == [True, False, False]
    assert [w.weak_ref_output for w in wrappers] == [False, False, True]
    assert {id(w.pool) for w in wrappers} == {id(shared.pool)}
    weight = torch.ones(4)
    options["memory"].weights.add(weight.untyped_storage().data_ptr())

    def forward(x: torch.Tensor) -> torch.Tensor:  # as Inductor's call runs its partitions
        (y,) = slots[0]([x, weight])
        (y,) = slots[1]([y.clone(), weight])  # the op between partitions makes a new tensor
        (y,) = slots[2]([y.clone(), weight])
        return y

    key = cudagraph.BatchDescriptor(4)
    with backend.device_scope(), cudagraph.graph_context(CUDAGraphMode.PIECEWISE, key, capturing=True):
        for _ in range(2):  # one warm-up, then the capture
            forward(torch.zeros(4))
    for value in (1.0, 5.0):
        with backend.device_scope(), cudagraph.graph_context(CUDAGraphMode.PIECEWISE, key):
            got = forward(torch.full((4,), value)).clone()
        assert got.tolist() == [((value * 2 + 1) * 3 + 1) * 4 + 1] * 4
    assert [w.captures for w in wrappers] == [1, 1, 1] and [w.replays for w in wrappers] == [2, 2, 2]


def test_an_emulated_load_with_partition_graphs_matches_eager_at_every_size(built: CliBuild) -> None:
    """PIECEWISE graphs with use_inductor_graph_partition load on the emulation and match
    eager at 1-16, padded sizes included. (The CPU has no Inductor partition, so the
    graphs themselves run on a GPU only: tests/test_gpu.py.)"""
    import aotcache
    from aotcache.serve import cudagraph
    from examples import tiny_llama

    model = tiny_llama.build(2)
    config = {**CONFIG, "cudagraph_mode": "PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8, 16]}
    with cudagraph.use_graph_backend(cudagraph.EmulatedGraphs()):
        loaded = aotcache.load(model, config, cache_dir=built.cache, strict=True)
    assert loaded.graph_runner is not None and loaded.partition_slots == []
    for size in range(1, 17):
        ids = tiny_llama.example_inputs(size)[0]
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).clone(), model(ids), atol=1e-5, rtol=1e-5)
