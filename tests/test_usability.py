"""What a new user meets first: a check that does not depend on the working directory,
tables that fit the terminal, progress a CI log shows, one JSON object on every error,
help that is quick and readable, and examples that run as the README writes them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _support import REPO, TINY_CONFIG, python_env, rewrite_manifest_as_built, run_argv, run_cli
from filelock import FileLock

from aotcache.store.root import CacheRoot

TARGET = "examples/tiny_llama.py:spec"
TINY_FLAGS = ["--compile-sizes", "1,2,4", "--split-points", "8", "--max-num-batched-tokens", "32"]
AOTCACHE = str(Path(sys.executable).with_name("aotcache"))


def _cli_in(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The console script run from another working directory (PYTHONPATH as a user has it:
    the repository is not on it, so examples/ is not importable from there)."""
    environment = {k: v for k, v in python_env(env).items() if k != "PYTHONPATH"}
    if env and "PYTHONPATH" in env:
        environment["PYTHONPATH"] = env["PYTHONPATH"]
    return subprocess.run(
        [AOTCACHE, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300, check=False
    )


# -- 1. whether an entry is stale never depends on the working directory -------------


@pytest.mark.parametrize("where", ["repo", "elsewhere", "root"])
def test_a_source_not_found_from_here_is_unknown_never_stale(tiny_entry, tmp_path, where) -> None:
    """From the project root the traced files are checked; from another directory or
    from / they cannot be found: the entry stays ok with a warning, verify passes (and
    --strict fails), and clear --stale deletes nothing."""
    cache = tmp_path / "cache"
    shutil.copytree(tiny_entry.cache_dir, cache)
    cwd = {"repo": REPO, "elsewhere": tmp_path, "root": Path("/")}[where]
    listed = json.loads(_cli_in(cwd, "inspect-cache", "--cache-dir", str(cache), "--json").stdout)
    entry = next(e for e in listed["entries"] if e["key"] == tiny_entry.entry_id)
    assert entry["status"] == "ok", entry
    warned = any("examples/tiny_llama.py" in w and "not found from here" in w for w in entry["warnings"])
    assert warned is (where != "repo"), entry["warnings"]
    strict = _cli_in(cwd, "verify", tiny_entry.entry_id, "--cache-dir", str(cache), "--strict", "--json")
    report = json.loads(strict.stdout)
    assert strict.returncode == 1 and all(c["ok"] for c in report["checks"])  # only warnings fail it
    sources = next(c for c in report["checks"] if c["check"] == "sources")
    assert sources["status"] == ("ok" if where == "repo" else "unknown")
    cleared = _cli_in(cwd, "clear", "--stale", "--yes", "--cache-dir", str(cache), "--json")
    assert cleared.returncode == 0 and json.loads(cleared.stdout)["removed"] == []
    # clear says how many entries it could not check, and why (as inspect-cache warns)
    unchecked = json.loads(cleared.stdout)["unchecked"]
    assert [u.split(":")[0] for u in unchecked] == ([] if where == "repo" else [tiny_entry.entry_id])
    said = _cli_in(cwd, "clear", "--stale", "--yes", "--cache-dir", str(cache))
    assert ("1 entry not checked for staleness" in said.stdout) is (where != "repo"), said.stdout
    assert where == "repo" or "run from the project root" in said.stdout
    assert (cache / "entries" / tiny_entry.entry_id).is_dir()


def test_a_source_found_with_other_content_is_stale_and_cleared(tiny_entry, tmp_path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(tiny_entry.cache_dir, cache)
    entry = cache / "entries" / tiny_entry.entry_id

    def edit(manifest) -> None:  # as if examples/tiny_llama.py had changed since the build
        for source in manifest.sources:
            if source["path"] == "examples/tiny_llama.py":
                source["sha256"] = "0" * 64

    entry = rewrite_manifest_as_built(entry, edit)
    listed = json.loads(_cli_in(REPO, "inspect-cache", "--cache-dir", str(cache), "--json").stdout)
    assert next(e for e in listed["entries"] if e["key"] == entry.name)["status"] == "stale"
    cleared = _cli_in(REPO, "clear", "--stale", "--yes", "--cache-dir", str(cache), "--json")
    assert [r["key"] for r in json.loads(cleared.stdout)["removed"]] == [entry.name]


SITE_MODEL = """
import torch
from aotcache.target import ModelSpec


class Scale(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.proj(x)) * 2


spec = ModelSpec(model=Scale, example_inputs=lambda n: (torch.randn(n, 8),), config={"max_num_batched_tokens": 16},
                 dynamic_arg_dims={"x": 0})
"""


def test_sources_of_an_installed_package_are_found_from_anywhere(tmp_path) -> None:
    """A model package in site-packages (here one on PYTHONPATH): its traced files are
    named by module path and found through sys.path from any directory."""
    site = tmp_path / "site-packages"
    (site / "scalepkg").mkdir(parents=True)
    (site / "scalepkg" / "__init__.py").write_text("")
    (site / "scalepkg" / "model.py").write_text(SITE_MODEL)
    cache = tmp_path / "cache"
    env = {"PYTHONPATH": str(site)}
    built = _cli_in(tmp_path, "precompile", "scalepkg.model:spec", "--cache-dir", str(cache), "--json", env=env)
    assert built.returncode == 0, built.stderr[-2000:]
    manifest = json.loads((Path(json.loads(built.stdout)["path"]) / "manifest.json").read_text())
    recorded = {s["path"]: s.get("root") for s in manifest["sources"]}
    assert recorded["scalepkg/model.py"] == "site-packages" and recorded["torch/nn/modules/linear.py"]
    for cwd in (REPO, Path("/")):
        listed = json.loads(_cli_in(cwd, "inspect-cache", "--cache-dir", str(cache), "--json", env=env).stdout)
        assert [(e["status"], e["warnings"]) for e in listed["entries"]] == [("ok", [])], listed
    (site / "scalepkg" / "model.py").write_text(SITE_MODEL + "\n# edited\n")
    listed = json.loads(_cli_in(Path("/"), "inspect-cache", "--cache-dir", str(cache), "--json", env=env).stdout)
    assert [e["status"] for e in listed["entries"]] == ["stale"]


# -- 2. tables that fit ------------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 100, 132])
def test_inspect_cache_fits_the_width_and_never_cuts_a_key(tiny_entry, columns) -> None:
    done = run_cli("inspect-cache", "--cache-dir", str(tiny_entry.cache_dir), env={"COLUMNS": str(columns)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= columns for line in lines), [len(line) for line in lines]
    assert all(line == line.rstrip() for line in lines) and "…" not in done.stdout
    header = next(line for line in lines if line.startswith("KEY"))
    for column in ("MODEL", "SIZES / RANGES", "SIZE", "STATUS"):
        assert column in header
    row = next(line for line in lines if line.startswith(tiny_entry.entry_id[:12]))
    assert "TinyLlama" in row and row.rstrip().endswith("ok")
    if columns >= 132:
        assert "CREATED" in header and "MODE" in header
    wide = run_cli("inspect-cache", "--cache-dir", str(tiny_entry.cache_dir), "--wide", env={"COLUMNS": "80"})
    assert tiny_entry.entry_id in wide.stdout and "LOAD NEEDS" in wide.stdout


# -- 3. progress a CI log shows -----------------------------------------------------------


def test_progress_lines_and_lock_wait_heartbeat_without_a_terminal(tiny_entry, tmp_path) -> None:
    """A precompile whose output is not a terminal prints one timed line per stage and
    per unit; while another process holds the entry's lock it says so, naming its pid."""
    cache = tmp_path / "cache"
    shutil.copytree(tiny_entry.cache_dir, cache)
    shutil.rmtree(cache / "entries" / tiny_entry.entry_id)
    lock = FileLock(str(CacheRoot(cache).locks / f"{tiny_entry.entry_id}.lock"))
    lock.acquire()
    env = python_env({"AOTCACHE_HEARTBEAT_SECONDS": "1"})
    proc = subprocess.Popen(
        [AOTCACHE, "precompile", TARGET, *TINY_FLAGS, "--cache-dir", str(cache), "--json"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    waited = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if "waiting" in line:
                waited.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert waited.wait(timeout=120), "\n".join(lines)
        time.sleep(1.5)
    finally:
        lock.release()
    proc.wait(timeout=300)
    reader.join(timeout=10)
    assert proc.stdout is not None
    out = proc.stdout.read()
    assert proc.returncode == 0, "\n".join(lines[-20:])
    summary = json.loads(out)
    timed = [line for line in lines if re.match(r"\[\s*\d+\.\ds\] ", line)]
    assert any("tracing with Dynamo" in line for line in timed)
    assert any(f"pid {os.getpid()}, which builds the same entry" in line for line in timed), lines
    units = [line for line in timed if re.search(r"unit \d+/\d+: ", line)]
    assert len(units) == summary["units"] == 3 * len(TINY_CONFIG["compile_sizes"]) + 6, "\n".join(lines)
    assert any(line.endswith("publishing") for line in timed)
    assert summary["units"] == summary["units_compiled"] + summary["units_shared"] + summary["units_reused"]


# -- 4. one JSON object on every error ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["precompile", "nosuchpkg.model:spec"], 2),
        (["precompile", TARGET, "--compile-sizes", "0"], 2),
        (["precompile", TARGET, "--no-such-option"], 2),
        (["precompile"], 2),
        (["inspect-cache", "--cache-dir", "/nonexistent/aot-cache"], 3),
        (["verify", "ffffffffffff", "--cache-dir", "/nonexistent/aot-cache"], 3),
        (["verify", "ffffffffffff"], 1),
        (["clear"], 2),
        (["clear", "--all", "--cache-dir", "/nonexistent/aot-cache"], 3),
        (["push", "nope://nowhere/x"], 2),
        (["pull", "oci://"], 2),
    ],
)
def test_json_prints_one_object_on_every_error(args: list[str], code: int, tmp_path) -> None:
    (tmp_path / "entries").mkdir()
    given = args if "--cache-dir" in args else [*args, "--cache-dir", str(tmp_path)]
    done = run_cli(*given, "--json")
    assert done.returncode == code, done.stderr
    data = json.loads(done.stdout)
    assert data["schema"] == "aotcache.error/1" and data["ok"] is False and data["error"]["code"] == code
    assert data["error"]["message"] and "Traceback" not in done.stderr


def test_inspect_cache_of_a_missing_dir_exits_3(tmp_path) -> None:
    done = run_cli("inspect-cache", "--cache-dir", str(tmp_path / "mistyped"))
    assert done.returncode == 3 and "does not exist" in done.stderr and not (tmp_path / "mistyped").exists()


# -- 5. help -------------------------------------------------------------------------------


def test_help_is_quick_readable_and_imports_no_torch() -> None:
    code = (
        "import sys\nfrom aotcache.cli.app import main\nsys.argv = ['aotcache', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)\n"
    )
    done = run_argv([sys.executable, "-c", code])
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout
    for command in ("precompile", "inspect-cache", "verify", "clear", "push", "pull"):
        text = run_cli(command, "--help").stdout
        assert "<bool>" not in text and "{" not in text.split("\n", 1)[0] and "[[" not in text, text
    precompile = run_cli("precompile", "--help").stdout
    assert precompile.startswith("Usage: aotcache precompile [OPTIONS] TARGET") and "hf:PATH" in precompile
    assert "--cache-dir DIR" in precompile and "--jobs N" in precompile
    assert run_cli("clear", "--help").stdout.startswith("Usage: aotcache clear [OPTIONS] [KEY]...")


# -- 6. the examples run as the README writes them ---------------------------------------------


@pytest.mark.parametrize("argv", [["examples/decorated.py"], ["-m", "examples.decorated"], ["examples/serve.py"]])
def test_examples_start_as_written(argv: list[str]) -> None:
    environment = {k: v for k, v in python_env().items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, *argv, "--help"], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]


def test_the_cache_dir_the_readme_uses_is_ignored_by_git() -> None:
    done = subprocess.run(["git", "check-ignore", "-q", "aot-cache/x"], cwd=REPO, check=False)
    assert done.returncode == 0


def test_the_readme_is_short_and_its_links_resolve() -> None:
    """A newcomer reads the README in five minutes; the reference lives in docs/ (whose
    own links `make lint` checks with mkdocs --strict)."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 250
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (REPO / target).exists(), target


# -- a damaged entry is said once --------------------------------------------------------------


def test_a_damaged_entry_is_said_once_and_replaced(tiny_entry, tmp_path) -> None:
    """precompile over an entry whose file changed: one warning naming the file (not one
    before the lock and another under it), and the entry is built again."""
    cache = tmp_path / "cache"
    shutil.copytree(tiny_entry.cache_dir, cache)
    victim = sorted((cache / "entries" / tiny_entry.entry_id / "artifacts").iterdir())[0]
    data = bytearray(victim.read_bytes())
    data[10] ^= 1
    victim.write_bytes(bytes(data))
    target, config = "examples/tiny_llama.py:spec", json.dumps(TINY_CONFIG)
    done = run_cli("precompile", target, "-O", config, "--cache-dir", str(cache), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("is not reused") == 1 and victim.name in done.stderr, done.stderr
    assert json.loads(done.stdout)["hit"] is False


# -- verify takes the flags precompile takes ----------------------------------------------------


def test_verify_takes_precompiles_config_flags_and_finds_the_same_entry(tiny_entry) -> None:
    """The same TARGET and flags give the same key in precompile and verify: the tiny
    entry was built with --compile-sizes 1,2,4 --split-points 8 --max-num-batched-tokens
    32 (TINY_CONFIG); verify with those flags checks it, without them it is another key."""
    target = "examples/tiny_llama.py:spec"
    flags = ["--compile-sizes", "1,2,4", "--split-points", "8", "--max-num-batched-tokens", "32"]
    done = run_cli("verify", target, *flags, "--cache-dir", str(tiny_entry.cache_dir), "--json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["entry"] == tiny_entry.entry_id
    without = run_cli("verify", target, "--cache-dir", str(tiny_entry.cache_dir), "--json")
    assert without.returncode != 0 and json.loads(without.stdout).get("entry") != tiny_entry.entry_id


# -- output fits 80 columns ------------------------------------------------------------------


def test_inspect_output_fits_80_columns(tiny_entry, tmp_path) -> None:
    """inspect-cache and inspect-cache KEY on an 80-column terminal: every line fits
    (only a line naming the cache dir's path, which must stay whole to be copied, may
    not), prose wraps,
    and a date never prints as None."""
    cache = tmp_path / "cache"
    shutil.copytree(tiny_entry.cache_dir, cache)
    victim = sorted((cache / "entries" / tiny_entry.entry_id / "artifacts").iterdir())[0]
    victim.write_bytes(victim.read_bytes() + b"#")  # a problem line too
    env = {"COLUMNS": "80"}
    for args in (["inspect-cache"], ["inspect-cache", tiny_entry.entry_id]):
        done = run_cli(*args, "--cache-dir", str(cache), env=env)
        assert done.returncode in (0, 1), done.stderr
        lines = [line for line in done.stdout.splitlines() if str(cache) not in line]  # a path stays whole
        too_wide = [line for line in lines if len(line) > 80]
        assert not too_wide, too_wide
        assert "None" not in done.stdout.replace("=None", ""), done.stdout
