"""Stats files through a remote: `push --stats` sends a stats dir's files to a file://
remote and to an OCI registry (a real one on loopback), read_remote_stats reads them back
as the same records; a hostile file on the remote (not JSON, over the cap, a bad name) is
skipped with a warning, never an error."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _servers import registry
from typer.testing import CliRunner

from aotcache.cli.app import app
from aotcache.fleet import oci as oci_module
from aotcache.fleet.connect import open_remote
from aotcache.fleet.remote import MAX_STATS_BYTES, STATS_FILE, Blob
from aotcache.stats.records import FILE_NAME, MAX_FILE_BYTES, EntryStats, MissStats, ProcessStats
from aotcache.stats.remote import push_stats, read_remote_stats

runner = CliRunner()


def test_the_remote_checks_names_and_sizes_as_the_stats_records_do() -> None:
    """fleet (a lower layer) cannot import stats: its copy of the rules must agree."""
    assert STATS_FILE.pattern == FILE_NAME.pattern and MAX_STATS_BYTES == MAX_FILE_BYTES


def _process(host: str, pid: int, calls: dict[int, int]) -> ProcessStats:
    entry = EntryStats(
        entry_id="0123456789abcdef-fedcba9876543210",
        model="TinyLlama",
        lookup="0123456789abcdef",
        loads=1,
        load_seconds=[0.25],
        calls=calls,
        served_by={size: f"size {size}" for size in calls},
    )
    miss = MissStats(
        model="TinyLlama",
        lookup="00000000deadbeef",
        reason="not-found",
        message="no entry",
        differences=[{"name": "config.max_num_batched_tokens", "old": 32, "new": 64}],
        count=2,
    )
    return ProcessStats(
        name=f"{host}-{pid}-1.json",
        host=host,
        pid=pid,
        started="2026-12-01T00:00:00+00:00",
        updated="2026-12-01T00:01:00+00:00",
        entries={entry.entry_id: entry},
        misses=[miss],
    )


@pytest.fixture
def stats_dir(tmp_path: Path) -> tuple[Path, list[ProcessStats]]:
    """Two processes' stats files, and a file that is not one (never sent)."""
    folder = tmp_path / "stats"
    folder.mkdir()
    written = [_process("replica-a", 11, {1: 5, 4: 2}), _process("replica-b", 12, {9: 3})]
    for record in written:
        (folder / record.name).write_bytes(record.to_bytes())
    (folder / "broken-1-1.json").write_bytes(b"{not json")
    return folder, written


def _as_json(records: list[ProcessStats]) -> list[tuple[str, dict[str, Any]]]:
    return sorted((r.name, r.to_json()) for r in records)


def _push_stats(remote: str, folder: Path) -> Any:
    done = runner.invoke(app, ["push", remote, "--stats", "--stats-dir", str(folder), "--json"])
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def _roundtrip(remote: str, folder: Path, written: list[ProcessStats]) -> None:
    pushed = _push_stats(remote, folder)
    assert pushed["schema"] == "aotcache.push-stats/1" and pushed["sent"] == 2
    assert pushed["files"] == sorted(r.name for r in written)
    records, warnings = read_remote_stats(open_remote(remote))
    assert warnings == [] and _as_json(records) == _as_json(written)
    # a newer copy of a file replaces the older one
    newer = _process("replica-a", 11, {1: 50, 4: 20})
    (folder / newer.name).write_bytes(newer.to_bytes())
    human = runner.invoke(app, ["push", remote, "--stats", "--stats-dir", str(folder)])
    assert human.exit_code == 0 and "pushed 2 stats files" in human.stdout, human.output
    records, warnings = read_remote_stats(open_remote(remote))
    assert warnings == [] and _as_json(records) == _as_json([newer, written[1]])


def test_push_stats_to_a_file_remote_and_read_them_back(stats_dir, tmp_path) -> None:
    folder, written = stats_dir
    _roundtrip(f"file://{tmp_path / 'mount'}", folder, written)
    assert sorted(p.name for p in (tmp_path / "mount" / "stats").iterdir()) == sorted(r.name for r in written)


@pytest.fixture(scope="module")
def oci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with registry(tmp_path_factory.mktemp("registry")) as (host, _):
        yield host


def test_push_stats_to_an_oci_registry_and_read_them_back(stats_dir, oci) -> None:
    folder, written = stats_dir
    _roundtrip(f"oci://{oci}/aot/stats", folder, written)
    long_name = "x" * 190 + ".json"  # longer than a tag may be: a digest tells it apart
    record = _process("x", 1, {2: 1})
    remote = open_remote(f"oci://{oci}/aot/stats")
    remote.put_stats(long_name, record.to_bytes())
    records, warnings = read_remote_stats(remote)
    assert warnings == [] and long_name in {r.name for r in records}


