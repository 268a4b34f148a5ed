"""A hostile or damaged cache dir, and bad input: the guarantees of README's table,
class by class (reliability round 2). Real processes, real entries, real mounts.

1. Nothing outside the cache dir is ever read as an entry, moved or deleted.
2. Nothing from an entry runs before it passed every check, `verify --run` included.
3. A damaged manifest is a miss, never a crash or a hang.
4. Every OS error has its documented exit code.
5. Bad input is exit 2 with one line naming the cause.
6. The precompile self-check names what went wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _support import (
    TINY_CONFIG,
    copy_cache,
    last_json,
    rewrite_manifest_body,
    run_argv,
    run_cli,
    tree_snapshot,
)
from typer.testing import CliRunner

import aotcache
from aotcache.cli.app import app
from aotcache.errors import CorruptEntry
from aotcache.store.clear import clear, select
from aotcache.store.root import FOLDERS, CacheRoot
from aotcache.store.scan import scan
from examples import tiny_llama

pytestmark = pytest.mark.fault

SMALL = "tests/hostile_targets.py:small"


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _one_line_error(result: Any, code: int, needle: str) -> None:
    stderr = result.stderr
    returned = result.exit_code if hasattr(result, "exit_code") else result.returncode
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert returned == code, (returned, stderr)
    assert len(lines) == 1 and needle in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def small_entry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An eager-backend entry (no Inductor: built in a second) of a small model."""
    cache = tmp_path_factory.mktemp("small")
    result = aotcache.precompile(SMALL, cache_dir=cache)
    return cache, result.entry_id


def _load_small(cache: Path, strict: bool = True) -> Any:
    from aotcache.target import as_spec, import_target

    spec = as_spec(import_target(SMALL), origin=SMALL)
    return aotcache.load(spec.build_model(), spec.config, cache_dir=cache, strict=strict)


# -- 1. nothing outside the cache dir ---------------------------------------------------------


def _outside_copy(cache: Path, folder: str, outside: Path, entry_id: str) -> None:
    """Give `outside` content that a follower of the link would read or delete."""
    source = cache / folder
    if source.is_dir() and any(source.iterdir()):
        shutil.copytree(source, outside)
    else:
        outside.mkdir()
    (outside / f"{entry_id}.lock").write_text("not aotcache's")
    (outside / f"{entry_id}.1.abcd").mkdir()
    (outside / f"{entry_id}.1.abcd" / "precious.txt").write_text("precious")
    (outside / "precious.txt").write_text("precious")


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_symlinked_root_folder_is_never_followed(folder: str, tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    outside = tmp_path / "outside"
    _outside_copy(cache, folder, outside, tiny_entry.entry_id)
    shutil.rmtree(cache / folder, ignore_errors=True)
    (cache / folder).symlink_to(outside, target_is_directory=True)
    before = tree_snapshot(outside)

    listed = _cli("inspect-cache", "--cache-dir", str(cache), "--json")
    rows = {e["key"]: e for e in json.loads(listed.stdout)["entries"]}
    assert rows[folder]["status"] == "corrupt" and "never followed" in rows[folder]["problems"][0]["message"]
    _one_line_error(_cli("precompile", SMALL, "--cache-dir", str(cache)), 3, f"{folder}/ is a symbolic link")
    aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=cache)  # a miss or a hit; marks usage
    for selection in (["--stale"], ["--older-than", "0s"], ["--max-size", "0"], ["--broken"], ["--all"]):
        done = _cli("clear", *selection, "--yes", "--cache-dir", str(cache), "--json")
        if folder == "trash" and selection[0] in ("--older-than", "--max-size"):
            # entries are deleted through trash/: not while it is a link (clear --broken repairs it)
            _one_line_error(done, 3, "trash is a symbolic link")
        else:
            assert done.exit_code == 0, (selection, done.output)
    assert tree_snapshot(outside) == before, "something outside the cache dir changed"
    assert not (cache / folder).is_symlink()  # the link itself went (a real folder may be made anew)


