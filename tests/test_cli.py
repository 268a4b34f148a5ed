"""The CLI, through typer's runner and as a real subprocess, on real entries."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from _support import TINY_CONFIG, TINY_UNITS, run_cli
from typer.testing import CliRunner

import aotcache
from aotcache.cli.app import app
from examples import tiny_llama

runner = CliRunner()
TARGET = "examples/tiny_llama.py:spec"
TINY_FLAGS = ["--compile-sizes", "1,2,4", "--split-points", "8", "--max-num-batched-tokens", "32"]


def invoke(*args: str) -> object:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def cache_copy(tiny_entry, tmp_path) -> Path:
    copy = tmp_path / "cache"
    shutil.copytree(tiny_entry.cache_dir, copy)
    return copy


def test_help_lists_commands_with_examples() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("precompile", "inspect-cache", "verify", "clear"):
        assert command in result.output
    for command in ("precompile", "inspect-cache", "verify", "clear"):
        sub = invoke(command, "--help")
        assert (
            sub.exit_code == 0 and "Examples" in sub.output and "--cache-dir" in sub.output and "--json" in sub.output
        )


def test_precompile_hit_human_and_json(tiny_entry) -> None:
    human = invoke("precompile", TARGET, *TINY_FLAGS, "--cache-dir", str(tiny_entry.cache_dir))
    assert human.exit_code == 0, human.output
    assert "cache hit" in human.output and tiny_entry.entry_id in human.output and "nothing compiled" in human.output
    machine = invoke("precompile", TARGET, *TINY_FLAGS, "--cache-dir", str(tiny_entry.cache_dir), "--json")
    data = json.loads(machine.stdout)
    assert data["schema"] == "aotcache.precompile/2" and data["hit"] is True and data["entry"] == tiny_entry.entry_id
    assert data["units_compiled"] == 0 and data["sizes_and_ranges"] == TINY_UNITS and data["units"] == 3 * TINY_UNITS
    assert data["signed"] is False
    # one byte count: what inspect-cache says the entry holds
    listed = json.loads(invoke("inspect-cache", "--cache-dir", str(tiny_entry.cache_dir), "--json").stdout)
    assert data["bytes"] == next(e["bytes"] for e in listed["entries"] if e["key"] == tiny_entry.entry_id)


def test_precompile_subprocess_json_and_env_cache_dir(tiny_entry) -> None:
    done = run_cli("precompile", TARGET, *TINY_FLAGS, "--json", env={"AOTCACHE_DIR": str(tiny_entry.cache_dir)})
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["hit"] is True and data["entry"] == tiny_entry.entry_id


def test_precompile_compiles_with_progress_and_summary(tmp_path) -> None:
    result = invoke("precompile", TARGET, *TINY_FLAGS, "--backend", "eager", "--cache-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "built entry" in result.output and "pieces" in result.output and "time" in result.output


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["precompile", "nosuchpkg.model:spec"], 2, "cannot import 'nosuchpkg.model'"),
        (["precompile", "examples/nope.py:spec"], 2, "does not exist"),
        (["precompile", "examples.tiny_llama:nothing"], 2, "has no attribute 'nothing'"),
        (["precompile", "examples.tiny_llama"], 2, "is not of the form"),
        (["precompile", TARGET, "--max-num-batched-tokens", "0"], 2, "invalid max_num_batched_tokens=0"),
        (["precompile", TARGET, "--compile-sizes", "1,x"], 2, "invalid compile_sizes='1,x'"),
        (["precompile", TARGET, "--compilation-config", "{bad json"], 2, "valid JSON"),
        (["precompile", TARGET, "--splitting-ops", "attention"], 2, "invalid splitting_ops='attention'"),
        (["inspect-cache", "ffffffffffff"], 1, "no entry 'ffffffffffff'"),
        (["verify", "ffffffffffff"], 1, "no entry 'ffffffffffff'"),
        (["clear"], 2, "nothing selected"),
        (["clear", "--max-size", "lots"], 2, "invalid max_size='lots'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_code(args: list[str], code: int, needle: str, tmp_path) -> None:
    (tmp_path / "entries").mkdir()
    result = runner.invoke(app, [*args, "--cache-dir", str(tmp_path)])
    assert result.exit_code == code, result.output
    assert needle in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_import_error_in_target(tmp_path, monkeypatch) -> None:
    broken = tmp_path / "brokenmodel.py"
    broken.write_text("import torch\nraise RuntimeError('weights not found')\n")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["precompile", "brokenmodel.py:spec", "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 2
    assert "importing 'brokenmodel' failed: RuntimeError: weights not found" in result.stderr
    verbose = runner.invoke(app, ["precompile", "brokenmodel.py:spec", "--cache-dir", str(tmp_path / "c"), "-v"])
    assert verbose.exit_code == 2 and "Traceback" in verbose.stderr


def test_unwritable_cache_dirs_exit_3(tmp_path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = runner.invoke(app, ["precompile", TARGET, *TINY_FLAGS, "--cache-dir", str(a_file)])
    assert result.exit_code == 3 and "is a file, not a directory" in result.stderr
    if os.geteuid() != 0:  # root ignores permission bits
        read_only = tmp_path / "ro"
        read_only.mkdir()
        read_only.chmod(0o555)
        result = runner.invoke(app, ["precompile", TARGET, *TINY_FLAGS, "--cache-dir", str(read_only)])
        assert result.exit_code == 3 and "not writable" in result.stderr


def test_inspect_cache_table_and_json(tiny_entry) -> None:
    result = invoke("inspect-cache", "--cache-dir", str(tiny_entry.cache_dir))
    assert result.exit_code == 0
    assert tiny_entry.entry_id[:12] in result.output and "TinyLlama" in result.output and "ok" in result.output
    data = json.loads(
        invoke("inspect-cache", "--cache-dir", str(tiny_entry.cache_dir), "--json", "--sort", "size").stdout
    )
    assert data["schema"] == "aotcache.inspect-cache/1"
    entry = next(e for e in data["entries"] if e["key"] == tiny_entry.entry_id)
    assert entry["status"] == "ok" and entry["model"] == "TinyLlama" and entry["artifacts"] > 0
    assert entry["ranges"] == [[1, 8], [9, 32]] and entry["compile_sizes"] == [1, 2, 4]
    filtered = json.loads(
        invoke("inspect-cache", "--cache-dir", str(tiny_entry.cache_dir), "--json", "--filter", "NoSuchModel").stdout
    )
    assert filtered["entries"] == []


def test_inspect_one_entry_shows_factors_sources_and_files(tiny_entry) -> None:
    key = tiny_entry.entry_id[:10]
    human = invoke("inspect-cache", key, "--cache-dir", str(tiny_entry.cache_dir))
    assert human.exit_code == 0
    for needle in (
        "config.compile_sizes",
        "torch.version",
        "examples/tiny_llama.py",
        "kernels/",
        "checks on the model at load",
    ):
        assert needle in human.output
    data = json.loads(invoke("inspect-cache", key, "--cache-dir", str(tiny_entry.cache_dir), "--json").stdout)
    assert data["schema"] == "aotcache.inspect-entry/1" and data["key"] == tiny_entry.entry_id
    names = [f["name"] for f in data["factors"]["lookup"]]
    assert "cpu.capability" in names and "model.class" in names
    assert any(f["path"].startswith("kernels/") and f["bytes"] > 0 for f in data["artifact_files"])
    assert any(s["path"] == "examples/tiny_llama.py" for s in data["sources"])
    assert data["traced_state"]["checks"] > 0 and "traced_state" in [f["name"] for f in data["factors"]["build"]]


def test_inspect_never_crashes_on_damage(cache_copy) -> None:
    entry = next((cache_copy / "entries").iterdir())
    (entry / "manifest.json").write_text("{not json")
    (cache_copy / "staging" / "deadbeef.999999.abcd").mkdir()
    data = json.loads(invoke("inspect-cache", "--cache-dir", str(cache_copy), "--json").stdout)
    statuses = sorted(e["status"] for e in data["entries"])
    assert statuses == ["corrupt", "incomplete"]
    human = invoke("inspect-cache", "--cache-dir", str(cache_copy))
    assert human.exit_code == 0 and "corrupt" in human.output and "incomplete" in human.output


def test_verify_key_and_target_with_run(tiny_entry) -> None:
    result = invoke("verify", tiny_entry.entry_id[:12], "--cache-dir", str(tiny_entry.cache_dir))
    assert result.exit_code == 0 and "PASS" in result.output
    strict = runner.invoke(
        app, ["verify", tiny_entry.entry_id[:12], "--cache-dir", str(tiny_entry.cache_dir), "--strict"]
    )
    assert strict.exit_code == 1 and "entry is not signed" in strict.output  # a warning fails --strict
    done = run_cli(
        "verify",
        TARGET,
        "--compilation-config",
        json.dumps(TINY_CONFIG),
        "--cache-dir",
        str(tiny_entry.cache_dir),
        "--run",
        "--json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["schema"] == "aotcache.verify/1" and report["ok"] and report["entry"] == tiny_entry.entry_id
    assert [c["check"] for c in report["checks"]] == ["manifest", "files", "environment", "sources", "state"]
    assert report["checks"][-1]["status"] == "ok"  # the model's settings, checked: verify TARGET has one
    sizes = [r["size"] for r in report["run"]["results"]]
    assert sizes == [1, 2, 4, 8, 9, 32]  # every compile size and both ends of every range
    assert all(r["ok"] and r["max_abs_diff"] <= 1e-4 for r in report["run"]["results"])


def test_verify_is_a_library_call_too(tiny_entry) -> None:
    """`aotcache.verify.check` is what the CLI runs: typed verdicts, --run included, and
    the same JSON as `verify --json`."""
    from aotcache import verify
    from aotcache.configuration import from_dict

    seen: list[str] = []

    class Watch:
        def __enter__(self) -> Watch:
            seen.append("started")
            return self

        def __exit__(self, *exc: object) -> None:
            seen.append("ended")

        def update(self, done: int, total: int, label: str) -> None:
            seen.append(label)

    report = verify.check(
        TARGET, cache_dir=tiny_entry.cache_dir, config_of=lambda fields: from_dict(TINY_CONFIG), run=True, watch=Watch
    )
    assert isinstance(report, verify.VerifyReport) and report.ok and report.whole is not None
    assert report.whole.entry == tiny_entry.entry_id and seen == ["started", "ended"]
    assert [c.check for c in report.whole.checks if c.ok] == ["manifest", "files", "environment", "sources", "state"]
    assert report.whole.run and report.whole.run["ok"] and report.whole.run["started"]
    assert report.to_json()["schema"] == verify.SCHEMA
    by_key = verify.check(tiny_entry.entry_id[:12], cache_dir=tiny_entry.cache_dir, strict=True)
    assert not by_key.ok and by_key.whole and by_key.whole.warnings == ["entry is not signed"]


def test_verify_reports_each_failure_with_old_and_new(cache_copy, tiny_entry) -> None:
    entry = cache_copy / "entries" / tiny_entry.entry_id
    kernel = next((entry / "kernels").iterdir())
    kernel.write_bytes(kernel.read_bytes()[:100])
    result = runner.invoke(app, ["verify", tiny_entry.entry_id, "--cache-dir", str(cache_copy), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    files = next(c for c in report["checks"] if c["check"] == "files")
    assert not files["ok"] and files["differences"][0]["name"] == f"kernels/{kernel.name}"
    assert files["differences"][0]["new"] == "100 bytes"


def test_verify_target_not_found_explains(tiny_entry) -> None:
    config = {**TINY_CONFIG, "compile_sizes": [1]}
    result = runner.invoke(
        app,
        [
            "verify",
            TARGET,
            "--compilation-config",
            json.dumps(config),
            "--cache-dir",
            str(tiny_entry.cache_dir),
            "--json",
        ],
    )
    assert result.exit_code == 1
    check = json.loads(result.stdout)["checks"][0]
    assert check["check"] == "lookup" and check["differences"][0]["name"] == "config.compile_sizes"


def test_clear_dry_run_deletes_nothing_then_key_deletes(cache_copy, tiny_entry) -> None:
    before = sorted(p.name for p in (cache_copy / "entries").iterdir())
    dry = json.loads(invoke("clear", "--all", "--dry-run", "--cache-dir", str(cache_copy), "--json").stdout)
    assert dry["dry_run"] and [r["key"] for r in dry["removed"]] == before and dry["freed_bytes"] > 0
    assert sorted(p.name for p in (cache_copy / "entries").iterdir()) == before
    done = run_cli("clear", tiny_entry.entry_id[:12], "--cache-dir", str(cache_copy), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [r["key"] for r in data["removed"]] == [tiny_entry.entry_id] and not data["dry_run"]
    assert not (cache_copy / "entries" / tiny_entry.entry_id).exists()


def test_clear_broken_removes_leftovers_and_corrupt(cache_copy, tiny_entry) -> None:
    (cache_copy / "staging" / "abc.999999.dead").mkdir()
    (cache_copy / "trash" / "old.1234").mkdir()
    result = invoke("clear", "--broken", "--cache-dir", str(cache_copy), "--json")
    data = json.loads(result.stdout)
    assert sorted(r["status"] for r in data["removed"]) == ["incomplete", "incomplete"]
    assert (cache_copy / "entries" / tiny_entry.entry_id).exists()  # healthy entry kept
    assert list((cache_copy / "staging").iterdir()) == [] and list((cache_copy / "trash").iterdir()) == []


def test_clear_max_size_evicts_least_recently_used_first(tmp_path) -> None:
    ids = []
    for tokens in (16, 24, 32):
        config = {
            **TINY_CONFIG,
            "backend": "eager",
            "compile_sizes": [],
            "compile_ranges_split_points": [],
            "max_num_batched_tokens": tokens,
        }
        ids.append(aotcache.precompile(tiny_llama.spec, config, cache_dir=tmp_path).entry_id)
    usage = tmp_path / "usage"
    now = time.time()
    # last used: ids[1] oldest, then ids[0], then ids[2]
    for entry_id, age in zip(ids, (200, 300, 100), strict=True):
        (usage / entry_id).touch()
        os.utime(usage / entry_id, (now - age, now - age))
    sizes = {e: sum(f.stat().st_size for f in (tmp_path / "entries" / e).rglob("*") if f.is_file()) for e in ids}
    limit = sizes[ids[2]] + 10
    data = json.loads(invoke("clear", "--max-size", f"{limit}B", "--cache-dir", str(tmp_path), "--json").stdout)
    assert [r["key"] for r in data["removed"]] == [ids[1], ids[0]]
    assert all(r["reason"].startswith("over max size") for r in data["removed"])
    assert [p.name for p in (tmp_path / "entries").iterdir()] == [ids[2]]


def test_clear_older_than(tmp_path) -> None:
    config = {**TINY_CONFIG, "backend": "eager", "compile_sizes": [], "compile_ranges_split_points": []}
    entry_id = aotcache.precompile(tiny_llama.spec, config, cache_dir=tmp_path).entry_id
    assert (
        json.loads(invoke("clear", "--older-than", "1d", "--cache-dir", str(tmp_path), "--json").stdout)["removed"]
        == []
    )
    stamp = tmp_path / "usage" / entry_id
    stamp.touch()
    os.utime(stamp, (time.time() - 3 * 86400,) * 2)
    data = json.loads(invoke("clear", "--older-than", "2d", "--cache-dir", str(tmp_path), "--json").stdout)
    assert [r["key"] for r in data["removed"]] == [entry_id]


def test_quiet_and_verbose(tiny_entry) -> None:
    quiet = invoke("precompile", TARGET, *TINY_FLAGS, "--cache-dir", str(tiny_entry.cache_dir), "-q")
    assert quiet.exit_code == 0 and quiet.stdout == ""
    verbose = invoke("precompile", TARGET, *TINY_FLAGS, "--cache-dir", str(tiny_entry.cache_dir), "-v", "--json")
    data = json.loads(verbose.stdout)
    assert set(data["counters"]) == {
        "models_seen",
        "traces",
        "compiles",
        "entries_saved",
        "entries_loaded",
        "remote_pulls",
        "bytes_downloaded",
        "misses",
    }
    assert data["counters"]["traces"] >= 1