def _hostile_file_remote(tmp_path: Path) -> str:
    stats = tmp_path / "mount" / "stats"
    stats.mkdir(parents=True)
    good = _process("good", 1, {1: 1})
    (stats / good.name).write_bytes(good.to_bytes())
    (stats / "bad-json-1-1.json").write_bytes(b'{"schema": "aotcache.stats/1", ')
    (stats / "too-big-1-1.json").write_bytes(b" " * (MAX_FILE_BYTES + 1))
    (stats / "bad name;rm -rf.json").write_bytes(good.to_bytes())
    (stats / "deep-1-1.json").write_bytes(b"[" * 100_000)
    return f"file://{tmp_path / 'mount'}"


def test_hostile_files_on_a_file_remote_are_skipped_with_a_warning(tmp_path) -> None:
    records, warnings = read_remote_stats(open_remote(_hostile_file_remote(tmp_path)))
    assert [r.name for r in records] == ["good-1-1.json"]
    assert len(warnings) == 4, warnings
    for needle in ("bad-json-1-1.json", "too-big-1-1.json", "bad name;rm -rf.json", "deep-1-1.json"):
        assert any(needle in w and "skipped" in w for w in warnings), (needle, warnings)
    assert any("over 4 MiB" in w for w in warnings) and any("not a stats file name" in w for w in warnings)


def _plant(remote: Any, tag: str, name: str, data: bytes) -> None:
    """A stats tag as a hostile writer makes it: any name, any bytes (put_stats refuses both)."""
    blob = Blob(name, hashlib.sha256(data).hexdigest(), len(data))
    empty = Blob("config", hashlib.sha256(oci_module.EMPTY).hexdigest(), len(oci_module.EMPTY))
    for item, content in ((empty, oci_module.EMPTY), (blob, data)):
        if not remote.has_blob(item):
            remote.upload_blob(item, content)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci_module.OCI_MANIFEST,
        "artifactType": oci_module.STATS_ARTIFACT,
        "config": {"mediaType": oci_module.EMPTY_TYPE, "digest": empty.digest, "size": empty.size},
        "layers": [oci_module._descriptor(blob, oci_module.STATS_TYPE)],
        "annotations": {oci_module.STATS_ANNOTATION: name},
    }
    headers = {"Content-Type": oci_module.OCI_MANIFEST}
    remote._send("PUT", f"manifests/{tag}", content=json.dumps(manifest).encode(), headers=headers).close()


def test_hostile_files_on_an_oci_registry_are_skipped_with_a_warning(oci) -> None:
    remote = open_remote(f"oci://{oci}/aot/hostile-stats")
    good = _process("good", 1, {1: 1})
    remote.put_stats(good.name, good.to_bytes())
    _plant(remote, "stats-bad-json", "bad-json.json", b"[1, 2")
    _plant(remote, "stats-too-big", "too-big.json", b" " * (MAX_FILE_BYTES + 10))
    _plant(remote, "stats-escape", "../../etc/passwd\x1b[2J.json", good.to_bytes())
    records, warnings = read_remote_stats(remote)
    assert [r.name for r in records] == [good.name]
    assert len(warnings) == 3, warnings
    assert any("bad-json.json" in w and "not JSON" in w for w in warnings), warnings
    assert any("too-big.json" in w and "over 4 MiB" in w for w in warnings), warnings
    assert any("not a stats file name" in w and "\x1b" not in w for w in warnings), warnings


def test_push_stats_sends_only_valid_files_and_refuses_bad_input(stats_dir, tmp_path, caplog) -> None:
    folder, written = stats_dir
    sent = push_stats(folder, open_remote(f"file://{tmp_path / 'mount'}"))
    assert sent == sorted(r.name for r in written)  # not broken-1-1.json
    assert any("broken-1-1.json" in r.getMessage() for r in caplog.records)
    missing = runner.invoke(app, ["push", "file:///tmp", "--stats", "--stats-dir", str(tmp_path / "nope")])
    assert missing.exit_code == 3 and "stats dir" in missing.stderr, missing.output
    with_keys = runner.invoke(app, ["push", "file:///tmp", "abc", "--stats", "--stats-dir", str(folder)])
    assert with_keys.exit_code == 2 and "--stats" in with_keys.stderr, with_keys.output
    with pytest.raises(ValueError, match="stats file name"):
        open_remote(f"file://{tmp_path / 'mount'}").put_stats("../escape.json", b"{}")
