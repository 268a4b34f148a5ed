"""A hostile registry or bucket: it can neither hang a replica, leak credentials, write
outside the cache dir, nor forge output. A registry served by the test itself on
loopback (a proxy in front of the real one that misbehaves on purpose) and hand-made
file:// remotes; each class of attack refused with its exit code (3 for a remote that
misbehaves, 1 for content that fails a check) and one line, within its deadline."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _hostile_registry import (
    Handler,
    challenge,
    drip,
    endless,
    gzip_bomb,
    hostile_registry,
    make_test_ca,
    matching,
    recorder,
    redirect,
)
from _servers import registry
from _support import REPO, TINY_CONFIG, python_env, run_argv, run_cli, run_python, tree_snapshot

from aotcache.errors import RemoteError
from aotcache.fleet import http
from aotcache.fleet.connect import open_remote
from aotcache.fleet.pull import pull
from aotcache.fleet.remote import MAX_CANDIDATES
from aotcache.store.root import CacheRoot

pytestmark = pytest.mark.fault

BLOB_GET = r"/v2/aot/blobs/sha256:"
NOWHERE = "10.255.255.1:9"  # not loopback: the policy refuses it before any connection


@pytest.fixture(scope="module")
def pushed(tiny_entry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny entry pushed to a real registry: yields its host:port."""
    with registry(tmp_path_factory.mktemp("registry")) as (host, _):
        done = run_cli("push", f"oci://{host}/aot", "--cache-dir", str(tiny_entry.cache_dir), "-q")
        assert done.returncode == 0, done.stderr
        yield host


@pytest.fixture
def proxy(pushed) -> Iterator[Any]:
    with hostile_registry(pushed) as state:
        yield state