def test_a_symlinked_entry_is_corrupt_and_never_read_through(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    entry = cache / "entries" / tiny_entry.entry_id
    outside = tmp_path / "outside-entry"
    shutil.move(str(entry), outside)
    entry.symlink_to(outside, target_is_directory=True)
    before = tree_snapshot(outside)
    with pytest.raises(CorruptEntry, match="symbolic link"):
        aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=cache, strict=True)
    verified = _cli("verify", tiny_entry.entry_id, "--cache-dir", str(cache), "--json")
    assert verified.exit_code == 1 and "symbolic link" in verified.stdout
    assert [r.status for r in scan(CacheRoot(cache))] == ["corrupt"]
    cleared = _cli("clear", "--broken", "--cache-dir", str(cache), "--json")
    assert cleared.exit_code == 0 and json.loads(cleared.stdout)["removed"][0]["key"] == tiny_entry.entry_id
    assert not entry.is_symlink() and tree_snapshot(outside) == before


def test_swapped_for_a_link_between_listing_and_removal(tiny_entry, tmp_path) -> None:
    """The listing sees real directories; by the time clear acts, an attacker swapped
    the entry (then the whole entries/ folder) for links to data outside."""
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    root = CacheRoot(cache)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("precious")
    before = tree_snapshot(outside)
    chosen, kept, _ = select(root, all_entries=True)
    entry = cache / "entries" / tiny_entry.entry_id
    shutil.rmtree(entry)
    entry.symlink_to(outside, target_is_directory=True)
    report = clear(root, chosen, kept, dry_run=False)
    assert report.errors == [] and tree_snapshot(outside) == before and not entry.is_symlink()
    # the folder itself swapped after the listing
    cache2 = copy_cache(tiny_entry.cache_dir, tmp_path / "cache2")
    chosen, kept, _ = select(CacheRoot(cache2), all_entries=True)
    shutil.move(str(cache2 / "entries"), tmp_path / "moved-entries")
    (cache2 / "entries").symlink_to(outside, target_is_directory=True)
    report = clear(CacheRoot(cache2), chosen, kept, dry_run=False)
    assert report.errors and "symbolic link" in report.errors[0]
    assert tree_snapshot(outside) == before


