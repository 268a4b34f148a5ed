"""The fault suite: crash safety, concurrency, corruption, hostile input, trust.

Real processes, real entries. Run alone with `pytest -m fault`; it also runs in
`make test`. Each property here was checked by breaking it once on purpose (see the
README's Guarantees section).
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from _support import REPO, TINY_CONFIG, copy_cache, last_json, python_env, rewrite_manifest, run_cli
from typer.testing import CliRunner

import aotcache
from aotcache.cli.app import app
from aotcache.errors import CacheDirError, CorruptEntry, SignatureError, UnsupportedFormat
from aotcache.store import failpoints
from aotcache.store.checks import open_entry
from aotcache.store.root import CacheRoot, staging_is_abandoned
from aotcache.store.scan import scan
from aotcache.verify.report import verify_entry
from examples import tiny_llama

pytestmark = pytest.mark.fault

BUILD = """
import json, sys, aotcache
from examples import tiny_llama
config, cache = json.loads(sys.argv[1]), sys.argv[2]
result = aotcache.precompile(tiny_llama.spec, config, cache_dir=cache)
print(json.dumps({"entry": result.entry_id, "hit": result.hit, "compiles": aotcache.counters.compiles}))
"""


def _config(max_tokens: int) -> dict:
    """A config of its own key (max_num_batched_tokens differs), same Inductor graphs."""
    return {**TINY_CONFIG, "max_num_batched_tokens": max_tokens}


def _start_build(config: dict, cache: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, json.dumps(config), str(cache)],
        cwd=REPO,
        env=python_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return last_json(out)


def _assert_every_visible_entry_is_whole(cache: Path, existing: str) -> None:
    """No entry the loader can see is half-written; the entry that was there before
    still verifies and computes the right numbers."""
    for path in CacheRoot(cache).entry_dirs():
        open_entry(path)  # raises on anything partial
    model = tiny_llama.build(2)
    loaded = aotcache.load(model, TINY_CONFIG, cache_dir=cache, strict=True)
    assert loaded is not None and loaded.entry_id == existing
    ids = tiny_llama.example_inputs(6)[0]
    with torch.no_grad():
        assert (loaded(ids) - model(ids)).abs().max() <= 1e-4


# -- 1. crash safety -------------------------------------------------------------------------

KILLS_PER_STAGE = 1  # at a random moment inside each stage, the whole process group


def _start_announcing_build(config: dict, cache: Path) -> tuple[subprocess.Popen[str], queue.Queue]:
    """A build in a process group of its own (workers included) whose failpoints announce
    themselves on stderr; the queue receives (seconds since start, failpoint) as they come."""
    env = python_env({failpoints.ANNOUNCE_ENV: "1"})
    proc = subprocess.Popen(
        [sys.executable, "-c", BUILD, json.dumps(config), str(cache)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    events: queue.Queue = queue.Queue()
    started = time.monotonic()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(failpoints.ANNOUNCE_PREFIX):
                events.put((time.monotonic() - started, line[len(failpoints.ANNOUNCE_PREFIX) :].strip()))
        events.put((time.monotonic() - started, None))

    threading.Thread(target=read, daemon=True).start()
    return proc, events


def _wait_for(events: queue.Queue, point: str, timeout: float = 300) -> float | None:
    """Seconds since start when `point` was reached; None if the build ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seconds, name = events.get(timeout=max(0.0, deadline - time.monotonic()))
        if name is None:
            return None
        if name == point:
            return seconds
    raise AssertionError(f"the build never reached {point}")


def _group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies are dead: their memory is gone)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _stage_lengths(cache: Path) -> dict[str, float]:
    """How long each stage (from its failpoint to the next one, or to the end) lasts in
    a build like the ones that are killed: the window a random kill is drawn from."""
    proc, events = _start_announcing_build(_config(40), cache)
    times: dict[str, float] = {}
    while (item := events.get(timeout=600))[1] is not None:
        times.setdefault(item[1], item[0])
    end = item[0]
    proc.wait(timeout=60)
    assert proc.returncode == 0 and set(times) >= set(failpoints.POINTS), times
    ordered = [times[p] for p in failpoints.POINTS] + [end]
    return {p: max(0.05, after - at) for p, at, after in zip(failpoints.POINTS, ordered, ordered[1:], strict=False)}


