"""CI runners share one compile cache through the remote, and two runners build the same
bytes (issue 23). Each runner is a fresh process with a work dir, cache dir, TMPDIR,
HOME and Inductor cache of its own; the registry is Debian's docker-registry on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _servers import registry, registry_blob
from _support import REPO, TINY_CONFIG, TINY_UNITS, copy_cache, run_cli

from aotcache.store.manifest import parse

pytestmark = pytest.mark.fault

TARGET = "examples/tiny_llama.py:spec"  # what the session's tiny_entry records as its origin
COMMENT = ("return self.lm_head(self.norm(x))", "return self.lm_head(self.norm(x))  # edited on this runner")

LOAD_HERE = """
import json, torch, aotcache
from examples import tiny_llama
model = tiny_llama.build()
loaded = aotcache.load(model, {config!r}, cache_dir={cache!r}, strict=True)
worst = 0.0
for size in (1, 3, 4, 20):
    inputs = tiny_llama.example_inputs(size)
    with torch.no_grad():
        worst = max(worst, float((loaded(*inputs) - model(*inputs)).abs().max()))
print(json.dumps({{"entry": loaded.entry_id, "worst": worst}}))
"""


class Runner:
    """A fresh CI runner: the repository's examples in a work dir of its own, an empty
    cache dir, and its own TMPDIR, HOME and Inductor cache (so nothing is shared with
    the test session but the remote)."""

    def __init__(self, folder: Path, edit: tuple[str, str] | None = None, own_inductor_cache: bool = True) -> None:
        self.folder = folder
        self.work = folder / "work"
        shutil.copytree(REPO / "examples", self.work / "examples", ignore=shutil.ignore_patterns("__pycache__"))
        if edit is not None:
            model = self.work / "examples" / "tiny_llama.py"
            text = model.read_text()
            assert edit[0] in text
            model.write_text(text.replace(edit[0], edit[1]))
        self.cache = folder / "cache"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AOTCACHE_")}
        for name in ("tmp", "home", "inductor"):
            (folder / name).mkdir()
        self.env.update(TMPDIR=str(folder / "tmp"), HOME=str(folder / "home"), PYTHONPATH=str(self.work))
        if own_inductor_cache:  # else the session's: its ISA probes are done (~10 s)
            self.env["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "inductor")

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=self.work, env=self.env, capture_output=True, text=True, timeout=600, check=False
        )

    def precompile(
        self, *extra: str, target: str = TARGET, config: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], str]:
        aotcache = str(Path(sys.executable).with_name("aotcache"))
        fields = json.dumps(config or TINY_CONFIG)
        done = self.run(aotcache, "precompile", target, "-O", fields, "--cache-dir", str(self.cache), "--json", *extra)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout), done.stderr

    def load(self) -> dict[str, Any]:
        done = self.run(sys.executable, "-c", LOAD_HERE.format(config=TINY_CONFIG, cache=str(self.cache)))
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])


def _files(entry: Path) -> dict[str, bytes]:
    return {str(p.relative_to(entry)): p.read_bytes() for p in sorted(entry.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def oci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    with registry(tmp_path_factory.mktemp("ci-registry")) as running:
        yield running


def test_two_runners_build_the_same_bytes_and_the_second_push_is_present(tiny_entry, oci, tmp_path) -> None:
    """The session's entry (built in the test process) and a fresh runner's full build,
    with every path and clock different, its cache dir and a debug dump path named in
    its config and its TARGET given as an absolute path: the same entry id and every
    file the same, manifest included; so a CI re-run's push is `present`, never refused."""
    runner = Runner(tmp_path / "runner-b")
    own_paths = {**TINY_CONFIG, "cache_dir": str(runner.cache), "debug_dump_path": str(runner.folder / "tmp")}
    summary, _ = runner.precompile(target=f"{runner.work / TARGET}", config=own_paths)
    assert summary["units_compiled"] > 0 and summary["units_reused"] == 0, summary  # compiled, not copied
    assert summary["entry"] == tiny_entry.entry_id
    built = runner.cache / "entries" / summary["entry"]
    ours, theirs = _files(tiny_entry.path), _files(built)
    assert sorted(ours) == sorted(theirs)
    assert [name for name in ours if ours[name] != theirs[name]] == []
    assert b'"created":null' in theirs["manifest.json"]  # no SOURCE_DATE_EPOCH: no clock in the bytes

    remote = f"oci://{oci[0]}/aot/ci"
    first = run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "--json")
    assert first.returncode == 0, first.stderr
    again = run_cli("push", remote, "--cache-dir", str(runner.cache), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["entries"][0]["status"] == "present"


def test_a_fresh_runner_after_a_comment_edit_fetches_every_unit_and_compiles_none(tiny_entry, oci, tmp_path) -> None:
    remote = f"oci://{oci[0]}/aot/units"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    runner = Runner(tmp_path / "runner-c", edit=COMMENT)
    summary, _ = runner.precompile("--remote", remote, "--trust-unsigned-remote")
    assert summary["entry"] != tiny_entry.entry_id  # other sources: another entry
    assert summary["units_compiled"] == 0, summary
    assert summary["units_reused_remote"] == summary["units_reused"] == TINY_UNITS * 3
    artifact_bytes = sum(
        record.bytes
        for path, record in _manifest(tiny_entry.path).files.items()
        if path != "graph.py" and not path.startswith("pieces/")
    )
    assert 0 < summary["bytes_fetched"] <= artifact_bytes  # only artifacts, each file once
    loaded = runner.load()
    assert loaded["entry"] == summary["entry"] and loaded["worst"] <= 1e-4


def _manifest(entry: Path) -> Any:
    return parse((entry / "manifest.json").read_bytes(), entry.name)


def test_a_tampered_unit_on_the_remote_is_compiled_here_with_a_warning(tiny_entry, tmp_path) -> None:
    manifest = _manifest(tiny_entry.path)
    size_one = next(u for u in manifest.units if u.range == [1, 1])
    artifact = manifest.artifacts[next(iter(size_one.artifacts.values()))]
    kernel = sorted(artifact.kernels.values())[0]
    with registry(tmp_path / "registry") as (host, storage):
        remote = f"oci://{host}/aot/tampered"
        assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
        blob = registry_blob(storage, manifest.files[kernel].sha256)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))

        runner = Runner(tmp_path / "runner-d", own_inductor_cache=False)
        summary, stderr = runner.precompile("--remote", remote, "--trust-unsigned-remote")
    assert summary["units_compiled"] >= 1 and summary["units_reused_remote"] >= 1, summary
    assert summary["units_compiled"] + summary["units_shared"] + summary["units_reused"] == TINY_UNITS * 3
    warnings = [line for line in stderr.splitlines() if "is compiled here" in line]
    assert warnings and all(kernel in line and "does not match" in line for line in warnings), stderr[-3000:]
    # What it compiled is what the remote should have held: the same entry, byte for byte.
    assert summary["entry"] == tiny_entry.entry_id
    assert _files(runner.cache / "entries" / summary["entry"]) == _files(tiny_entry.path)


