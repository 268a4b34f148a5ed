"""use_inductor_graph_partition: the graph is not cut before Inductor; Inductor compiles
it whole, one unit per size or range, with the splitting ops as the points it
partitions at (custom_should_partition_ops), so that its fusions cross them. On the CPU
Inductor makes no partition (every CPU op runs outside CUDA-graph partitions): the
splitting op is a fallback call inside the one compiled wrapper.

One module fixture precompiles the 2-layer tiny Llama with it through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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


def test_partitions_with_piecewise_cuda_graphs_or_without_inductor_are_refused() -> None:
    with pytest.raises(ConfigError, match="use_inductor_graph_partition"):
        from_dict({**CONFIG, "cudagraph_mode": "PIECEWISE"})
    with pytest.raises(ConfigError, match="use_inductor_graph_partition"):
        from_dict({**CONFIG, "backend": "eager"})
    with pytest.raises(ConfigError, match="use_inductor_graph_partition"):
        from_dict({"use_inductor_graph_partition": 1})