def test_sigkill_inside_every_stage_and_at_every_failpoint(tiny_entry, tmp_path) -> None:
    """Crash safety. Each stage of a build (trace, first compile, the workers' compiles,
    kernel, manifest and publish writes) is killed KILLS_PER_STAGE times at a random
    moment inside it, the whole process group at once (the parent and its compile
    workers), and each failpoint once more exactly where it is. After every kill: no
    process of the build survives, every visible entry passes every check, and the
    entry that was there before computes the right numbers. Every planned kill lands:
    a build that ends before its kill is drawn again, so a faster torch never makes the
    count come short."""
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    lengths = _stage_lengths(cache)
    rng = random.Random(20261202)
    landed: dict[str, int] = {}
    build = 100
    for point in failpoints.POINTS:
        while landed.get(point, 0) < KILLS_PER_STAGE:
            build += 1
            assert build < 100 + 4 * KILLS_PER_STAGE * len(failpoints.POINTS), f"kills never landed in {point}"
            proc, events = _start_announcing_build(_config(build), cache)
            reached = _wait_for(events, point)
            if reached is not None:
                time.sleep(rng.uniform(0, 0.9 * lengths[point]))
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            if proc.returncode == -signal.SIGKILL:
                landed[point] = landed.get(point, 0) + 1
            deadline = time.monotonic() + 10
            while _group_members(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _group_members(proc.pid) == [], f"a process of the build killed in {point} survived"
            _assert_every_visible_entry_is_whole(cache, tiny_entry.entry_id)
    for i, point in enumerate(failpoints.POINTS):
        proc = _start_build(_config(200 + i), cache, env={"AOTCACHE_FAILPOINT": point})
        proc.communicate(timeout=600)
        assert proc.returncode == -signal.SIGKILL, point
        landed[f"at {point}"] = 1
        _assert_every_visible_entry_is_whole(cache, tiny_entry.entry_id)
    print(f"\nSIGKILLs: {sum(landed.values())}; where: {landed}")
    assert sum(landed.values()) == (KILLS_PER_STAGE + 1) * len(failpoints.POINTS)
    reports = scan(CacheRoot(cache))
    assert any(r.status == "incomplete" for r in reports)
    listed = CliRunner().invoke(app, ["inspect-cache", "--cache-dir", str(cache), "--json"])
    assert "incomplete" in {e["status"] for e in json.loads(listed.stdout)["entries"]}
    cleared = CliRunner().invoke(app, ["clear", "--broken", "--cache-dir", str(cache), "--json"])
    assert cleared.exit_code == 0
    assert all(r.status == "ok" for r in scan(CacheRoot(cache)))
    assert list(CacheRoot(cache).staging_dirs()) == []
    # a killed build leaves nothing that blocks the next one
    again = _finish(_start_build(_config(200 + failpoints.POINTS.index("kernel-write")), cache))
    assert again["hit"] is False
    open_entry(CacheRoot(cache).entry_dir(again["entry"]))


# -- 2. concurrency ------------------------------------------------------------------------


def test_four_processes_same_key_compile_once(tmp_path) -> None:
    procs = [_start_build(_config(48), tmp_path) for _ in range(4)]
    results = [_finish(p) for p in procs]
    assert len({r["entry"] for r in results}) == 1
    assert sorted(r["hit"] for r in results) == [False, True, True, True]
    # every unit compiled exactly once (5 units of 3 pieces; the 2 ranges of a piece are one compile)
    assert sum(r["compiles"] for r in results) == 4 * 3
    assert len(CacheRoot(tmp_path).entry_dirs()) == 1
    open_entry(CacheRoot(tmp_path).entry_dirs()[0])


def test_two_processes_different_keys_one_cache_dir(tmp_path) -> None:
    a, b = _start_build(_config(20), tmp_path), _start_build(_config(24), tmp_path)
    results = [_finish(a), _finish(b)]
    assert len({r["entry"] for r in results}) == 2
    for path in CacheRoot(tmp_path).entry_dirs():
        open_entry(path)


LOAD_LOOP = """
import json, sys, torch, aotcache
from examples import tiny_llama
config, cache, wanted, most = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = tiny_llama.build(2)
ids = tiny_llama.example_inputs(6)[0]
with torch.no_grad():
    expected = model(ids)
counts = {"ok": 0, "miss": 0, "wrong": 0, "error": [], "rounds": 0}
# until both outcomes were seen often enough: how many of each a fixed number of rounds
# gets depends on how the CPU is shared with the clearing process
while min(counts["ok"], counts["miss"]) < wanted and counts["rounds"] < most:
    counts["rounds"] += 1
    try:
        loaded = aotcache.load(model, config, cache_dir=cache, strict=True)
        ok = (loaded(ids) - expected).abs().max() <= 1e-4
        counts["ok" if ok else "wrong"] += 1
    except aotcache.CacheMiss as exc:
        counts["miss"] += 1
        counts.setdefault("reasons", {}).setdefault(exc.reason, 0)
        counts["reasons"][exc.reason] += 1
    except Exception as exc:
        counts["error"].append(f"{type(exc).__name__}: {exc}")
print(json.dumps(counts))
"""


def test_clear_while_loading_gives_whole_entry_or_clean_miss(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    template = tmp_path / "template"
    copy_cache(tiny_entry.path, template)
    root = CacheRoot(cache)
    loader = subprocess.Popen(
        [sys.executable, "-c", LOAD_LOOP, json.dumps(TINY_CONFIG), str(cache), "10", "3000"],
        cwd=REPO,
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cycles = 0
    while loader.poll() is None:
        root.remove_entry(root.entry_dir(tiny_entry.entry_id))  # what `clear` does
        time.sleep(0.02)  # let some loads find it gone
        staging = root.new_staging_dir(tiny_entry.entry_id)
        staging.rmdir()
        copy_cache(template, staging)
        root.publish(staging, tiny_entry.entry_id)
        cycles += 1
        time.sleep(0.05)  # let some loads see the whole entry
    out, err = loader.communicate()
    assert loader.returncode == 0, err[-2000:]
    counts = last_json(out)
    assert counts["error"] == [] and counts["wrong"] == 0, counts
    assert counts["ok"] >= 10 and counts["miss"] >= 10, counts  # both happened, each many times
    assert counts["ok"] + counts["miss"] == counts["rounds"]
    reasons = counts.get("reasons", {})
    print(f"\nclear/re-publish cycles during {counts['rounds']} loads: {cycles}; ok {counts['ok']}, misses {reasons}")
    assert set(reasons) <= {"not-found"}  # a removed entry is a miss, never "corrupt"


# -- 3. corruption -------------------------------------------------------------------------


@pytest.mark.parametrize("entry_format", ["native", "inductor"])
def test_every_file_truncated_or_flipped_is_caught_before_anything_runs(
    entry_format: str, tiny_entry, inductor_entry, code_runs, tmp_path
) -> None:
    """Every file of an entry, truncated and bit-flipped at a random offset: verify fails
    naming it, and load raises CorruptEntry with nothing of the entry run (no Python
    executed, no kernel loaded, no Inductor artifact loaded). The spies are proven first
    on a good load, and at the end a precompile replaces a damaged entry."""
    built = tiny_entry if entry_format == "native" else inductor_entry
    config = {**TINY_CONFIG, "artifact_format": entry_format} if entry_format == "inductor" else TINY_CONFIG
    model = tiny_llama.build(2)
    assert aotcache.load(model, config, cache_dir=built.cache_dir, strict=True) is not None
    expected = {"exec", "dlopen"} if entry_format == "native" else {"exec", "inductor"}
    assert set(code_runs) == expected, code_runs  # the positive control: the spies see a good load
    code_runs.clear()
    rng = random.Random(7)
    files = sorted(p.relative_to(built.path) for p in built.path.rglob("*") if p.is_file())
    cache = tmp_path / "cache"
    for rel in files:
        for damage in ("truncate", "flip"):
            shutil.rmtree(cache, ignore_errors=True)
            copy_cache(built.cache_dir, cache)
            target = cache / "entries" / built.entry_id / rel
            data = bytearray(target.read_bytes())
            if damage == "truncate":
                del data[rng.randrange(len(data)) :]
            else:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            target.write_bytes(bytes(data))
            report = verify_entry(CacheRoot(cache), built.entry_id).to_json()
            failed = [c for c in report["checks"] if not c["ok"]]
            assert not report["ok"] and failed[0]["check"] in ("manifest", "files"), (rel, damage)
            assert rel.name == "manifest.json" or rel.as_posix() in json.dumps(failed)
            with pytest.raises(CorruptEntry):
                aotcache.load(model, config, cache_dir=cache, strict=True)
            assert aotcache.load(model, config, cache_dir=cache, strict=False) is None  # lenient: a clean miss
            assert code_runs == [], f"code ran before the {damage} of {rel} was caught"
    result = aotcache.precompile(tiny_llama.spec, config, cache_dir=cache)  # recompiling replaces the damage
    assert not result.hit and aotcache.load(model, config, cache_dir=cache, strict=True) is not None
    print(f"\n{entry_format}: every one of {len(files)} files truncated and bit-flipped; all caught")


def test_verify_cli_names_a_damaged_file(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "c")
    wrapper = next((cache / "entries" / tiny_entry.entry_id / "artifacts").iterdir())
    wrapper.write_text(wrapper.read_text().replace("def call(", "def call_(", 1))
    done = run_cli("verify", tiny_entry.entry_id, "--cache-dir", str(cache))
    assert done.returncode == 1 and f"artifacts/{wrapper.name}" in done.stdout and "FAIL" in done.stdout


# -- 5. hostile or odd input ----------------------------------------------------------------


@pytest.mark.parametrize("bad_path", ["../outside.py", "/etc/passwd", "kernels/../../x.so", "kernels//x.so"])
def test_manifest_paths_outside_the_entry_are_refused(bad_path: str, tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "c")
    entry = cache / "entries" / tiny_entry.entry_id

    def escape(manifest: aotcache.store.manifest.Manifest) -> None:
        record = manifest.files.pop(manifest.stitch)
        manifest.stitch = bad_path
        manifest.files[bad_path] = record

    rewrite_manifest(entry, escape)
    with pytest.raises(CorruptEntry, match=r"leaves the entry|unexpected structure"):
        aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=cache, strict=True)
    assert not verify_entry(CacheRoot(cache), tiny_entry.entry_id).to_json()["ok"]


def test_symlinks_inside_an_entry_are_refused(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "c")
    entry = cache / "entries" / tiny_entry.entry_id
    kernel = next((entry / "kernels").iterdir())
    outside = tmp_path / "elsewhere.so"
    outside.write_bytes(kernel.read_bytes())  # even identical bytes: a link is refused
    kernel.unlink()
    kernel.symlink_to(outside)
    with pytest.raises(CorruptEntry, match="symbolic link"):
        aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=cache, strict=True)
    (entry / "extra").symlink_to("/etc")
    report = verify_entry(CacheRoot(cache), tiny_entry.entry_id).to_json()
    names = [d["name"] for c in report["checks"] for d in c["differences"]]
    assert f"kernels/{kernel.name}" in names and "extra" in names


def test_newer_format_version_is_refused(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "c")
    entry = cache / "entries" / tiny_entry.entry_id
    rewrite_manifest(entry, lambda m: setattr(m, "format_version", 99))
    with pytest.raises(UnsupportedFormat, match="format version 99"):
        aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=cache, strict=True)
    done = run_cli("inspect-cache", "--cache-dir", str(cache), "--json")
    assert json.loads(done.stdout)["entries"][0]["status"] == "unsupported-format"


