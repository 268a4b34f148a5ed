"""`aotcache explain` and the miss a load with a remote explains: where a load would find
its entry, here or on the remote, and otherwise the nearest entry and each lookup factor
that differs, decided before any artifact byte is fetched (entries built with the eager
backend: no Inductor compile)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _hostile_registry import hostile_registry
from _servers import registry
from _support import TINY_CONFIG, run_cli
from typer.testing import CliRunner

import aotcache
from aotcache.cli.app import app
from aotcache.fleet.objectstore import ObjectStoreRemote
from aotcache.fleet.remote import MAX_FACTORS_BYTES, factors_text, parse_factors
from aotcache.key.factors import Factor

TARGET = "examples/tiny_llama.py:spec"
EAGER_CONFIG = {**TINY_CONFIG, "backend": "eager"}
# The flags that give EAGER_CONFIG from the spec's own config, as precompile takes them.
FLAGS = ["--compile-sizes", "1,2,4", "--split-points", "8", "--splitting-ops", "tinyllama::attention"]
FLAGS += ["--backend", "eager"]
BUILT, OTHER = ["--max-num-batched-tokens", "32"], ["--max-num-batched-tokens", "64"]
DIFFERENCE = {"name": "config.max_num_batched_tokens", "old": 32, "new": 64}

runner = CliRunner()


@pytest.fixture(scope="module")
def eager_entry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(cache dir, entry id) of tiny_llama built with EAGER_CONFIG."""
    from examples import tiny_llama

    cache = tmp_path_factory.mktemp("explain-cache")
    result = aotcache.precompile(tiny_llama.spec, EAGER_CONFIG, cache_dir=cache)
    return cache, result.entry_id


@pytest.fixture
def file_remote(eager_entry, tmp_path) -> tuple[str, Path]:
    """A file:// remote holding only the eager entry: (URL, its directory)."""
    mount = tmp_path / "mount"
    pushed = runner.invoke(app, ["push", f"file://{mount}", "--cache-dir", str(eager_entry[0]), "-q"])
    assert pushed.exit_code == 0, pushed.output
    return f"file://{mount}", mount