def _pull(remote: str, cache: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    return run_cli("pull", remote, "--cache-dir", str(cache), "--json", *args, env=env, timeout=timeout)


def _refused(done: Any, code: int, needle: str) -> None:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == code, done.stderr[-2000:]
    assert len(errors) == 1 and needle in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def _nothing_published(cache: Path) -> None:
    assert CacheRoot(cache).entry_dirs() == []


# -- 1. redirects and credentials ---------------------------------------------------------------


def test_a_blob_redirected_to_plain_http_on_another_host_is_refused(proxy, tmp_path) -> None:
    proxy.rules.append(matching("GET", BLOB_GET, redirect(f"http://{NOWHERE}/blob")))
    done = _pull(f"oci://127.0.0.1:{proxy.port}/aot", tmp_path / "c")
    _refused(done, 3, "refused a redirect to plain http off loopback")
    _nothing_published(tmp_path / "c")


def test_the_redirect_policy() -> None:
    refusal = http.redirect_refusal
    assert refusal("https://r.io/v2/x", "https://cdn.example.com/b", insecure=False, has_body=False) is None
    assert refusal("https://r.io/v2/x", "https://r.io/v2/y", insecure=False, has_body=True) is None
    assert "https to plain http" in refusal("https://r.io/v2/x", "http://r.io:80/b", insecure=True, has_body=False)
    assert "off loopback" in refusal("http://127.0.0.1:5/v2", "http://10.0.0.1/b", insecure=False, has_body=False)
    assert refusal("http://127.0.0.1:5/v2", "http://10.0.0.1/b", insecure=True, has_body=False) is None
    assert "upload to another origin" in refusal("https://r.io/a", "https://s3.io/b", insecure=False, has_body=True)
    assert "file" in refusal("https://r.io/a", "file:///etc/passwd", insecure=False, has_body=False)


def test_an_upload_redirected_to_another_host_sends_nothing_there(tiny_entry, proxy) -> None:
    with recorder(lambda h: h.reply(201)) as other:
        proxy.rules.append(matching("PUT", r"/blobs/uploads/", redirect(f"{other.url}/upload")))
        done = run_cli("push", f"oci://127.0.0.1:{proxy.port}/other", "--cache-dir", str(tiny_entry.cache_dir))
        _refused(done, 3, "refused a redirect of an upload to another origin")
        assert other.seen == []


def test_credentials_never_go_to_a_token_service_over_plain_http(proxy, tmp_path) -> None:
    env = {"AOTCACHE_OCI_USERNAME": "ci", "AOTCACHE_OCI_PASSWORD": "s3cret"}
    proxy.rules.append(challenge(f"http://{NOWHERE}/token"))
    done = _pull(f"oci://127.0.0.1:{proxy.port}/aot", tmp_path / "c", env=env)
    _refused(done, 3, "is not https; no credentials are sent there")
    assert "s3cret" not in done.stderr + done.stdout


def test_a_redirect_to_https_storage_on_another_host_still_pulls_without_credentials(pushed, proxy, tmp_path) -> None:
    """Real registries send blob GETs to their object storage: followed to https, with
    the test's own CA; the registry's Authorization (a real bearer token here: the
    registry challenges every request, its token service answers) never goes along."""
    ca, tls = make_test_ca(tmp_path)

    def storage(handler: Handler) -> None:
        blob = handler.path.rsplit("/", 1)[-1]
        handler.reply(200, httpx.get(f"http://{pushed}/v2/aot/blobs/{blob}").content)

    token = lambda h: h.reply(200, b'{"token": "registry-token"}', {"Content-Type": "application/json"})  # noqa: E731
    with recorder(storage, tls=tls) as cdn, recorder(token) as tokens:
        proxy.rules.append(challenge(f"{tokens.url}/token"))
        proxy.rules.append(
            matching(
                "GET", BLOB_GET, lambda h: h.reply(307, headers={"Location": f"{cdn.url}/{h.path.split('/')[-1]}"})
            )
        )
        env = {"SSL_CERT_FILE": str(ca), "AOTCACHE_OCI_USERNAME": "ci", "AOTCACHE_OCI_PASSWORD": "s3cret"}
        done = _pull(f"oci://127.0.0.1:{proxy.port}/aot", tmp_path / "c", env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert tokens.seen and all(s.headers.get("authorization", "").startswith("Basic ") for s in tokens.seen)
        assert any(s.headers.get("authorization") == "Bearer registry-token" for s in proxy.seen)  # sent where due
        assert cdn.seen and all("authorization" not in s.headers for s in cdn.seen)
    assert len(CacheRoot(tmp_path / "c").entry_dirs()) == 1


def test_an_authorization_header_passed_by_hand_is_never_sent() -> None:
    """Credentials have one way out, `send`'s own per-hop attachment: an Authorization in
    `headers` is dropped, whatever the origin."""
    with recorder(lambda h: h.reply(200)) as other:
        session = http.Session(other.url, insecure=False, deadline=http.Deadline(30))
        try:
            session.send("GET", f"{other.url}/x", headers={"Authorization": "Basic c2VjcmV0"}).close()
            session.send("GET", f"{other.url}/y", authorization="Bearer ours").close()
        finally:
            session.close()
    assert [s.headers.get("authorization") for s in other.seen] == [None, "Bearer ours"]


def test_a_token_service_that_redirects_elsewhere_gets_the_credentials_no_further(proxy, tmp_path) -> None:
    """The registry's Basic credentials go to the token service it names, and not along
    that service's redirect to another origin, however they were attached."""
    elsewhere = lambda h: h.reply(200, b'{"token": "stolen"}', {"Content-Type": "application/json"})  # noqa: E731
    with recorder(elsewhere) as third:
        with recorder(lambda h: h.reply(302, headers={"Location": f"{third.url}/token"})) as tokens:
            proxy.rules.append(challenge(f"{tokens.url}/token"))
            env = {"AOTCACHE_OCI_USERNAME": "ci", "AOTCACHE_OCI_PASSWORD": "s3cret"}
            _pull(f"oci://127.0.0.1:{proxy.port}/aot", tmp_path / "c", env=env)
            assert tokens.seen and tokens.seen[0].headers.get("authorization", "").startswith("Basic ")
        assert third.seen, "the token service's redirect was not followed"
        assert all("authorization" not in s.headers for s in third.seen), third.seen


# -- 2. bounded: bodies, encodings, time, requests ----------------------------------------------


PEAK_MEMORY = """
import atexit, sys
def report():
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print("PEAK-KB", peak.split()[1], file=sys.stderr)
atexit.register(report)
from aotcache.cli.app import main
sys.argv = ["aotcache", *sys.argv[1:]]
main()
"""


def _peak_memory_mb(*args: str) -> tuple[int, float]:
    """(exit code, peak resident memory in MiB) of an aotcache command, read by the
    process itself (VmHWM: its own, from its exec on)."""
    done = run_argv([sys.executable, "-c", PEAK_MEMORY, *args], timeout=120)
    peak = next(line for line in done.stderr.splitlines() if line.startswith("PEAK-KB"))
    return done.returncode, int(peak.split()[1]) / 1024


@pytest.mark.parametrize(
    "attack",
    ["an endless error body", "a gzip-bombed error body", "a gzip-bombed blob"],
)
def test_memory_stays_bounded_whatever_the_body(proxy, tmp_path, attack: str) -> None:
    remote = f"oci://127.0.0.1:{proxy.port}/aot"
    missing = "ffffffffffffffff-0000000000000000"
    base_code, base_mb = _peak_memory_mb("pull", remote, missing, "--cache-dir", str(tmp_path / "a"))
    assert base_code == 1  # a miss that talked to the registry: the baseline
    if attack == "an endless error body":
        action = endless(500)
    else:
        action = gzip_bomb(500 if "error" in attack else 200)
    proxy.rules.append(matching("GET", BLOB_GET, action))
    started = time.monotonic()
    code, peak_mb = _peak_memory_mb("pull", remote, "--cache-dir", str(tmp_path / "b"))
    assert code == 3 and time.monotonic() - started < 60
    assert peak_mb - base_mb < 64, (peak_mb, base_mb)
    _nothing_published(tmp_path / "b")


def test_a_remote_that_drips_is_cut_off_at_its_deadline(proxy, tmp_path) -> None:
    proxy.rules.append(matching("GET", BLOB_GET, drip(10_000, 0.5)))
    remote = f"oci://127.0.0.1:{proxy.port}/aot"
    started = time.monotonic()
    done = _pull(remote, tmp_path / "c", env={http.TIMEOUT_ENV: "3"})
    assert time.monotonic() - started < 20
    _refused(done, 3, "took longer than 3 s")
    code = f"""
import time, aotcache
from examples import tiny_llama
started = time.monotonic()
loaded = aotcache.load(tiny_llama.build(), {TINY_CONFIG!r}, cache_dir={str(tmp_path / "d")!r}, remote={remote!r})
print(loaded is None, round(time.monotonic() - started, 1))
"""
    loaded = run_python(code, env={http.TIMEOUT_ENV: "3"}, timeout=60)
    missed, seconds = loaded.stdout.split()
    assert missed == "True" and float(seconds) < 15, loaded.stderr[-2000:]
    assert "aotcache miss (remote)" in loaded.stderr and "took longer than 3 s" in loaded.stderr


def test_an_index_of_many_ids_costs_a_bounded_number_of_requests(tiny_entry, proxy, tmp_path) -> None:
    lookup = tiny_entry.entry_id.split("-")[0]
    ids = [f"{lookup}-{i:016x}" for i in range(20_000)] * 2  # every id twice
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"annotations": {"dev.aotcache.entry": i}, "digest": "sha256:" + "0" * 64} for i in ids],
    }
    body = json.dumps(index).encode()
    proxy.rules.append(matching("GET", rf"/manifests/lookup-{lookup}", lambda h: h.reply(200, body)))
    code = f"""
import aotcache
from examples import tiny_llama
print(aotcache.load(tiny_llama.build(), {TINY_CONFIG!r}, cache_dir={str(tmp_path / "d")!r},
                    remote="oci://127.0.0.1:{proxy.port}/aot"))
"""
    loaded = run_python(code, timeout=120)
    assert loaded.stdout.strip() == "None", loaded.stderr[-2000:]
    manifests = [s for s in proxy.seen if "/manifests/" in s.path and "lookup-" not in s.path]
    assert len(manifests) <= MAX_CANDIDATES
    assert len({s.path for s in manifests}) == len(manifests)  # no id asked for twice


