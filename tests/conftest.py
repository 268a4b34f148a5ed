"""Session fixtures: one precompiled tiny_llama entry shared by the whole suite."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from _support import REPO, TINY_CONFIG

import aotcache


@dataclass
class TinyEntry:
    cache_dir: Path
    entry_id: str
    path: Path
    summary: dict


@pytest.fixture(scope="session", autouse=True)
def _isolated_inductor_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every compile in the session (subprocesses too) shares one private Inductor
    cache, so results never depend on the machine's /tmp/torchinductor_* state."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("inductor-cache"))
    os.environ.pop("AOTCACHE_DIR", None)
    os.environ.pop("AOTCACHE_FORCE_LOAD", None)
    os.environ.pop("AOTCACHE_TRUSTED_KEY", None)
    os.chdir(REPO)


@pytest.fixture(scope="session")
def tiny_entry(tmp_path_factory: pytest.TempPathFactory) -> TinyEntry:
    from examples import tiny_llama

    cache = tmp_path_factory.mktemp("tiny-cache")
    # As `aotcache precompile examples/tiny_llama.py:spec` records it: test_ci_sharing's
    # fresh runner builds the same bytes through the CLI.
    result = aotcache.precompile(tiny_llama.spec, TINY_CONFIG, cache_dir=cache, origin="examples/tiny_llama.py:spec")
    return TinyEntry(cache, result.entry_id, result.path, result.summary)


INDUCTOR_CONFIG = {**TINY_CONFIG, "artifact_format": "inductor"}


@pytest.fixture(scope="session")
def inductor_entry(tmp_path_factory: pytest.TempPathFactory) -> TinyEntry:
    """The example in the `inductor` format: torch's own CompiledArtifact per unit (what
    every GPU entry holds), built on the CPU."""
    from examples import tiny_llama

    cache = tmp_path_factory.mktemp("inductor-format")
    result = aotcache.precompile(tiny_llama.spec, INDUCTOR_CONFIG, cache_dir=cache)
    return TinyEntry(cache, result.entry_id, result.path, result.summary)


@pytest.fixture
def code_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Spies on the three ways an entry's code runs in this process: its Python executed
    ("exec"), a kernel library loaded ("dlopen"), an Inductor artifact loaded
    ("inductor"); the list says which ran, in order."""
    from aotcache.formats import native, torch_internals

    ran: list[str] = []
    real_exec, real_kernel = native.exec_source, native.load_kernel
    real_inductor = torch_internals.load_compiled_artifact
    monkeypatch.setattr(native, "exec_source", lambda *a: ran.append("exec") or real_exec(*a))
    monkeypatch.setattr(native, "load_kernel", lambda *a: ran.append("dlopen") or real_kernel(*a))
    monkeypatch.setattr(
        torch_internals, "load_compiled_artifact", lambda *a: ran.append("inductor") or real_inductor(*a)
    )
    return ran


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", help="also run tests marked slow (the torch matrix does; make test does not)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked slow (the long tail of a parametrised set) are deselected unless
    --run-slow: make test stays within its time, the matrix runs everything."""
    if config.getoption("--run-slow"):
        return
    kept = [item for item in items if "slow" not in item.keywords]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if "slow" in item.keywords])
        items[:] = kept