@pytest.fixture
def blob_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every blob an object-store remote is asked for, by path (the reads still happen)."""
    paths: list[str] = []
    real = ObjectStoreRemote.read_blob

    def counted(self: ObjectStoreRemote, blob: Any, offset: int = 0) -> Iterator[bytes]:
        paths.append(blob.path)
        return real(self, blob, offset)

    monkeypatch.setattr(ObjectStoreRemote, "read_blob", counted)
    return paths


def explain(*args: str) -> Any:
    return runner.invoke(app, ["explain", TARGET, *FLAGS, *args], catch_exceptions=False)


def test_an_entry_here_that_passes_its_checks_would_hit(eager_entry) -> None:
    cache, entry_id = eager_entry
    human = explain(*BUILT, "--cache-dir", str(cache))
    assert human.exit_code == 0, human.output
    assert f"would hit (local): entry {entry_id}" in human.stdout
    machine = json.loads(explain(*BUILT, "--cache-dir", str(cache), "--json").stdout)
    assert machine["schema"] == "aotcache.explain/1"
    assert (machine["verdict"], machine["where"], machine["entry"]) == ("hit", "local", entry_id)
    assert machine["lookup"] == entry_id.split("-")[0] and machine["nearest"] is None
    assert {"name": "config.backend", "value": "eager"} in machine["factors"]


def test_another_config_here_would_miss_naming_the_factor(eager_entry) -> None:
    cache, entry_id = eager_entry
    done = explain(*OTHER, "--cache-dir", str(cache))
    assert done.exit_code == 10, done.output
    assert "would miss" in done.stdout and entry_id in done.stdout
    assert "config.max_num_batched_tokens: 32 -> 64" in done.stdout


def test_a_file_remote_with_another_config_would_miss_without_reading_a_blob(
    file_remote, eager_entry, blob_reads, tmp_path
) -> None:
    remote, _ = file_remote
    empty = tmp_path / "empty"
    done = explain(*OTHER, "--cache-dir", str(empty), "--remote", remote, "--json")
    assert done.exit_code == 10, done.output
    data = json.loads(done.stdout)
    assert (data["verdict"], data["where"], data["entry"]) == ("miss", None, None)
    assert data["nearest"] == {"entry": eager_entry[1], "where": "remote", "differences": [DIFFERENCE]}
    human = explain(*OTHER, "--cache-dir", str(empty), "--remote", remote)
    assert human.exit_code == 10 and "config.max_num_batched_tokens: 32 -> 64" in human.stdout
    assert blob_reads == []
    assert not empty.exists()  # explaining writes nothing
    # the same config as the remote's entry: a hit there, still without a blob
    hit = explain(*BUILT, "--cache-dir", str(empty), "--remote", remote, "--json")
    assert hit.exit_code == 0, hit.output
    assert (json.loads(hit.stdout)["where"], json.loads(hit.stdout)["entry"]) == ("remote", eager_entry[1])
    assert blob_reads == []


def test_a_record_pushed_before_factors_were_recorded_costs_its_manifest_only(
    file_remote, eager_entry, blob_reads, tmp_path
) -> None:
    remote, mount = file_remote
    record_path = mount / "entries" / f"{eager_entry[1]}.json"
    record = json.loads(record_path.read_text())
    assert record.pop("lookup_factors")[0]["name"] == "aotcache.format"  # push records them
    record_path.write_text(json.dumps(record))
    done = explain(*OTHER, "--cache-dir", str(tmp_path / "empty"), "--remote", remote, "--json")
    assert done.exit_code == 10, done.output
    assert json.loads(done.stdout)["nearest"]["differences"] == [DIFFERENCE]
    assert blob_reads == ["manifest.json"]


@pytest.mark.parametrize(
    "factors",
    [
        "not a list",
        [{"name": "config.max_num_batched_tokens", "value": 32}],  # does not hash to the entry's key
        [{"name": "x", "value": 1}, {"name": "x", "value": 2}],
        [{"name": "deep", "value": json.loads("[" * 40 + "]" * 40)}],
        [{"name": "big", "value": "x" * MAX_FACTORS_BYTES}],
    ],
)
def test_a_record_whose_factors_fail_the_checks_is_skipped_with_a_warning(
    factors, file_remote, eager_entry, blob_reads, tmp_path
) -> None:
    remote, mount = file_remote
    record_path = mount / "entries" / f"{eager_entry[1]}.json"
    record = json.loads(record_path.read_text())
    record["lookup_factors"] = factors
    record_path.write_text(json.dumps(record))
    done = explain(*OTHER, "--cache-dir", str(tmp_path / "empty"), "--remote", remote, "--json")
    assert done.exit_code == 10, done.output
    assert json.loads(done.stdout)["nearest"] is None
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and eager_entry[1] in warnings[0] and "skipped" in warnings[0], done.stderr
    assert blob_reads == []  # never the manifest instead


def test_parse_factors_reads_plain_data_only() -> None:
    factors = [Factor("config.compile_sizes", [1, 2, 4]), Factor("model.class", "TinyLlama")]
    assert parse_factors(factors_text(factors)) == factors
    for text in ('[{"name": "a", "value": NaN}]', '[{"name": "a\\n", "value": 1}]', "[" * 5000, '{"a": 1}'):
        with pytest.raises(ValueError):
            parse_factors(text)


@pytest.fixture(scope="module")
def oci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with registry(tmp_path_factory.mktemp("registry")) as (host, _):
        yield host


def test_an_oci_registry_with_another_config_would_miss_without_a_blob_get(oci, eager_entry, tmp_path) -> None:
    pushed = runner.invoke(app, ["push", f"oci://{oci}/aot/explain", "--cache-dir", str(eager_entry[0]), "-q"])
    assert pushed.exit_code == 0, pushed.output
    with hostile_registry(oci) as proxy:  # forwards every request, and records it
        remote = f"oci://127.0.0.1:{proxy.port}/aot/explain"
        done = explain(*OTHER, "--cache-dir", str(tmp_path / "empty"), "--remote", remote, "--json")
        assert done.exit_code == 10, done.output
        data = json.loads(done.stdout)
        assert data["nearest"] == {"entry": eager_entry[1], "where": "remote", "differences": [DIFFERENCE]}
        hit = explain(*BUILT, "--cache-dir", str(tmp_path / "empty"), "--remote", remote)
        assert hit.exit_code == 0 and f"would hit (remote): entry {eager_entry[1]}" in hit.stdout, hit.output
    gets = [seen.path for seen in proxy.seen if seen.method == "GET"]
    assert f"/v2/aot/explain/manifests/{eager_entry[1]}" in gets  # the record was read: not a vacuous count
    assert [path for path in gets if path.startswith("/v2/aot/explain/blobs/")] == []


def test_a_load_missing_on_its_remote_names_the_nearest_entry_and_factor(file_remote, eager_entry, tmp_path) -> None:
    from examples import tiny_llama

    remote, _ = file_remote
    config = {**EAGER_CONFIG, "max_num_batched_tokens": 64}
    with pytest.raises(aotcache.EntryNotFound) as caught:
        aotcache.load(tiny_llama.build(), config, cache_dir=tmp_path / "replica", remote=remote, strict=True)
    message = str(caught.value)
    assert remote in message and eager_entry[1] in message, message
    assert "config.max_num_batched_tokens: 32 -> 64" in message, message
    assert [d.to_json() for d in caught.value.differences] == [DIFFERENCE]


def test_a_bad_target_is_one_line_and_exit_2(tmp_path) -> None:
    done = run_cli("explain", "no_such_module_here:spec", "--cache-dir", str(tmp_path))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert "no_such_module_here" in errors[0] and "Traceback" not in done.stderr
    help_text = run_cli("explain", "--help")
    assert help_text.returncode == 0 and "10 would miss" in " ".join(help_text.stdout.split())


def test_a_remote_that_does_not_exist_is_exit_3_not_a_miss(tmp_path) -> None:
    done = explain(*OTHER, "--cache-dir", str(tmp_path), "--remote", f"file://{tmp_path / 'mistyped'}")
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.exit_code == 3 and len(errors) == 1 and "no such directory" in errors[0], done.output
