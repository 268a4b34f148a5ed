"""Packaging: the wheel installs aotcache alone, nothing top-level."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from _support import REPO

from aotcache.serve import COMPILE_SIDE_MODULES


def test_wheel_top_level_names(tmp_path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("aotcache-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"aotcache", "aotcache-0.1.0.dist-info"}, top
    assert "aotcache/cli/app.py" in names and "aotcache/backend/precompile.py" in names
    assert "aotcache/formats/inductor_runtime.py" in names and "aotcache/py.typed" in names
    sources = {
        f"aotcache/{path.relative_to(REPO / 'aotcache').as_posix()}" for path in (REPO / "aotcache").rglob("*.py")
    }
    assert sources <= set(names), sorted(sources - set(names))  # every wing is packaged
    assert not any(name.startswith(("cli/", "backend/", "tests/", "examples/")) for name in names)
    entry_points = zipfile.ZipFile(wheel).read("aotcache-0.1.0.dist-info/entry_points.txt").decode()
    assert "aotcache = aotcache.cli.app:main" in entry_points


def test_console_script_runs() -> None:
    script = Path(sys.executable).with_name("aotcache")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "precompile" in done.stdout
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "aotcache 0.1.0", done.stdout + done.stderr


def test_serve_path_does_not_import_compile_side() -> None:
    heavy = (*COMPILE_SIDE_MODULES, "typer", "rich")
    code = f"import sys, aotcache; print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