def test_clear_removes_only_the_lock_files_aotcache_made(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    locks = cache / "locks"
    locks.mkdir(exist_ok=True)
    for existing in locks.iterdir():
        existing.unlink()
    idle = locks / f"{'a' * 16}-{'b' * 16}.lock"
    idle.write_text("")
    outside = tmp_path / "victim.txt"
    outside.write_text("precious")
    keep = {
        "notes.txt": lambda p: p.write_text("mine"),
        f"{'c' * 16}-{'d' * 16}.lock": lambda p: p.mkdir(),
        f"{'e' * 16}-{'f' * 16}.lock": lambda p: p.symlink_to(outside),
        f"{'1' * 16}-{'2' * 16}.lock": lambda p: os.mkfifo(p),
    }
    for name, make in keep.items():
        make(locks / name)
    done = _cli("clear", "--stale", "--cache-dir", str(cache), "--json")
    assert done.exit_code == 0 and json.loads(done.stdout)["locks_removed"] == 1
    assert not idle.exists() and all(os.path.lexists(locks / name) for name in keep)
    assert outside.read_text() == "precious"


def test_bytes_freed_are_the_bytes_really_freed(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    entry = cache / "entries" / tiny_entry.entry_id
    size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
    done = _cli("clear", tiny_entry.entry_id, "--cache-dir", str(cache), "--json")
    assert done.exit_code == 0 and json.loads(done.stdout)["freed_bytes"] == size and not entry.exists()


# -- 2. nothing runs before every check passed ---------------------------------------------


def test_verify_run_never_starts_for_an_entry_that_failed_a_check(tiny_entry, small_entry, tmp_path) -> None:
    """An attacker points the manifest's TARGET at code of theirs (checksum valid, no
    signature): with a trusted key the signature check fails and nothing is imported;
    without a key, a damaged file fails its check and nothing is imported either."""
    key = tmp_path / "hmac.secret"
    key.write_bytes(os.urandom(32).hex().encode())
    marker = tmp_path / "imported"
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    entry = cache / "entries" / tiny_entry.entry_id
    rewrite_manifest_body(entry, lambda body: body["recorded"].update(target=SMALL))
    env = {"AOTCACHE_TEST_MARKER": str(marker)}
    args = ("verify", tiny_entry.entry_id, "--run", "--cache-dir", str(cache), "--json")
    refused = run_cli(*args, "--trusted-key", str(key), env=env)
    report = json.loads(refused.stdout)
    assert refused.returncode == 1 and report["run"]["started"] is False and not marker.exists()
    kernel = next((entry / "kernels").iterdir())
    kernel.write_bytes(kernel.read_bytes()[:-1])
    refused = run_cli(*args, env=env)
    assert refused.returncode == 1 and json.loads(refused.stdout)["run"]["started"] is False
    assert not marker.exists(), "code named by an entry that failed its checks was imported"


def test_verify_run_child_checks_with_the_same_key_and_strictness(small_entry, tmp_path) -> None:
    key = tmp_path / "hmac.secret"
    key.write_bytes(os.urandom(32).hex().encode())
    cache = copy_cache(small_entry[0], tmp_path / "cache")
    signed = run_cli("precompile", SMALL, "--cache-dir", str(cache), "--sign-key", str(key), "--json")
    assert signed.returncode == 0, signed.stderr
    entry = json.loads(signed.stdout)["entry"]
    done = run_cli("verify", entry, "--run", "--strict", "--trusted-key", str(key), "--cache-dir", str(cache), "--json")
    run = json.loads(done.stdout)["run"]
    assert done.returncode == 0 and run["started"] and run["ok"], done.stdout + done.stderr
    assert run["signature_checked"] is True and run["strict"] is True


def test_the_verify_run_child_checks_again_before_importing_anything(small_entry, tmp_path) -> None:
    """The child of `verify --run`, started on its own as the parent starts it: with
    --strict, an unsigned entry (a warning) fails its own checks and the TARGET is never
    imported; without --strict the same run imports it (the marker works) and passes."""
    marker = tmp_path / "imported"
    cache, entry = small_entry
    config = json.loads((cache / "entries" / entry / "manifest.json").read_bytes())["config"]
    child = [sys.executable, "-m", "aotcache.verify.child", SMALL, "--cache-dir", str(cache)]
    child += ["--config-json", json.dumps(config), "--entry", entry]
    env = {"AOTCACHE_TEST_MARKER": str(marker)}
    refused = run_argv([*child, "--strict"], env=env)
    assert refused.returncode == 1 and "did not pass its checks" in json.loads(refused.stdout)["error"]
    assert not marker.exists(), "the child imported the TARGET before checking the entry"
    passed = run_argv(child, env=env)
    assert passed.returncode == 0 and json.loads(passed.stdout)["ok"], passed.stdout + passed.stderr
    assert marker.exists()


def test_sign_key_on_an_unsigned_entry_rebuilds_it_never_signs_what_it_found(small_entry, tmp_path) -> None:
    """Anyone who can write to the cache dir can alter an unsigned entry consistently
    (files and manifest agree); signing it as found would vouch for their code."""
    import hashlib

    cache = copy_cache(small_entry[0], tmp_path / "cache")
    entry = cache / "entries" / small_entry[1]
    piece = next((entry / "pieces").iterdir())
    original = piece.read_bytes()
    evil = original + b"\nEVIL = True\n"
    piece.write_bytes(evil)
    rel = f"pieces/{piece.name}"
    digest = hashlib.sha256(evil).hexdigest()
    rewrite_manifest_body(entry, lambda body: body["files"][rel].update(sha256=digest, bytes=len(evil)))
    assert _load_small(cache) is not None  # consistent: only a signature could tell
    key = tmp_path / "hmac.secret"
    key.write_bytes(os.urandom(32).hex().encode())
    signed = run_cli("precompile", SMALL, "--cache-dir", str(cache), "--sign-key", str(key), "--json")
    summary = json.loads(signed.stdout)
    assert signed.returncode == 0 and summary["hit"] is False, signed.stderr
    assert piece.read_bytes() == original and (entry / "manifest.sig").exists()
    again = run_cli("precompile", SMALL, "--cache-dir", str(cache), "--sign-key", str(key), "--json")
    assert json.loads(again.stdout)["hit"] is True  # signed by this key: a hit


# -- 3. a damaged manifest is a miss ------------------------------------------------------------


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _first(kind: str) -> Any:
    return lambda body: next(i for i in body["graph_inputs"] if i["kind"] == kind)


MUTATIONS: dict[str, Any] = {
    "unit range of the wrong type": lambda b: b["units"][0].update(range="1-8"),
    "absurd unit range": lambda b: b["units"][0].update(range=[1, 10**30]),
    "recorded threads not a number": lambda b: b["recorded"].update(threads="many"),
    "recorded cpu flags not a list": lambda b: b["recorded"].update(cpu_flags=5),
    "runtime versions not lists": lambda b: b["recorded"].update(runtime_versions={"libstdc++.so.6": "GLIBCXX"}),
    "input spec dtype unknown": lambda b: b["input_spec"]["args"][0].update(dtype="float33"),
    "input spec field missing": lambda b: b["input_spec"].pop("size_arg"),
    "graph input shape an object": lambda b: b["graph_inputs"][0].update(shape={"0": 1}),
    "graph input bound to no attribute": lambda b: _first("parameter")(b).update(source="no.such.attr"),
    "nested too deep": lambda b: b["stats"].update(deep=_deep(200)),
    "not a finite number": lambda b: b["stats"].update(x=float("nan")),
    "invalid config": lambda b: b["config"].update(max_num_batched_tokens=-1),
    "unreadable output structure": lambda b: b.update(output_spec="not a treespec"),
    "unknown artifact format": lambda b: next(iter(b["artifacts"].values())).update(format="pickle"),
    "piece kind of the wrong type": lambda b: next(iter(b["pieces"].values())).update(kind=7),
    "field missing": lambda b: b.pop("recorded"),
    "factor of the wrong shape": lambda b: b["lookup"].append(["name", "value"]),
    "unit without its artifacts": lambda b: b["units"][0].update(artifacts={}),
}


def _broken_cache(tiny_entry: Any, small_entry: tuple[Path, str], target: Path) -> Path:
    cache = copy_cache(tiny_entry.cache_dir, target)
    shutil.copytree(small_entry[0] / "entries" / small_entry[1], cache / "entries" / small_entry[1])
    return cache


def _assert_a_clean_miss(cache: Path, tiny_entry: Any, small_entry: tuple[Path, str]) -> None:
    model = tiny_llama.build(2)
    with pytest.raises(CorruptEntry):
        aotcache.load(model, TINY_CONFIG, cache_dir=cache, strict=True)
    assert aotcache.load(model, TINY_CONFIG, cache_dir=cache) is None
    statuses = {r.entry_id: r.status for r in scan(CacheRoot(cache))}
    assert statuses == {tiny_entry.entry_id: "corrupt", small_entry[1]: "ok"}
    assert _load_small(cache) is not None  # one bad entry blocks nobody else
    chosen, kept, _ = select(CacheRoot(cache), broken=True)
    assert [r.entry_id for r, _ in chosen] == [tiny_entry.entry_id] and kept == 1


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_damaged_manifest_is_a_miss_never_a_crash(name: str, tiny_entry, small_entry, tmp_path) -> None:
    cache = _broken_cache(tiny_entry, small_entry, tmp_path / "cache")
    rewrite_manifest_body(cache / "entries" / tiny_entry.entry_id, MUTATIONS[name])
    _assert_a_clean_miss(cache, tiny_entry, small_entry)


@pytest.mark.parametrize("damage", ["huge number", "recursion bomb", "oversized"])
def test_raw_manifest_bombs_are_misses(damage: str, tiny_entry, small_entry, tmp_path) -> None:
    cache = _broken_cache(tiny_entry, small_entry, tmp_path / "cache")
    entry = cache / "entries" / tiny_entry.entry_id
    if damage == "huge number":
        limit = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(0)
        try:
            rewrite_manifest_body(entry, lambda b: b["stats"].update(x=10**5000))
        finally:
            sys.set_int_max_str_digits(limit)
    elif damage == "recursion bomb":
        (entry / "manifest.json").write_bytes(b"[" * 200_000 + b"]" * 200_000)
    else:
        rewrite_manifest_body(entry, lambda b: b["stats"].update(pad="x" * (17 << 20)))
    _assert_a_clean_miss(cache, tiny_entry, small_entry)


SPECIAL_FILES_SCRIPT = """
import json, sys, aotcache
from examples import tiny_llama
from aotcache.verify.report import verify_entry
from aotcache.store.root import CacheRoot
from aotcache.store.scan import scan
config, entry, key, caches = json.loads(sys.argv[1])
out = {}
for name, cache in caches.items():
    loaded = aotcache.load(tiny_llama.build(2), config, cache_dir=cache, trusted_key=key if "sig" in name else None)
    report = verify_entry(CacheRoot(cache), entry, verify_signature=None).to_json()
    out[name] = [loaded is None, report["ok"], [r.status for r in scan(CacheRoot(cache))]]
print(json.dumps(out))
"""


def _make_special(path: Path, kind: str) -> None:
    if path.exists():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero: endless bytes
    else:
        here = os.getcwd()
        os.chdir(path.parent)  # a socket path must be short
        try:
            socket.socket(socket.AF_UNIX).bind(path.name)
        finally:
            os.chdir(here)


def test_special_files_are_refused_without_blocking(tiny_entry, tmp_path) -> None:
    key = tmp_path / "hmac.secret"
    key.write_bytes(os.urandom(32).hex().encode())
    caches = {}
    for where in ("manifest.json", "kernel", "manifest.sig"):
        for kind in ("fifo", "device", "socket"):
            name = f"{where}-{kind}"
            cache = copy_cache(tiny_entry.cache_dir, tmp_path / name)
            entry = cache / "entries" / tiny_entry.entry_id
            target = next((entry / "kernels").iterdir()) if where == "kernel" else entry / where
            _make_special(target, kind)
            caches[name] = str(cache)
    arguments = json.dumps([TINY_CONFIG, tiny_entry.entry_id, str(key), caches])
    # a blocking open or an endless read would end in the timeout
    done = run_argv([sys.executable, "-c", SPECIAL_FILES_SCRIPT, arguments], timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, (missed, verified, statuses) in last_json(done.stdout).items():
        assert missed and not verified, name
        assert statuses == ["corrupt"], name
    cleared = _cli("clear", "--broken", "--cache-dir", caches["kernel-fifo"], "--json")
    assert cleared.exit_code == 0 and len(json.loads(cleared.stdout)["removed"]) == 1


# -- 4. every OS error has its exit code ----------------------------------------------------


def _read_only(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with the cache dir as a real read-only bind mount (a private mount
    namespace: nothing outside this command sees it)."""
    exe = Path(sys.executable).with_name("aotcache")
    command = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    return run_argv(["unshare", "-m", "sh", "-c", command, "sh", str(cache), str(exe), *args])


def test_read_only_mount_exits_3_and_loses_nothing(tiny_entry, tmp_path) -> None:
    cache = copy_cache(tiny_entry.cache_dir, tmp_path / "cache")
    before = tree_snapshot(cache)
    done = _read_only(cache, "clear", "--all", "--yes", "--cache-dir", str(cache), "--json")
    _one_line_error(done, 3, "could not remove")
    # what was really removed: nothing; every entry is kept and listed as not removed
    cleared = json.loads(done.stdout)
    entries = len(list((cache / "entries").iterdir()))
    assert cleared["freed_bytes"] == 0 and cleared["removed"] == [] and cleared["kept"] == entries
    assert len([r for r in cleared["not_removed"] if r["error"]]) >= entries
    said = _read_only(cache, "clear", "--all", "--yes", "--cache-dir", str(cache))
    assert f"removed 0 item(s), freed 0 B; {entries} entr" in said.stdout and "could not be removed" in said.stdout
    built = _read_only(cache, "precompile", SMALL, "--cache-dir", str(cache))
    _one_line_error(built, 3, "not writable")
    # a precompile that is a hit writes nothing, so it works on the read-only cache (exit 0)
    target, config = "examples/tiny_llama.py:spec", json.dumps(TINY_CONFIG)
    hit = _read_only(cache, "precompile", target, "-O", config, "--cache-dir", str(cache), "--json")
    assert hit.returncode == 0 and json.loads(hit.stdout)["hit"] is True, hit.stderr[-2000:]
    assert tree_snapshot(cache) == before
    assert aotcache.load(tiny_llama.build(2), TINY_CONFIG, cache_dir=cache, strict=True) is not None


@pytest.mark.parametrize(
    "args",
    [
        ["precompile", SMALL],
        ["inspect-cache"],
        ["inspect-cache", "0123"],
        ["verify", "0123"],
        ["verify", SMALL],
        ["clear", "--all", "--yes"],
    ],
)
def test_a_cache_dir_that_is_a_file_exits_3(args: list[str], tmp_path) -> None:
    cache = tmp_path / "cache"
    cache.write_text("not a directory")
    _one_line_error(_cli(*args, "--cache-dir", str(cache)), 3, "is a file, not a directory")


def test_disk_full_while_signing_exits_3_and_leaves_nothing(small_entry, tmp_path) -> None:
    cache = copy_cache(small_entry[0], tmp_path / "cache")
    key = tmp_path / "hmac.secret"
    key.write_bytes(os.urandom(32).hex().encode())
    done = run_cli(
        "precompile", SMALL, "--cache-dir", str(cache), "--sign-key", str(key),
        env={"AOTCACHE_FAILPOINT": "enospc:signature-write"},
    )  # fmt: skip
    _one_line_error(done, 3, "is full")
    assert CacheRoot(cache).staging_dirs() == []
    assert _load_small(cache) is not None  # the earlier entry is intact


def test_leftovers_of_failed_writes_are_shown_and_swept(small_entry, tmp_path) -> None:
    cache = copy_cache(small_entry[0], tmp_path / "cache")
    dead = subprocess.Popen(["true"])
    dead.wait()
    staging = cache / "staging"
    (staging / f".{small_entry[1]}.{dead.pid}.sig").write_bytes(b"half")
    (staging / f".probe.{dead.pid}.abcd1234").write_bytes(b"")
    listed = json.loads(_cli("inspect-cache", "--cache-dir", str(cache), "--json").stdout)["entries"]
    assert sorted(e["status"] for e in listed) == ["incomplete", "incomplete", "ok"]
    assert _cli("clear", "--broken", "--cache-dir", str(cache)).exit_code == 0
    assert list(staging.iterdir()) == []


# -- 5. bad input is exit 2 with one line -----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["precompile", "tests/hostile_targets.py:broken_factory"], "the model factory raised RuntimeError"),
        (["precompile", "tests/hostile_targets.py:factory_that_raises"], "raised OSError: config.json not found"),
        (["precompile", "tests/hostile_targets.py:broken_inputs"], "example_inputs(8) raised KeyError"),
        (["precompile", "tests/hostile_targets.py:refuses"], "Refuses.forward raised ValueError: expected 5 features"),
        (["inspect-cache", "--sort", "bogus"], "invalid sort='bogus'"),
        (["precompile", SMALL, "--splitting-ops", "nosuch::op", "--strict"], "invalid splitting_ops='nosuch::op'"),
    ],
)
def test_bad_input_is_exit_2_with_one_line(args: list[str], needle: str, tmp_path) -> None:
    _one_line_error(_cli(*args, "--cache-dir", str(tmp_path / "cache")), 2, needle)


def test_a_custom_op_splitting_op_is_warned_about_with_the_fix(tmp_path) -> None:
    done = run_cli("precompile", "tests/hostile_targets.py:with_custom_op", "--cache-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "is a torch.library.custom_op" in done.stderr and "torch.library.Library" in done.stderr


def test_a_splitting_op_forward_never_calls_warns(tmp_path) -> None:
    done = run_cli("precompile", SMALL, "--splitting-ops", "aten::sin", "--cache-dir", str(tmp_path))
    assert done.returncode == 0 and "splitting op aten::sin" in done.stderr and "never calls it" in done.stderr


def test_a_splitting_op_torch_does_not_know_is_a_config_error_with_the_nearest_name(tmp_path) -> None:
    """A typo is exit 2 before anything is traced or built, never an unsplit entry."""
    done = run_cli("precompile", SMALL, "--splitting-ops", "aten::sni", "--cache-dir", str(tmp_path))
    _one_line_error(done, 2, "invalid splitting_ops='aten::sni': an op registered with torch")
    assert "did you mean aten::sin?" in done.stderr
    assert not (tmp_path / "entries").exists() or not any((tmp_path / "entries").iterdir())


# -- 6. the self-check names what went wrong ---------------------------------------------------


def test_self_check_names_piece_unit_size_and_the_likely_cause(tmp_path) -> None:
    done = run_cli("precompile", "tests/hostile_targets.py:lying", "--cache-dir", str(tmp_path))
    _one_line_error(done, 1, "self-check failed: running the stored artifact of submod_0")
    assert "at size" in done.stderr and "AssertionError" in done.stderr and "torch.library.opcheck" in done.stderr
    assert not any((tmp_path / "entries").iterdir())


def test_a_trace_error_is_one_line_and_torchs_own_log_only_with_verbose(tmp_path) -> None:
    """A shape mistake makes torch's fake tensors log a ~25-line ERROR traceback through
    torch's own handler (a real stderr, which typer's runner does not capture): the
    console script must print only the one-line error, and torch's log from -v on."""
    args = ("precompile", "tests/hostile_targets.py:shape_bug", "--cache-dir", str(tmp_path))
    done = run_cli(*args)
    _one_line_error(done, 2, "ShapeBug.forward raised RuntimeError: ")  # torch 2.15 prefixes its text with "mm: "
    assert "mat1 and mat2 shapes cannot be multiplied" in done.stderr
    assert "fake_tensor" not in done.stderr and len(done.stderr.splitlines()) <= 2, done.stderr
    verbose = run_cli(*args, "-v")
    assert verbose.returncode == 2 and "failed while attempting to run meta for aten.mm" in verbose.stderr