def test_missing_cache_dir_is_a_clean_miss_and_clear_exits_3(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(aotcache.EntryNotFound):
        aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=missing, strict=True)
    result = CliRunner().invoke(app, ["clear", "--all", "--cache-dir", str(missing)])
    assert result.exit_code == 3 and "does not exist" in result.stderr
    listing = CliRunner().invoke(app, ["inspect-cache", "--cache-dir", str(missing)])
    assert listing.exit_code == 3 and "does not exist" in listing.stderr
    assert not missing.exists()


def test_disk_full_during_writes_exits_3_and_loses_nothing(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "c")
    for point in ("kernel-write", "manifest-write"):
        done = run_cli(
            "precompile",
            "examples/tiny_llama.py:spec",
            "--compilation-config",
            json.dumps(_config(44)),
            "--cache-dir",
            str(cache),
            env={"AOTCACHE_FAILPOINT": f"enospc:{point}"},
        )
        assert done.returncode == 3, done.stderr
        assert "is full" in done.stderr and "Traceback" not in done.stderr
        assert list(CacheRoot(cache).staging_dirs()) == []  # the partial build was removed
        _assert_every_visible_entry_is_whole(cache, tiny_entry.entry_id)


def test_cache_dir_error_type_for_library_callers(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CacheDirError, match="is a file"):
        aotcache.precompile(tiny_llama.spec, TINY_CONFIG, cache_dir=blocker)


