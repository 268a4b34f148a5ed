"""From serving back to CI: replicas record what they served and why they missed,
`aotcache stats` sums it, `precompile --sizes-from` compiles the hot sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _support import TINY_CONFIG, copy_cache, run_cli, run_python

import aotcache
from aotcache.stats.records import EntryStats, ProcessStats, read_dir
from aotcache.stats.summary import summarize
from examples import tiny_llama

SERVE = """
import aotcache, torch
from examples import tiny_llama
model = tiny_llama.build(2)
config = {config!r}
loaded = aotcache.load(model, config, cache_dir={cache!r}, strict={strict!r})
if loaded is not None:
    for size in {sizes!r}:
        ids = tiny_llama.example_inputs(size)[0]
        with torch.no_grad():
            assert torch.allclose(loaded(ids), model(ids), atol=1e-4)
"""


def _serve(cache: Path, stats: Path, sizes: list[int], config: dict | None = None, strict: bool = True) -> None:
    code = SERVE.format(config=config or TINY_CONFIG, cache=str(cache), sizes=sizes, strict=strict)
    done = run_python(code, env={"AOTCACHE_STATS_DIR": str(stats)})
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def served(tiny_entry, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two replicas serve 3, 3, 3, 5, 7; a third asks for another config and misses."""
    stats = tmp_path_factory.mktemp("stats")
    for _ in range(2):
        _serve(tiny_entry.cache_dir, stats, [3, 3, 3, 5, 7])
    return tiny_entry.cache_dir, stats


def _stats(stats: Path, *args: str) -> dict:
    done = run_cli("stats", "--json", *args, env={"AOTCACHE_STATS_DIR": str(stats)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_two_replicas_calls_are_summed_by_size_with_their_hit_rate(served, tiny_entry) -> None:
    _, stats = served
    assert len(list(stats.glob("*.json"))) == 2  # one file per process
    summary = _stats(stats)
    assert summary["processes"] == 2
    assert summary["histogram"] == {"3": 6, "5": 2, "7": 2}
    (entry,) = summary["entries"]
    assert entry["entry_id"] == tiny_entry.entry_id and entry["loads"] == 2 and entry["hit_rate"] == 1.0
    assert [m["hit_rate"] for m in summary["models"]] == [1.0]
    assert entry["served_by"]["3"].startswith("range ")  # 3 is no compile size: a range serves it
    assert [h["size"] for h in summary["hot_range_sizes"]] == [3, 5, 7]
    assert summary["load_seconds"]["p50"] > 0


def test_a_miss_for_another_config_is_reported_with_its_factor(served, tmp_path) -> None:
    cache, stats = served
    mine = tmp_path / "stats"
    for path in stats.glob("*.json"):
        (mine / path.name).parent.mkdir(exist_ok=True)
        (mine / path.name).write_bytes(path.read_bytes())
    _serve(cache, mine, [3], config={**TINY_CONFIG, "max_num_batched_tokens": 16}, strict=False)
    summary = _stats(mine)
    (miss,) = summary["misses"]
    assert miss["reason"] == "not-found" and miss["count"] == 1 and miss["processes"] == 1
    factors = {d["name"]: (d["old"], d["new"]) for d in miss["differences"]}
    assert any("max_num_batched_tokens" in name for name in factors), factors
    assert summary["models"][0]["hit_rate"] == pytest.approx(2 / 3)
    text = run_cli("stats", "--stats-dir", str(mine), env={"COLUMNS": "80"})  # a terminal's width
    flat = " ".join(text.stdout.split())
    assert (
        text.returncode == 0
        and "miss (not-found)" in flat
        and "max_num_batched_tokens: 32 in the entry, 16 here" in flat
    )
    assert max(len(line) for line in text.stdout.splitlines()) <= 80, text.stdout


def test_precompile_sizes_from_adds_the_hot_sizes_and_compiles_only_those(served, tiny_entry, tmp_path) -> None:
    _, stats = served
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    done = run_cli(
        "precompile", "examples/tiny_llama.py:spec", "--cache-dir", str(cache), "--compile-sizes", "1,2,4",
        "--split-points", "8", "--max-num-batched-tokens", "32", "--sizes-from", str(stats), "--max-new-sizes", "2",
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["sizes_from"]["added"] == [3, 5]
    assert summary["sizes_from"]["share"] == pytest.approx(8 / 10)
    # a unit is one unique piece for one size or range: the two new sizes' units, nothing else
    assert summary["units_compiled"] == 2 * summary["pieces_unique"] and summary["units_reused"] > 0
    text = run_cli(
        "precompile", "examples/tiny_llama.py:spec", "--cache-dir", str(cache), "--compile-sizes", "1,2,4",
        "--split-points", "8", "--max-num-batched-tokens", "32", "--sizes-from", str(stats), "--max-new-sizes", "2",
    )  # fmt: skip
    assert "compile sizes added from" in text.stdout and "3, 5 (80% of the 10 recorded call(s)" in text.stdout


def test_recording_never_fails_a_load(tiny_entry, tmp_path, caplog) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the stats dir should be")
    from aotcache.stats import recorder

    loaded = aotcache.load(
        tiny_llama.build(2), TINY_CONFIG, cache_dir=tiny_entry.cache_dir, strict=True, stats_dir=blocked
    )
    loaded(tiny_llama.example_inputs(3)[0])
    recorder.recorder_for(blocked).flush()
    recorder.recorder_for(blocked).flush()
    assert sum("could not write" in r.message for r in caplog.records) == 1


def test_a_call_costs_one_dict_increment_and_sizes_stay_bounded(tiny_entry, tmp_path) -> None:
    loaded = aotcache.load(
        tiny_llama.build(2), TINY_CONFIG, cache_dir=tiny_entry.cache_dir, strict=True, stats_dir=tmp_path
    )
    for size in (1, 3, 3, 32):
        loaded(tiny_llama.example_inputs(size)[0])
    with pytest.raises(aotcache.DispatchError):
        loaded(tiny_llama.example_inputs(33)[0])  # refused: not counted
    assert loaded._call_counts == {1: 1, 3: 2, 32: 1}


def test_a_hostile_stats_file_is_skipped_with_a_warning(tmp_path) -> None:
    good = ProcessStats("h-1-1.json", "h", 1, "t", "t", {"e": EntryStats("e", "M", "k", 1, [0.5], {3: 2})})
    (tmp_path / good.name).write_bytes(good.to_bytes())
    (tmp_path / "bad-1-1.json").write_text("{not json")
    (tmp_path / "big-1-1.json").write_bytes(b" " * (5 << 20))
    wrong = json.loads(good.to_bytes())
    wrong["entries"][0]["calls"] = {"3": "__import__('os').system('x')"}
    (tmp_path / "wrong-1-1.json").write_text(json.dumps(wrong))
    records, warnings = read_dir(tmp_path)
    assert [r.name for r in records] == ["h-1-1.json"] and len(warnings) == 3
    assert summarize(records).histogram == {3: 2}


def test_the_same_process_file_from_two_sources_counts_once() -> None:
    old = ProcessStats("h-1-1.json", "h", 1, "t0", "t1", {"e": EntryStats("e", "M", "k", 1, [], {3: 1})})
    new = ProcessStats("h-1-1.json", "h", 1, "t0", "t2", {"e": EntryStats("e", "M", "k", 1, [], {3: 5})})
    assert summarize([old, new]).histogram == {3: 5}
    assert torch.__version__  # (the records above need no torch; the package does)