def test_a_fifo_on_a_file_remote_never_blocks(tiny_entry, tmp_path) -> None:
    mount = tmp_path / "mount"
    assert run_cli("push", f"file://{mount}", "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    record = mount / "entries" / f"{tiny_entry.entry_id}.json"
    blobs = json.loads(record.read_text())
    kernel = next(f for f in blobs["files"] if f["path"].startswith("kernels/"))
    blob = mount / "blobs" / "sha256" / kernel["sha256"]
    blob.unlink()
    os.mkfifo(blob)
    done = _pull(f"file://{mount}", tmp_path / "c", timeout=60)
    _refused(done, 3, "is not a regular file")
    record.unlink()
    os.mkfifo(record)
    done = _pull(f"file://{mount}", tmp_path / "c", timeout=60)
    _refused(done, 3, "is not a regular file")


# -- 3. every remote string is data ---------------------------------------------------------------


def test_a_non_ascii_token_is_a_remote_error(proxy, tmp_path) -> None:
    realm = f"http://127.0.0.1:{proxy.port}/token"
    proxy.rules[:0] = [
        matching("GET", r"^/token", lambda h: h.reply(200, json.dumps({"token": "t\u00f6k\u00e9n"}).encode())),
        challenge(realm),
    ]
    done = _pull(f"oci://127.0.0.1:{proxy.port}/aot", tmp_path / "c")
    _refused(done, 3, "not printable ASCII")


def test_text_from_the_remote_cannot_forge_output(tiny_entry, proxy, tmp_path) -> None:
    """A layer title with a newline and terminal escapes, on a file that fails its
    check: the one error line shows them escaped."""

    def forged(handler: Handler) -> None:
        def rewrite(body: bytes) -> bytes:
            document = json.loads(body)
            document["config"]["annotations"] = {"org.opencontainers.image.title": "x\nerror: \x1b[32mall good\x1b[0m"}
            document["config"]["size"] += 1  # so it fails its check, and is named
            return json.dumps(document).encode()

        handler.forward(rewrite)

    proxy.rules.append(matching("GET", rf"/manifests/{tiny_entry.entry_id}", forged))
    done = run_cli("pull", f"oci://127.0.0.1:{proxy.port}/aot", "--cache-dir", str(tmp_path / "c"))
    assert done.returncode == 1, done.stderr[-2000:]
    assert "\x1b" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "\\n" in errors[0] and "\\x1b" in errors[0], done.stderr


def test_error_messages_are_printable() -> None:
    error = RemoteError("from the remote: line1\nline2\x1b[2J" + "x" * 5000)
    assert error.message.isprintable() and len(error.message) <= 2000 and "\\n" in error.message


# -- 4. the pull's staging dir ------------------------------------------------------------------------


@pytest.fixture
def file_remote(tiny_entry, tmp_path) -> str:
    mount = tmp_path / "mount"
    assert run_cli("push", f"file://{mount}", "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    return f"file://{mount}"


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"precious bytes")
    return outside


def _pull_here(remote: str, cache: Path) -> list[Any]:
    """A pull in this process (so its staging dir's name, with our pid, is known)."""
    return pull(CacheRoot(cache), open_remote(remote), [])


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _kernel(tiny_entry) -> str:
    return next(p.name for p in (tiny_entry.path / "kernels").iterdir())


@pytest.mark.parametrize("planted", ["symlink", "hard link", "fifo"])
def test_a_planted_partial_file_is_never_written_through(tiny_entry, file_remote, tmp_path, planted: str) -> None:
    outside = _outside(tmp_path)
    before = tree_snapshot(outside)
    cache = tmp_path / "cache"
    staged = cache / "staging" / f"{tiny_entry.entry_id}.{_dead_pid()}.pull"
    (staged / "kernels").mkdir(parents=True)
    part = staged / "kernels" / (_kernel(tiny_entry) + ".part")
    if planted == "symlink":
        part.symlink_to(outside / "precious")
    elif planted == "hard link":
        os.link(outside / "precious", part)
    else:
        os.mkfifo(part)
    done = _pull(file_remote, cache, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert tree_snapshot(outside) == before
    assert run_cli("verify", tiny_entry.entry_id, "--cache-dir", str(cache)).returncode == 0


def test_a_staging_dir_planted_under_our_own_name_is_never_used(tiny_entry, file_remote, tmp_path) -> None:
    outside = _outside(tmp_path)
    before = tree_snapshot(outside)
    cache = tmp_path / "cache"
    (cache / "staging").mkdir(parents=True)
    (cache / "staging" / f"{tiny_entry.entry_id}.{os.getpid()}.pull").symlink_to(outside, target_is_directory=True)
    (cache / "staging" / f"{tiny_entry.entry_id}.{_dead_pid()}.pull").symlink_to(outside, target_is_directory=True)
    results = _pull_here(file_remote, cache)
    assert [r.status for r in results] == ["pulled"], [r.error for r in results]
    assert tree_snapshot(outside) == before


def test_a_link_inside_an_adopted_staging_dir_creates_nothing_outside(tiny_entry, file_remote, tmp_path) -> None:
    outside = _outside(tmp_path)
    before = sorted(p.name for p in outside.iterdir())
    cache = tmp_path / "cache"
    staged = cache / "staging" / f"{tiny_entry.entry_id}.{_dead_pid()}.pull"
    staged.mkdir(parents=True)
    (staged / "kernels").symlink_to(outside, target_is_directory=True)
    (staged / "pieces").symlink_to(outside, target_is_directory=True)
    done = _pull(file_remote, cache, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in outside.iterdir()) == before


def test_an_adopted_staging_dir_owned_by_another_user_is_discarded(tiny_entry, file_remote, tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a folder owned by another user")
    cache = tmp_path / "cache"
    staged = cache / "staging" / f"{tiny_entry.entry_id}.{_dead_pid()}.pull"
    (staged / "kernels").mkdir(parents=True)
    planted = staged / "kernels" / _kernel(tiny_entry)
    planted.write_bytes(b"someone else's kernel")
    os.chown(staged, 65534, 65534)
    results = _pull_here(file_remote, cache)
    assert [r.status for r in results] == ["pulled"]
    assert not staged.exists() and run_cli("verify", tiny_entry.entry_id, "--cache-dir", str(cache)).returncode == 0


# -- 5. what the registry saw ---------------------------------------------------------------------


def _blob_gets(proxy: Any) -> list[str]:
    return [s.path.rsplit(":", 1)[-1] for s in proxy.seen if s.method == "GET" and BLOB_GET in s.path]


def test_an_unsigned_entry_is_refused_before_another_byte_is_fetched(tiny_entry, proxy, tmp_path) -> None:
    """As the registry saw it: with a trusted key, the entry's OCI manifest and its own
    manifest.json are all a pull of an unsigned entry asks for."""
    key = tmp_path / "release.secret"
    key.write_bytes(b"0123456789abcdef0123456789abcdef")
    done = _pull(f"oci://127.0.0.1:{proxy.port}/aot", tmp_path / "c", "--trusted-key", str(key))
    _refused(done, 1, "not signed")
    manifest_sha = hashlib.sha256((tiny_entry.path / "manifest.json").read_bytes()).hexdigest()
    assert _blob_gets(proxy) == [manifest_sha]
    _nothing_published(tmp_path / "c")


def test_two_replicas_that_miss_at_once_download_each_blob_once(tiny_entry, proxy, tmp_path) -> None:
    code = f"""
import aotcache
from examples import tiny_llama
loaded = aotcache.load(tiny_llama.build(), {TINY_CONFIG!r}, cache_dir={str(tmp_path / "host")!r},
                       remote="oci://127.0.0.1:{proxy.port}/aot", strict=True)
print(loaded.entry_id)
"""
    replicas = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=python_env(), stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    assert [r.communicate(timeout=300)[0].strip() for r in replicas] == [tiny_entry.entry_id] * 2
    gets = _blob_gets(proxy)
    files = json.loads((tiny_entry.path / "manifest.json").read_bytes())["files"]
    assert sorted(gets) == sorted(set(gets)) and len(gets) == len({f["sha256"] for f in files.values()}) + 1