def _pushed_to_a_mount(tiny_entry: Any, mount: Path) -> str:
    remote = f"file://{mount}"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    return remote


def test_a_unit_comes_only_from_a_manifest_that_lists_it_and_is_signed_as_the_build_signs(
    tiny_entry, tmp_path, caplog
) -> None:
    """What a remote reuse trusts: the unit index only names an entry; its manifest,
    checked as a pull checks it, must list the unit key itself, and a build that signs
    takes nothing from an entry its key did not sign."""
    from aotcache.fleet.connect import open_remote
    from aotcache.fleet.unit_reuse import RemoteArtifacts
    from aotcache.store import signing

    manifest = _manifest(tiny_entry.path)
    remote = _pushed_to_a_mount(tiny_entry, tmp_path / "mount")
    unit_key, name = sorted(manifest.unit_keys.items())[0]
    fetched = RemoteArtifacts(open_remote(remote), None).find(unit_key)
    assert fetched is not None and fetched.entry_id == tiny_entry.entry_id and fetched.name == name
    assert fetched.files == {path: (tiny_entry.path / path).read_bytes() for path in fetched.files}
    assert fetched.bytes_fetched == sum(manifest.files[path].bytes for path in fetched.files) > 0

    key = tmp_path / "release.secret"
    key.write_bytes(b"0123456789abcdef0123456789abcdef")
    signed_only = RemoteArtifacts(open_remote(remote), signing.checker(signing.read_key(key)))
    with caplog.at_level("WARNING", logger="aotcache.reuse"):
        assert signed_only.find(unit_key) is None
    assert "is compiled here" in caplog.text and "sign" in caplog.text.lower(), caplog.text

    # The unit index names the entry for a key its manifest does not list: nothing taken.
    stranger = "f" * 64
    (tmp_path / "mount" / "units" / stranger).write_text(tiny_entry.entry_id)
    assert RemoteArtifacts(open_remote(remote), None).find(stranger) is None


def test_a_fresh_runner_with_nothing_changed_pulls_the_entry_and_traces_nothing(tiny_entry, oci, tmp_path) -> None:
    remote = f"oci://{oci[0]}/aot/unchanged"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    runner = Runner(tmp_path / "runner-e", own_inductor_cache=False)
    summary, stderr = runner.precompile("--remote", remote, "--trust-unsigned-remote")
    assert summary["hit"] and summary["entry"] == tiny_entry.entry_id, summary
    assert "trace" not in summary["seconds"] and "tracing with Dynamo" not in stderr, stderr[-2000:]
    assert _files(runner.cache / "entries" / tiny_entry.entry_id) == _files(tiny_entry.path)