# -- 6. trust ----------------------------------------------------------------------------------


def _keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    (tmp_path / "release.key").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / "release.pub").write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "hmac.secret").write_bytes(os.urandom(32).hex().encode())
    return {
        "ed25519": (tmp_path / "release.key", tmp_path / "release.pub"),
        "hmac": (tmp_path / "hmac.secret", tmp_path / "hmac.secret"),
    }


@pytest.mark.parametrize("kind", ["ed25519", "hmac"])
def test_signed_entries_and_what_a_trusted_key_refuses(kind: str, tiny_entry, tmp_path, monkeypatch) -> None:
    sign_key, trusted = _keys(tmp_path)[kind]
    unsigned = copy_cache(tiny_entry.cache_dir, tmp_path / "unsigned")
    model = tiny_llama.build(2)
    with pytest.raises(SignatureError, match="not signed"):
        aotcache.load(model, TINY_CONFIG, cache_dir=unsigned, strict=True, trusted_key=trusted)
    signed = copy_cache(tiny_entry.cache_dir, tmp_path / "signed")
    result = CliRunner().invoke(
        app,
        [
            "precompile",
            "examples/tiny_llama.py:spec",
            "--compilation-config",
            json.dumps(TINY_CONFIG),
            "--cache-dir",
            str(signed),
            "--sign-key",
            str(sign_key),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "built signed entry" in result.output  # an unsigned entry is rebuilt to be signed, never signed as found
    entry = signed / "entries" / tiny_entry.entry_id
    assert (entry / "manifest.sig").exists()
    monkeypatch.setenv("AOTCACHE_TRUSTED_KEY", str(trusted))
    assert aotcache.load(model, TINY_CONFIG, cache_dir=signed, strict=True) is not None
    verified = CliRunner().invoke(app, ["verify", tiny_entry.entry_id, "--cache-dir", str(signed), "--strict"])
    assert verified.exit_code == 0, verified.output
    # the manifest changed after signing (a valid checksum does not help)
    tampered = copy_cache(signed, tmp_path / "tampered")
    rewrite_manifest(tampered / "entries" / tiny_entry.entry_id, lambda m: m.stats.update(note="changed"))
    with pytest.raises(SignatureError, match="changed after signing"):
        aotcache.load(model, TINY_CONFIG, cache_dir=tampered, strict=True)
    # an artifact changed after signing
    swapped = copy_cache(signed, tmp_path / "swapped")
    kernel = next((swapped / "entries" / tiny_entry.entry_id / "kernels").iterdir())
    kernel.write_bytes(kernel.read_bytes() + b"\0")
    with pytest.raises(CorruptEntry):
        aotcache.load(model, TINY_CONFIG, cache_dir=swapped, strict=True)
    # another key
    other = _keys(tmp_path / "other" if (tmp_path / "other").mkdir() is None else tmp_path)[kind][1]
    with pytest.raises(SignatureError, match="another key"):
        aotcache.load(model, TINY_CONFIG, cache_dir=signed, strict=True, trusted_key=other)
    refused = CliRunner().invoke(app, ["verify", tiny_entry.entry_id, "--cache-dir", str(tampered), "--json"])
    signature = next(c for c in json.loads(refused.stdout)["checks"] if c["check"] == "signature")
    assert refused.exit_code == 1 and not signature["ok"]


def test_the_next_build_of_a_key_removes_what_a_killed_build_of_it_left(tmp_path) -> None:
    """A build killed at its kernel writes leaves a staging dir (incomplete); the next
    precompile of the same key, once it holds the key's lock, removes it (its process is
    gone), with no `clear --broken`."""
    cache = tmp_path / "cache"
    config = _config(48)
    killed = _start_build(config, cache, env={"AOTCACHE_FAILPOINT": "kernel-write"})
    killed.communicate(timeout=600)
    assert killed.returncode == -signal.SIGKILL
    left = CacheRoot(cache).staging_dirs()
    assert left and all(staging_is_abandoned(p) for p in left)
    again = _finish(_start_build(config, cache))
    assert again["hit"] is False and not CacheRoot(cache).staging_dirs()
    assert all(r.status == "ok" for r in scan(CacheRoot(cache)))
