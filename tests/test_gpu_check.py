"""`make gpu-check` and `make gpu-bench` where no GPU test can run (this machine, or one
whose python has no torch): gpu-check fails, saying that nothing ran and why, instead of
passing on a suite that skipped everything; gpu-bench stops at once, in one line. And
gpu-check's verdict on each kind of pytest run, from its JUnit XML."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from _support import REPO, run_argv

needs_no_cuda = pytest.mark.skipif(
    torch.cuda.is_available(), reason="with a CUDA device the GPU suite really runs (make gpu-check)"
)
NO_CUDA = {"python": "3.12.3", "torch": "2.11.0+cu130", "cuda_version": "13.0", "cuda": False, "devices": []}
H200 = {**NO_CUDA, "cuda": True, "devices": ["NVIDIA H200"], "triton": "3.6.0"}


def _gpu_check() -> ModuleType:
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


@needs_no_cuda
def test_gpu_check_fails_saying_nothing_ran_without_a_cuda_device(tmp_path: Path) -> None:
    done = run_argv([sys.executable, "scripts/gpu_check.py", "--no-install", "--report", str(tmp_path)], timeout=300)
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("gpu-check: nothing ran: 0 of ") and "no CUDA device" in last, last
    report = (tmp_path / "gpu-check.md").read_text()
    assert "**nothing ran: 0 of " in report and "needs a CUDA device" in report
    assert (tmp_path / "gpu-junit.xml").is_file() and (tmp_path / "gpu-pytest.log").is_file()


def test_gpu_check_with_a_python_without_torch_installs_nothing(tmp_path: Path) -> None:
    """A torch that fails to import (first on PYTHONPATH): nothing is installed into
    that python, and the verdict names the reason."""
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no torch on this python (a test)')\n")
    report = tmp_path / "report"
    env = {"PYTHONPATH": str(tmp_path / "fake")}
    done = run_argv([sys.executable, "scripts/gpu_check.py", "--report", str(report)], env=env, timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "nothing ran: torch is not importable" in done.stdout and "no torch on this python" in done.stdout
    text = (report / "gpu-check.md").read_text()
    assert "installed" not in text and not (report / "gpu-pytest.log").exists()


@needs_no_cuda
def test_gpu_bench_stops_at_once_without_a_cuda_device(tmp_path: Path) -> None:
    done = run_argv([sys.executable, "benchmarks/bench_gpu.py", "--report", str(tmp_path)], timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.strip().splitlines() == [(tmp_path / "gpu-bench.md").read_text().strip()]
    assert done.stdout.startswith("gpu-bench: no CUDA device:") and "nothing measured" in done.stdout


def _junit(tmp_path: Path, *cases: str) -> Path:
    path = tmp_path / "junit.xml"
    body = "".join(
        f'<testcase classname="tests.test_gpu" name="t{i}">{case}</testcase>' for i, case in enumerate(cases)
    )
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{body}</testsuite></testsuites>')
    return path


SKIP = '<skipped type="pytest.skip" message="needs a CUDA device (the GPU path runs on CPU only as an emulation)"/>'


@pytest.mark.parametrize(
    ("code", "cases", "machine", "expected_code", "expected"),
    [
        (0, [SKIP, SKIP, SKIP], NO_CUDA, 4, "nothing ran: 0 of 3 GPU tests ran (no CUDA device: torch 2.11.0+cu130"),
        (0, [SKIP], H200, 4, "nothing ran: 0 of 1 GPU tests ran (every one skipped; skipped: 1 × needs a CUDA"),
        (5, [], NO_CUDA, 4, "nothing ran: no GPU test was collected (pytest exit 5)"),
        (0, ["", "", SKIP], H200, 0, "ran: 2 of 3 GPU tests passed, 1 skipped (1 × needs a CUDA device"),
        (0, ["", ""], H200, 0, "ran: 2 of 2 GPU tests passed"),
        (1, ["", '<failure message="assert"/>', SKIP], H200, 1, "FAILED: 1 failed and 0 errors of 3 GPU tests"),
        (1, ['<error message="fixture"/>'], H200, 1, "FAILED: 0 failed and 1 errors of 1 GPU tests"),
    ],
)
def test_the_verdict_of_a_pytest_run(
    tmp_path: Path, code: int, cases: list[str], machine: dict, expected_code: int, expected: str
) -> None:
    gpu_check = _gpu_check()
    counts = gpu_check.junit_counts(_junit(tmp_path, *cases))
    status, line = gpu_check.verdict(code, counts, machine, 420.0)
    assert (status, line[: len(expected)]) == (expected_code, expected), line


def test_the_verdict_without_a_report_or_in_time() -> None:
    gpu_check = _gpu_check()
    assert gpu_check.verdict(124, None, H200, 420.0)[0] == 124
    status, line = gpu_check.verdict(2, None, H200, 420.0)
    assert status == 4 and line.startswith("nothing ran: pytest exited 2 and wrote no JUnit report")


def test_the_wheelhouse_holds_pytest_and_what_it_imports() -> None:
    """The GPU image may have no pytest: gpu-check installs it and its imports from the
    wheelhouse, with everything else the suite needs beyond torch and numpy."""
    runtime = _gpu_check().RUNTIME
    assert {"pytest", "pluggy", "iniconfig", "packaging", "pygments"} <= set(runtime)
    assert {"typer", "rich", "pydantic", "pydantic_core", "platformdirs", "filelock"} <= set(runtime)
