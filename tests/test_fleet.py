"""push / pull / load(remote=...) against real servers on loopback: the CNCF distribution
registry (Debian's docker-registry) and moto's S3 server. Entries are real Inductor
builds; loads happen in fresh processes and are compared with eager."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _servers import registry, registry_blob, s3_server
from _support import TINY_CONFIG, copy_cache, python_env, rewrite_manifest, run_cli, run_python

from aotcache.store.manifest import parse

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def oci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    with registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with s3_server(tmp_path_factory.mktemp("moto")) as env:
        done = run_python("import s3fs; s3fs.S3FileSystem().mkdir('aotcache')", env=env)
        assert done.returncode == 0, done.stderr
        yield env


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return json.loads(done.stdout)


def _entries(cache: Path) -> list[str]:
    return sorted(os.listdir(cache / "entries")) if (cache / "entries").is_dir() else []


LOAD_REMOTE = """
import json, sys, torch, aotcache
from aotcache.serve import COMPILE_SIDE_MODULES
from examples import tiny_llama
model = tiny_llama.build()
loaded = aotcache.load(model, {config!r}, cache_dir={cache!r}, remote={remote!r}, strict=True, **{extra!r})
worst = 0.0
for size in (1, 3, 4, 20):
    inputs = tiny_llama.example_inputs(size)
    with torch.no_grad():
        worst = max(worst, float((loaded(*inputs) - model(*inputs)).abs().max()))
compile_side = sorted(m for m in sys.modules if m.startswith(COMPILE_SIDE_MODULES))
print(json.dumps({{"entry": loaded.entry_id, "worst": worst, "counters": aotcache.counters.snapshot(),
                  "compile_side": compile_side}}))
"""


def _load_remote(cache: Path, remote: str, env: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    code = LOAD_REMOTE.format(config=TINY_CONFIG, cache=str(cache), remote=remote, extra=extra)
    done = run_python(code, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- OCI ----------------------------------------------------------------------------------


def test_push_then_pull_into_an_empty_cache_loads_equal_to_eager(tiny_entry, oci, tmp_path) -> None:
    remote = f"oci://{oci[0]}/aot/roundtrip"
    pushed = run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "--json")
    assert pushed.returncode == 0, pushed.stderr
    row = _json(pushed)["entries"][0]
    assert row["status"] == "pushed" and row["bytes_transferred"] == row["bytes"] > 0
    again = _json(run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "--json"))
    assert again["entries"][0]["status"] == "present" and again["bytes_transferred"] == 0

    cache = tmp_path / "replica"
    pulled = run_cli("pull", remote, "--cache-dir", str(cache), "--json")
    assert pulled.returncode == 0, pulled.stderr
    assert _json(pulled)["entries"][0]["status"] == "pulled"
    assert _entries(cache) == [tiny_entry.entry_id]
    assert not os.listdir(cache / "staging")
    assert run_cli("verify", tiny_entry.entry_id, "--cache-dir", str(cache)).returncode == 0
    original = tiny_entry.path
    for name in os.listdir(original):
        if (original / name).is_file():
            assert (cache / "entries" / tiny_entry.entry_id / name).read_bytes() == (original / name).read_bytes()
    result = _load_remote(cache, remote)
    assert result["entry"] == tiny_entry.entry_id and result["worst"] < 1e-4
    assert result["counters"]["remote_pulls"] == 0  # it was local already
    assert result["compile_side"] == []


def test_load_with_remote_on_an_empty_cache_pulls_then_loads(tiny_entry, oci, tmp_path) -> None:
    remote = f"oci://{oci[0]}/aot/onload"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    result = _load_remote(tmp_path / "empty", remote)
    assert result["entry"] == tiny_entry.entry_id and result["worst"] < 1e-4
    assert result["counters"]["remote_pulls"] == 1
    assert result["counters"]["bytes_downloaded"] > 0
    assert result["compile_side"] == []  # pulling imports no compiler either
    # AOTCACHE_REMOTE is the same as remote=...
    via_env = _load_remote(tmp_path / "empty2", "", env={"AOTCACHE_REMOTE": remote})
    assert via_env["counters"]["remote_pulls"] == 1


def test_two_replicas_missing_at_once_download_once(tiny_entry, oci, tmp_path) -> None:
    remote = f"oci://{oci[0]}/aot/together"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    cache, gate = tmp_path / "shared", tmp_path / "gate"
    code = f"""
