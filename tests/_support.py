"""Shared helpers for the test suite (imported by conftest and tests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Small enough to compile fast, rich enough to exercise ranges and sizes:
# ranges [1, 8] and [9, 32]; concrete sizes 1, 2, 4.
TINY_CONFIG: dict[str, Any] = {
    "compile_sizes": [1, 2, 4],
    "compile_ranges_split_points": [8],
    "max_num_batched_tokens": 32,
    "splitting_ops": ["tinyllama::attention"],
}
TINY_UNITS = 5  # 2 ranges + 3 sizes


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("AOTCACHE_FORCE_LOAD", None)
    env.pop("COLUMNS", None)  # the runner's terminal width (CI sets 80) must not shape a table a test reads
    env.update(extra or {})
    return env


def run_argv(
    argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root with the test environment; never raises
    on its exit code (a timeout does raise: a hang is a failure)."""
    return subprocess.run(
        argv, cwd=REPO, env=python_env(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def run_python(
    code: str, *, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter from the repository root."""
    return run_argv([sys.executable, "-c", textwrap.dedent(code)], env=env, timeout=timeout)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the installed `aotcache` console script as a real subprocess."""
    script = Path(sys.executable).with_name("aotcache")
    if not script.exists():  # a system python (the GPU image) puts console scripts elsewhere
        script = Path(shutil.which("aotcache") or script)
    return run_argv([str(script), *args], env=env, timeout=timeout)


def last_json(text: str) -> Any:
    return json.loads(text.strip().splitlines()[-1])


@dataclass
class CliBuild:
    cache: Path
    summary: dict[str, Any]  # precompile --json


def cli_precompile(target: str, config: dict[str, Any], cache: Path) -> CliBuild:
    """`aotcache precompile TARGET -O CONFIG --json` into `cache`, which must succeed."""
    result = run_cli("precompile", target, "-O", json.dumps(config), "--cache-dir", str(cache), "--json")
    assert result.returncode == 0, result.stderr
    return CliBuild(cache, json.loads(result.stdout))


LOAD_AND_COMPARE = """
import json, sys, torch, aotcache
from aotcache.serve import COMPILE_SIDE_MODULES
from examples import tiny_llama
model = tiny_llama.build({layers})
loaded = aotcache.load(model, {config!r}, cache_dir={cache!r}, strict=True)
results = {{}}
for size in {sizes!r}:
    inputs = tiny_llama.example_inputs(size)
    with torch.no_grad():
        expected = model(*inputs)
    got = loaded(*inputs)
    unit = loaded.dispatch(size)
    results[size] = [float((got - expected).abs().max()), [unit.start, unit.end]]
error = None
try:
    loaded(*tiny_llama.example_inputs({too_big}))
except aotcache.DispatchError as exc:
    error = str(exc)
compile_side = sorted(m for m in sys.modules if m.startswith(COMPILE_SIDE_MODULES))
report = {{"entry": loaded.entry_id, "results": results, "dispatch_error": error, "compile_side": compile_side}}
print(json.dumps(report))
"""


def rewrite_manifest(entry: Path, mutate: Any) -> None:
    """Edit an entry's manifest and write it back with a valid checksum (what an attacker
    or a careless tool could do; a signature is what catches it)."""
    from aotcache.store import manifest as manifest_mod

    path = entry / "manifest.json"
    parsed = manifest_mod.parse(path.read_bytes(), entry.name)
    mutate(parsed)
    path.write_bytes(parsed.to_bytes())


def rewrite_manifest_as_built(entry: Path, mutate: Any) -> Path:
    """Edit an entry's manifest the way a build would have written it: the factors that
    summarize its contents (traced sources, traced state) and the entry id follow the
    edit, and the entry's directory is renamed to that id. Returns the new directory.
    (What an entry built on another host, or from other sources, looks like.)"""
    from aotcache.key.factors import EntryKey, Factor
    from aotcache.key.sources import SourceFile, sources_digest
    from aotcache.store import manifest as manifest_mod

    parsed = manifest_mod.parse((entry / "manifest.json").read_bytes(), entry.name)
    mutate(parsed)
    summaries = {
        "sources": sources_digest([SourceFile.from_json(s) for s in parsed.sources]),
        "traced_state": parsed.traced_state.digest,
    }
    parsed.build = [Factor(f.name, summaries.get(f.name, f.value)) for f in parsed.build]
    parsed.entry_id = EntryKey(parsed.lookup, parsed.build).entry_id
    moved = entry.with_name(parsed.entry_id)
    entry.rename(moved)
    (moved / "manifest.json").write_bytes(parsed.to_bytes())
    return moved


def copy_cache(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def rewrite_manifest_body(entry: Path, mutate: Any) -> None:
    """Edit the raw JSON body of an entry's manifest (any structure at all, valid or
    not) and write it back with a valid checksum."""
    from aotcache.store import manifest as manifest_mod

    path = entry / "manifest.json"
    body = json.loads(path.read_bytes())
    mutate(body)
    body["checksum"] = manifest_mod._checksum(body)
    path.write_bytes(manifest_mod._canonical(body) + b"\n")


def tree_snapshot(root: Path) -> dict[str, tuple[str, float]]:
    """Every file below root (links not followed) with its content hash and mtime."""
    import hashlib

    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if path.is_symlink():
                found[str(path.relative_to(root))] = (f"link:{os.readlink(path)}", 0.0)
            else:
                found[str(path.relative_to(root))] = (
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                    path.stat().st_mtime,
                )
    return found