# -- a remote anyone can write (issue 33) ---------------------------------------------------

PAYLOAD = "import pathlib; pathlib.Path({marker!r}).write_text('the payload ran')\n"
GUARD_EXPLOIT = "Eq.__globals__['__builtins__']['exec'](\"import pathlib; pathlib.Path({marker!r}).write_text('x')\")"


def _forged_cache(tiny_entry: Any, folder: Path, payload_marker: Path, guard_marker: Path) -> Path:
    """The session's entry as an attacker with write access to the remote would rewrite
    it: a payload line at the top of every native wrapper, and a shape-guard string that
    runs code where it is eval'd; the manifest rewritten to match (unsigned, so nothing
    tells it from the real one), under the same id."""
    from aotcache.store import manifest as manifest_mod

    cache = copy_cache(tiny_entry.cache_dir, folder)
    entry = cache / "entries" / tiny_entry.entry_id
    body = json.loads((entry / "manifest.json").read_bytes())
    for artifact in body["artifacts"].values():
        wrapper = entry / artifact["wrapper"]
        data = PAYLOAD.format(marker=str(payload_marker)).encode() + wrapper.read_bytes()
        wrapper.write_bytes(data)
        body["files"][artifact["wrapper"]] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        if artifact.get("guards"):
            artifact["guards"] = GUARD_EXPLOIT.format(marker=str(guard_marker))
    body["checksum"] = manifest_mod._checksum(body)
    (entry / "manifest.json").write_bytes(manifest_mod._canonical(body) + b"\n")
    return cache


def test_a_forged_remote_puts_no_code_into_a_build(tiny_entry, tmp_path) -> None:
    """A file:// remote holding a forged entry (a payload in every wrapper, a guard string
    that writes a file when eval'd), for every unit of the build. An unsigned build takes
    nothing from it and says so; with --trust-unsigned-remote (and a comment edit, so that
    units, not the whole entry, are looked up) the forged guard strings are never
    evaluated: those units are compiled here, with a warning. Either way no file is
    written, and the build succeeds by compiling."""
    payload, guard = tmp_path / "payload-ran", tmp_path / "guard-ran"
    forged = _forged_cache(tiny_entry, tmp_path / "forged", payload, guard)
    remote = f"file://{tmp_path / 'remote'}"
    assert run_cli("push", remote, "--cache-dir", str(forged), "-q").returncode == 0

    runner = Runner(tmp_path / "runner-f", own_inductor_cache=False)
    summary, stderr = runner.precompile("--remote", remote)
    assert summary["units_reused_remote"] == 0 and summary["units_compiled"] > 0 and not summary["hit"], summary
    assert summary["remote_trust"].startswith("not used"), summary
    assert "is not used" in stderr and "--trust-unsigned-remote" in stderr, stderr[-2000:]
    assert summary["entry"] == tiny_entry.entry_id

    trusting = Runner(tmp_path / "runner-g", edit=COMMENT, own_inductor_cache=False)
    summary, stderr = trusting.precompile("--remote", remote, "--trust-unsigned-remote")
    refused = [line for line in stderr.splitlines() if "outside the grammar" in line]
    assert refused and summary["units_compiled"] + summary["units_shared"] >= len(refused), stderr[-3000:]
    assert summary["remote_trust"].startswith("unsigned") and "--trust-unsigned-remote" in stderr
    assert not payload.exists() and not guard.exists()


def test_the_no_change_path_passes_over_a_damaged_candidate(tiny_entry, tmp_path) -> None:
    """A remote whose index lists a damaged entry before the good one (its record names
    another entry's manifest): the damaged one is passed over with a warning, and the
    good one is the hit, traced nothing."""
    root = tmp_path / "remote"
    remote = f"file://{root}"
    assert run_cli("push", remote, "--cache-dir", str(tiny_entry.cache_dir), "-q").returncode == 0
    lookup = tiny_entry.entry_id.split("-")[0]
    damaged = f"{lookup}-ffffffffffffffff"  # listed first: the index is read newest id first
    (root / "entries" / f"{damaged}.json").write_bytes((root / "entries" / f"{tiny_entry.entry_id}.json").read_bytes())
    (root / "lookup" / lookup / damaged).write_bytes(b"")
    runner = Runner(tmp_path / "runner-h", own_inductor_cache=False)
    summary, stderr = runner.precompile("--remote", remote, "--trust-unsigned-remote")
    assert summary["hit"] and summary["entry"] == tiny_entry.entry_id, stderr[-3000:]
    assert "trace" not in summary["seconds"], summary
    assert f"entry {damaged} is not taken" in stderr, stderr[-2000:]