import json, os, sys, time, aotcache
from pathlib import Path
from examples import tiny_llama
model = tiny_llama.build()
Path({str(gate)!r}, sys.argv[1]).touch()
while len(os.listdir({str(gate)!r})) < 2:  # both processes reach load() together
    time.sleep(0.005)
loaded = aotcache.load(model, {TINY_CONFIG!r}, cache_dir={str(cache)!r}, remote={remote!r}, strict=True)
print(json.dumps({{"entry": loaded.entry_id, "pulls": aotcache.counters.remote_pulls}}))
"""
    gate.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i)],
            env=python_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    results = [json.loads(o[0].strip().splitlines()[-1]) for o in outputs]
    assert {r["entry"] for r in results} == {tiny_entry.entry_id}
    assert sorted(r["pulls"] for r in results) == [0, 1]


@pytest.fixture(scope="module")
def sharing_entry(tiny_entry, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A second tiny_llama entry (one more compile size) built in a copy of the session
    cache: it reuses the first entry's artifacts, so most of its files are the same blobs."""
    import aotcache
    from examples import tiny_llama

    cache = copy_cache(tiny_entry.cache_dir, tmp_path_factory.mktemp("sharing") / "cache")
    result = aotcache.precompile(tiny_llama.spec, {**TINY_CONFIG, "compile_sizes": [1, 2, 4, 8]}, cache_dir=cache)
    assert result.entry_id != tiny_entry.entry_id
    return cache, result.entry_id


def test_a_second_entry_uploads_only_the_blobs_it_does_not_share(tiny_entry, sharing_entry, oci) -> None:
    remote = f"oci://{oci[0]}/aot/shared"
    first = _json(run_cli("push", remote, tiny_entry.entry_id, "--cache-dir", str(tiny_entry.cache_dir), "--json"))
    second = run_cli("push", remote, sharing_entry[1], "--cache-dir", str(sharing_entry[0]), "--json")
    assert second.returncode == 0, second.stderr
    row = _json(second)["entries"][0]
    assert row["status"] == "pushed" and row["blobs_skipped"] > 0
    assert 0 < row["bytes_transferred"] < row["bytes"] / 2, (first, row)
    sent, size = row["bytes_transferred"], row["bytes"]
    print(f"\nfirst entry sent {first['bytes_transferred']} bytes; second entry {size} bytes, sent {sent}")


def test_a_blob_changed_in_the_registry_storage_is_refused_and_nothing_is_published(tiny_entry, tmp_path) -> None:
    with registry(tmp_path / "registry") as (host, storage):
        remote = f"oci://{host}/aot/damaged"
        assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
        manifest = parse((tiny_entry.path / "manifest.json").read_bytes(), tiny_entry.entry_id)
        path, record = max(manifest.files.items(), key=lambda item: item[1].bytes)
        blob = registry_blob(storage, record.sha256)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))

        cache = tmp_path / "replica"
        pulled = run_cli("pull", remote, "--cache-dir", str(cache))
        assert pulled.returncode == 1, pulled.stderr
        errors = [line for line in pulled.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and path in errors[0] and "sha256" in errors[0], pulled.stderr
        assert "Traceback" not in pulled.stderr
        assert _entries(cache) == []
        staged = [p for p in (cache / "staging").rglob("*") if p.is_file()]
        assert all(not p.name.startswith(Path(path).name) for p in staged)  # the bad bytes are gone
        # a load with this remote misses with the same reason, and publishes nothing either
        done = run_python(
            f"""
            import aotcache
            from examples import tiny_llama
            try:
                aotcache.load(tiny_llama.build(), {TINY_CONFIG!r}, cache_dir={str(cache)!r}, remote={remote!r},
                              strict=True)
            except aotcache.CorruptEntry as exc:
                print("corrupt", exc)
            """
        )
        assert done.stdout.startswith("corrupt") and path in done.stdout, done.stderr[-2000:]
        assert _entries(cache) == []


def test_an_interrupted_pull_resumes(tiny_entry, oci, tmp_path) -> None:
    remote = f"oci://{oci[0]}/aot/resume"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    cache = tmp_path / "replica"
    killed = run_cli("pull", remote, "--cache-dir", str(cache), env={"AOTCACHE_FAILPOINT": "pull-after-file"})
    assert killed.returncode == -9
    assert _entries(cache) == []  # nothing half-pulled is visible
    staged = [p for p in (cache / "staging").iterdir()]
    assert len(staged) == 1 and staged[0].name.endswith(".pull")
    kept = [p for p in staged[0].rglob("*") if p.is_file()]
    assert len(kept) == 1
    kept_bytes = kept[0].stat().st_size
    # the kill left a dead process's staging dir: `inspect-cache` shows it as incomplete
    listing = _json(run_cli("inspect-cache", "--cache-dir", str(cache), "--json"))
    assert [e["status"] for e in listing["entries"]] == ["incomplete"]

    # a partial file is continued from where it stopped (an HTTP range request)
    manifest = parse((tiny_entry.path / "manifest.json").read_bytes(), tiny_entry.entry_id)
    rest = [item for item in manifest.files.items() if staged[0] / item[0] != kept[0]]
    path, record = max(rest, key=lambda item: item[1].bytes)
    part = staged[0] / (path + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes((tiny_entry.path / path).read_bytes()[: record.bytes // 2])

    resumed = run_cli("pull", remote, "--cache-dir", str(cache), "--json")
    assert resumed.returncode == 0, resumed.stderr
    row = _json(resumed)["entries"][0]
    assert row["status"] == "pulled"
    assert row["bytes_skipped"] == kept_bytes + record.bytes // 2
    assert row["bytes_transferred"] + row["bytes_skipped"] == row["bytes"]
    assert _entries(cache) == [tiny_entry.entry_id]
    assert not os.listdir(cache / "staging")
    assert run_cli("verify", tiny_entry.entry_id, "--cache-dir", str(cache)).returncode == 0


def _signed_copy(tiny_entry: Any, target: Path, key: Path) -> Path:
    from aotcache.store.signing import read_key, sign

    cache = copy_cache(tiny_entry.cache_dir, target)
    entry = cache / "entries" / tiny_entry.entry_id
    (entry / "manifest.sig").write_bytes(sign((entry / "manifest.json").read_bytes(), read_key(key)))
    return cache


def test_with_a_trusted_key_a_signed_entry_arrives_and_an_unsigned_one_is_refused(tiny_entry, oci, tmp_path) -> None:
    key = tmp_path / "release.secret"
    key.write_text("a-release-secret-of-some-length\n")
    signed_remote, unsigned_remote = f"oci://{oci[0]}/aot/signed", f"oci://{oci[0]}/aot/unsigned"
    signed_cache = _signed_copy(tiny_entry, tmp_path / "signed", key)
    assert run_cli("push", signed_remote, "--cache-dir", str(signed_cache), "-q").returncode == 0
    assert run_cli("push", unsigned_remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0

    refused = run_cli("pull", unsigned_remote, "--cache-dir", str(tmp_path / "a"), "--trusted-key", str(key))
    assert refused.returncode == 1 and "not signed" in refused.stderr, refused.stderr
    assert _entries(tmp_path / "a") == []
    pulled = run_cli("pull", signed_remote, "--cache-dir", str(tmp_path / "b"), "--trusted-key", str(key))
    assert pulled.returncode == 0, pulled.stderr
    result = _load_remote(tmp_path / "c", signed_remote, trusted_key=str(key))
    assert result["worst"] < 1e-4 and result["counters"]["remote_pulls"] == 1
    done = run_python(
        f"""
        import aotcache
        from examples import tiny_llama
        try:
            aotcache.load(tiny_llama.build(), {TINY_CONFIG!r}, cache_dir={str(tmp_path / "d")!r},
                          remote={unsigned_remote!r}, trusted_key={str(key)!r}, strict=True)
        except aotcache.SignatureError as exc:
            print("untrusted", exc)
        """
    )
    assert done.stdout.startswith("untrusted"), done.stderr[-2000:]
    assert _entries(tmp_path / "d") == []


def test_push_never_overwrites_an_entry_with_other_bytes(tiny_entry, oci, tmp_path) -> None:
    remote = f"oci://{oci[0]}/aot/conflict"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    other = copy_cache(tiny_entry.cache_dir, tmp_path / "other")
    rewrite_manifest(other / "entries" / tiny_entry.entry_id, lambda m: setattr(m, "created", "2020-01-01T00:00:00Z"))
    refused = run_cli("push", remote, "--cache-dir", str(other))
    assert refused.returncode == 1 and "other bytes" in refused.stderr, refused.stderr
    pulled = run_cli("pull", remote, "--cache-dir", str(tmp_path / "replica"), "-q")
    assert pulled.returncode == 0
    got = tmp_path / "replica/entries" / tiny_entry.entry_id / "manifest.json"
    assert got.read_bytes() == (tiny_entry.path / "manifest.json").read_bytes()


def test_bad_remotes_are_one_line_errors(tiny_entry, tmp_path) -> None:
    cases = [
        (["push", "no-scheme-here"], 2, "remote"),
        (["push", "oci://Registry.Example/Upper/Case"], 2, "repository"),
        (["pull", f"oci://127.0.0.1:{_closed_port()}/aot/x"], 3, "cannot reach the registry"),
        (["pull", "nosuchproto://bucket/x"], 2, "nosuchproto"),
    ]
    for args, code, needle in cases:
        done = run_cli(*args, "--cache-dir", str(tiny_entry.cache_dir))
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == code and len(errors) == 1 and needle in errors[0], (args, done.stderr)
        assert "Traceback" not in done.stderr


def _closed_port() -> int:
    from _servers import free_port

    return free_port()


def test_a_missing_entry_on_the_remote_exits_1(tiny_entry, oci, tmp_path) -> None:
    remote = f"oci://{oci[0]}/aot/holds-one"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    done = run_cli("pull", remote, "0123456789abcdef-0123456789abcdef", "--cache-dir", str(tmp_path / "c"))
    assert done.returncode == 1 and "holds no entry" in done.stderr, done.stderr


def _pulled_from_nothing(remote: str, cache: Path, needle: str) -> None:
    """A pull from a remote that does not exist: exit 3 naming it, one line, nothing
    written (not even the cache dir); --json says so too."""
    done = run_cli("pull", remote, "--cache-dir", str(cache))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 3 and len(errors) == 1 and needle in errors[0], done.stderr
    assert not cache.exists()
    as_json = run_cli("pull", remote, "--cache-dir", str(cache), "--json")
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["ok"] is False, as_json.stdout


def test_a_mistyped_remote_is_an_error_and_an_empty_one_is_not(tiny_entry, oci, s3, tmp_path) -> None:
    """A typo in the remote (no such directory, repository or bucket) fails the init
    container instead of starting the replica cold; a remote that exists but holds
    nothing is still a clean "nothing to pull"."""
    _pulled_from_nothing(f"file://{tmp_path / 'remotee'}", tmp_path / "c1", "no such directory")
    _pulled_from_nothing(f"oci://{oci[0]}/aot/nosuch", tmp_path / "c2", "no such repository aot/nosuch")
    s3_env = {**s3}
    done = run_cli("pull", "s3://nosuchbucket/fleet", "--cache-dir", str(tmp_path / "c3"), env=s3_env)
    assert done.returncode == 3 and "no such bucket nosuchbucket" in done.stderr, done.stderr
    (tmp_path / "empty").mkdir()
    empty = run_cli("pull", f"file://{tmp_path / 'empty'}", "--cache-dir", str(tmp_path / "c4"), "--json")
    assert empty.returncode == 0 and json.loads(empty.stdout)["entries"] == [], empty.stderr
    in_bucket = run_cli("pull", "s3://aotcache/nothing-yet", "--cache-dir", str(tmp_path / "c5"), env=s3_env)
    assert in_bucket.returncode == 0 and "nothing to pull" in in_bucket.stdout + in_bucket.stderr, in_bucket.stderr


# -- S3 (moto in server mode) ---------------------------------------------------------------


def test_s3_push_pull_and_load_with_remote(tiny_entry, sharing_entry, s3, tmp_path) -> None:
    remote = "s3://aotcache/fleet"
    started = time.monotonic()
    pushed = run_cli("push", remote, tiny_entry.entry_id, "--cache-dir", str(tiny_entry.cache_dir), "--json", env=s3)
    assert pushed.returncode == 0, pushed.stderr
    assert _json(pushed)["entries"][0]["status"] == "pushed"
    second = _json(run_cli("push", remote, sharing_entry[1], "--cache-dir", str(sharing_entry[0]), "--json", env=s3))
    row = second["entries"][0]
    assert row["blobs_skipped"] > 0 and 0 < row["bytes_transferred"] < row["bytes"] / 2

    cache = tmp_path / "replica"
    pulled = run_cli("pull", remote, tiny_entry.entry_id, "--cache-dir", str(cache), "--json", env=s3)
    assert pulled.returncode == 0, pulled.stderr
    assert run_cli("verify", tiny_entry.entry_id, "--cache-dir", str(cache)).returncode == 0
    # the second entry arrives mostly from the first one's local files
    rest = _json(run_cli("pull", remote, "--cache-dir", str(cache), "--json", env=s3))
    statuses = {e["key"]: e for e in rest["entries"]}
    assert statuses[tiny_entry.entry_id]["status"] == "present"
    assert statuses[sharing_entry[1]]["bytes_transferred"] < statuses[sharing_entry[1]]["bytes"] / 2
    result = _load_remote(tmp_path / "empty", remote, env=s3)
    assert result["entry"] == tiny_entry.entry_id and result["worst"] < 1e-4
    assert result["counters"]["remote_pulls"] == 1
    print(f"\ns3 round trip in {time.monotonic() - started:.1f} s")


def test_s3_damaged_blob_is_refused(tiny_entry, s3, tmp_path) -> None:
    remote = "s3://aotcache/damaged"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q", env=s3).returncode == 0
    manifest = parse((tiny_entry.path / "manifest.json").read_bytes(), tiny_entry.entry_id)
    path, record = max(manifest.files.items(), key=lambda item: item[1].bytes)
    blob = f"aotcache/damaged/blobs/sha256/{record.sha256}"
    damage = run_python(f"import s3fs; s3fs.S3FileSystem().pipe({blob!r}, b'x' * {record.bytes})", env=s3)
    assert damage.returncode == 0, damage.stderr
    pulled = run_cli("pull", remote, "--cache-dir", str(tmp_path / "c"), env=s3)
    assert pulled.returncode == 1 and path in pulled.stderr, pulled.stderr
    assert _entries(tmp_path / "c") == []


def test_file_urls_work_as_a_shared_mount(tiny_entry, tmp_path) -> None:
    remote = f"file://{tmp_path / 'mount'}"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    assert not [p for p in (tmp_path / "mount").rglob("*.part")]
    assert run_cli("pull", remote, "--cache-dir", str(tmp_path / "c"), "-q").returncode == 0
    assert _entries(tmp_path / "c") == [tiny_entry.entry_id]
    shutil.rmtree(tmp_path / "mount" / "blobs")
    missing = run_cli("pull", remote, "--cache-dir", str(tmp_path / "d"))
    assert missing.returncode == 1 and "missing" in missing.stderr, missing.stderr


# -- a hostile or broken remote ---------------------------------------------------------------


def _dead_pid() -> int:
    """The pid of a process that has exited (an interrupted pull's owner)."""
    probe = subprocess.Popen(["true"])
    probe.wait()
    return probe.pid


def test_an_adopted_staging_dir_keeps_only_what_the_manifest_lists(tiny_entry, tmp_path) -> None:
    remote = f"file://{tmp_path / 'mount'}"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    cache = tmp_path / "replica"
    staged = cache / "staging" / f"{tiny_entry.entry_id}.{_dead_pid()}.pull"
    (staged / "kernels").mkdir(parents=True)
    (staged / "kernels" / "planted.so").write_bytes(b"not from this entry")
    (staged / "manifest.sig").write_bytes(b"a signature of some other manifest")
    (cache / "entries").mkdir()
    pulled = run_cli("pull", remote, "--cache-dir", str(cache), "--json")
    assert pulled.returncode == 0, pulled.stderr
    entry = cache / "entries" / tiny_entry.entry_id
    assert not (entry / "kernels" / "planted.so").exists() and not (entry / "manifest.sig").exists()
    assert run_cli("verify", tiny_entry.entry_id, "--cache-dir", str(cache)).returncode == 0


def test_a_damaged_record_is_a_one_line_error_and_a_miss_for_load(tiny_entry, tmp_path) -> None:
    mount = tmp_path / "mount"
    remote = f"file://{mount}"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    record = mount / "entries" / f"{tiny_entry.entry_id}.json"
    record.write_text(json.dumps({"entry": tiny_entry.entry_id, "manifest": "not a blob"}))
    done = run_cli("pull", remote, "--cache-dir", str(tmp_path / "c"))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 3 and len(errors) == 1 and "damaged" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    loaded = run_python(
        f"""
        import aotcache
        from examples import tiny_llama
        print(aotcache.load(tiny_llama.build(), {TINY_CONFIG!r}, cache_dir={str(tmp_path / "d")!r}, remote={remote!r}))
        """
    )
    assert loaded.returncode == 0 and loaded.stdout.strip() == "None", loaded.stderr[-2000:]
    assert "aotcache miss (remote)" in loaded.stderr


def test_a_manifest_blob_longer_than_recorded_is_cut_off_and_refused(tiny_entry, tmp_path) -> None:
    mount = tmp_path / "mount"
    remote = f"file://{mount}"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    record = json.loads((mount / "entries" / f"{tiny_entry.entry_id}.json").read_text())
    blob = mount / "blobs" / "sha256" / record["manifest"]["sha256"]
    with open(blob, "ab") as grown:
        grown.truncate(64 << 20)  # 64 MiB where the record says a few KB
    done = run_cli("pull", remote, "--cache-dir", str(tmp_path / "c"))
    assert done.returncode == 1 and "does not match its digest" in done.stderr, done.stderr
    assert _entries(tmp_path / "c") == []


def test_a_damaged_entry_is_never_pushed(tiny_entry, tmp_path) -> None:
    """Named, it fails (exit 1, one line naming the file); not named, it is skipped with
    a warning and the others go; either way the remote receives nothing of it."""
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    kernel = next((cache / "entries" / tiny_entry.entry_id / "kernels").iterdir())
    kernel.write_bytes(kernel.read_bytes()[:-1])
    mount = tmp_path / "mount"
    named = run_cli("push", f"file://{mount}", tiny_entry.entry_id, "--cache-dir", str(cache), "--json")
    assert named.returncode == 1 and _json(named)["entries"][0]["status"] == "failed", named.stdout
    errors = [line for line in named.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and kernel.name in errors[0], named.stderr
    every = run_cli("push", f"file://{mount}", "--cache-dir", str(cache), "--json")
    assert every.returncode == 0 and _json(every)["entries"] == [], every.stdout
    assert "not pushing" in every.stderr and tiny_entry.entry_id in every.stderr
    assert not (mount / "entries").exists() or list((mount / "entries").iterdir()) == []
