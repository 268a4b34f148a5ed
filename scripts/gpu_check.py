"""`make gpu-check`: install aotcache on a machine that already has torch (the GPU image:
torch 2.11 + CUDA 13, Triton 3.6, Python 3.12, no network) and run the GPU suite.

    python3 scripts/gpu_check.py [--report DIR] [--timeout SECONDS] [--no-install]
    python3 scripts/gpu_check.py wheelhouse      # on a networked machine, beforehand

It never reaches a network: aotcache installs from this tree with the machine's own
torch (`pip install --no-deps --no-build-isolation -e .`), and any pure-Python dependency
the machine lacks (pytest included) comes from `.wheelhouse/` (made by `make
gpu-wheelhouse`, carried with the tree). It then runs `pytest -m gpu` under a time limit
and writes what it saw to DIR/gpu-check.md (the pytest log and its JUnit XML beside it).

It succeeds only where GPU tests ran and passed. Where nothing ran (no torch, the
install failed, no CUDA device so that every GPU test skipped, nothing collected) it
fails, and the report's verdict line says "nothing ran" and why: a check that skipped
everything proves nothing. `benchmarks/bench_gpu.py` (make gpu-bench) installs through
`install` here too.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO / ".wheelhouse"
# aotcache's runtime dependencies (import name -> distribution), what typer and rich
# need in turn, what the editable install needs, and pytest with what it imports (the
# GPU suite's conftest, _support and test modules import nothing else beyond the
# standard library, torch, numpy and aotcache; its tests run the aotcache CLI). All pure
# Python but pydantic-core, a CPython 3.12 manylinux wheel. torch and numpy come with
# the machine.
RUNTIME = {
    "typer": "typer",
    "rich": "rich",
    "platformdirs": "platformdirs",
    "filelock": "filelock",
    "click": "click",
    "shellingham": "shellingham",
    "markdown_it": "markdown-it-py",
    "mdurl": "mdurl",
    "pygments": "pygments",
    "typing_extensions": "typing-extensions",
    "annotated_doc": "annotated-doc",
    # typer 0.29 checks the CLI's parameters with pydantic (any command the tests run)
    "pydantic": "pydantic",
    "pydantic_core": "pydantic-core",
    "annotated_types": "annotated-types",
    "typing_inspection": "typing-inspection",
    # setuptools before 70.1 builds an editable install only with `wheel` beside it
    "wheel": "wheel",
    # the GPU image need not have pytest: the suite runs on these (pygments is above)
    "pytest": "pytest",
    "pluggy": "pluggy",
    "iniconfig": "iniconfig",
    "packaging": "packaging",
}
WHEEL_PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
MAX_WHEELHOUSE_BYTES = 16 << 20
SUITE = ["tests/test_gpu.py", "tests/test_cudagraph.py"]
DURATION = re.compile(r"\d+\.\d+s (setup|call|teardown) ")
NOTHING_RAN = 4  # the exit status when no GPU test ran (1: some failed, 124: out of time)
PROBE = """
import json, sys
from importlib.util import find_spec
found = {"python": sys.version.split()[0]}
try:
    import torch
except Exception as exc:
    found["torch_error"] = f"{type(exc).__name__}: {exc}"
else:
    cuda = torch.cuda.is_available()
    found.update(torch=torch.__version__, cuda_version=torch.version.cuda, cuda=cuda)
    found["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    found["triton"] = __import__("triton").__version__ if find_spec("triton") else None
print(json.dumps(found))
"""


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    # PIP_BREAK_SYSTEM_PACKAGES: the GPU image's python may be marked externally managed;
    # that machine is discarded after the run.
    env = {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_CONSTRAINT": "",
        "PIP_BREAK_SYSTEM_PACKAGES": "1",
    }
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env, check=False)


def make_wheelhouse() -> int:
    """Download the runtime dependencies' wheels for Python 3.12, at the versions this
    venv tested (networked machine only)."""
    from importlib import metadata

    WHEELHOUSE.mkdir(exist_ok=True)
    for old in WHEELHOUSE.glob("*.whl"):
        old.unlink()
    pins = []
    for distribution in RUNTIME.values():
        try:
            pins.append(f"{distribution}=={metadata.version(distribution)}")
        except metadata.PackageNotFoundError:  # not needed here: the newest release
            pins.append(distribution)
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(WHEELHOUSE), *pins]
    done = subprocess.run(command, check=False, env={**os.environ, "PIP_CONSTRAINT": ""})
    size = sum(p.stat().st_size for p in WHEELHOUSE.glob("*.whl"))
    print(f"{WHEELHOUSE.name}/: {len(pins)} wheels, {size / 2**20:.1f} MiB")
    if size > MAX_WHEELHOUSE_BYTES:
        print(f"error: the wheelhouse is over {MAX_WHEELHOUSE_BYTES >> 20} MiB", file=sys.stderr)
        return 1
    return done.returncode


def install(lines: list[str]) -> str | None:
    """Install what is missing from the wheelhouse, then aotcache from this tree.
    Returns None when done, else why not (one line)."""
    missing = [dist for module, dist in RUNTIME.items() if importlib.util.find_spec(module) is None]
    if missing:
        wheels = [str(w) for d in missing for w in WHEELHOUSE.glob(f"{d.replace('-', '_')}-*.whl")]
        lines.append(f"- missing here, installed from {WHEELHOUSE.name}/: {', '.join(missing)}")
        if len(wheels) < len(missing):
            why = f"not in {WHEELHOUSE.name}/ (run `make gpu-wheelhouse` on a networked machine): {', '.join(missing)}"
            lines.append(f"- **{why}**")
            return why
        done = _pip("install", "-q", "--no-deps", *wheels)
        if done.returncode != 0:
            lines.append(f"- **installing the wheelhouse failed**: {done.stderr.strip()[-500:]}")
            return f"installing the wheelhouse failed: {_last_line(done.stderr)}"
    done = _pip("install", "-q", "--no-deps", "--no-build-isolation", "-e", str(REPO))
    if done.returncode != 0:
        lines.append(f"- **installing aotcache failed**: {done.stderr.strip()[-800:]}")
        return f"installing aotcache failed: {_last_line(done.stderr)}"
    lines.append("- aotcache installed from the tree (`pip install --no-deps --no-build-isolation -e .`)")
    return None


def _last_line(text: str) -> str:
    stripped = text.strip().splitlines()
    return stripped[-1] if stripped else "(no output)"


def probe(python: str = sys.executable) -> dict[str, Any]:
    """What `python` has: its version, torch, CUDA and its devices, Triton; or, under
    "torch_error", why torch does not import. In a child, so that this process never
    imports torch nor initializes CUDA."""
    try:
        done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return {"torch_error": "probing torch took over 300 s"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"torch_error": f"the probe failed (exit {done.returncode}): {_last_line(done.stderr)}"}


def describe(machine: dict[str, Any]) -> str:
    if "torch_error" in machine:
        return f"python {machine.get('python', '?')}, no usable torch: {machine['torch_error']}"
    devices = machine.get("devices") or []
    where = f"{len(devices)} × {', '.join(sorted(set(devices)))}" if devices else "no CUDA device"
    return (
        f"python {machine['python']}, torch {machine['torch']}, CUDA {machine['cuda_version']}, "
        f"triton {machine.get('triton') or 'absent'}: {where}"
    )


def no_device_reason(machine: dict[str, Any]) -> str | None:
    """Why no GPU test can run on this machine, or None when a CUDA device is there."""
    if "torch_error" in machine:
        return f"torch is not importable by {sys.executable} ({machine['torch_error']})"
    if machine.get("cuda"):
        return None
    build = f"CUDA {machine['cuda_version']}" if machine.get("cuda_version") else "a CPU-only build"
    return f"no CUDA device: torch {machine['torch']} ({build}), torch.cuda.is_available() is False"


@dataclass
class Counts:
    """What the JUnit XML says of each test case."""

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    skip_reasons: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errors + self.skipped

    def skips(self) -> str:
        return "; ".join(f"{n} × {reason}" for reason, n in self.skip_reasons.most_common())


def junit_counts(path: Path) -> Counts:
    counts = Counts()
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        if "failure" in tags:
            counts.failed += 1
        elif "error" in tags:
            counts.errors += 1
        elif (skipped := case.find("skipped")) is not None:
            counts.skipped += 1
            counts.skip_reasons[skipped.get("message") or "no reason given"] += 1
        else:
            counts.passed += 1
    return counts


def verdict(code: int, counts: Counts | None, machine: dict[str, Any], timeout: float) -> tuple[int, str]:
    """The exit status and the one-line verdict of a pytest run that exited `code`:
    0 only where GPU tests ran and none failed."""
    if code == 124:
        return 124, f"did not finish: the GPU suite ran past its {timeout:.0f} s (see gpu-pytest.log)"
    if counts is None:
        return NOTHING_RAN, f"nothing ran: pytest exited {code} and wrote no JUnit report (see gpu-pytest.log)"
    if counts.failed or counts.errors:
        return 1, (
            f"FAILED: {counts.failed} failed and {counts.errors} errors of {counts.total} GPU tests "
            f"({counts.passed} passed, {counts.skipped} skipped)"
        )
    if counts.total == 0:
        return NOTHING_RAN, f"nothing ran: no GPU test was collected (pytest exit {code})"
    if counts.passed == 0:
        why = no_device_reason(machine) or "every one skipped"
        return NOTHING_RAN, f"nothing ran: 0 of {counts.total} GPU tests ran ({why}; skipped: {counts.skips()})"
    if code != 0:
        return code, f"FAILED: pytest exited {code} ({counts.passed} of {counts.total} GPU tests passed)"
    skipped = f", {counts.skipped} skipped ({counts.skips()})" if counts.skipped else ""
    return 0, f"ran: {counts.passed} of {counts.total} GPU tests passed{skipped}"


def run_suite(report: Path, timeout: float, lines: list[str], machine: dict[str, Any]) -> tuple[int, str]:
    """`pytest -m gpu` on the GPU suite, with no plugin but pytest's own (the image may have
    none of the dev tools, and pyproject's addopts are replaced); the verdict from its
    JUnit XML."""
    log_path, junit = report / "gpu-pytest.log", report / "gpu-junit.xml"
    junit.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-s", "-ra", "-p", "no:cacheprovider"]
    command += ["-o", "addopts=", "--durations=20", f"--junitxml={junit}", *SUITE]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            done = subprocess.run(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = 124
    text = log_path.read_text(errors="replace")
    counts = junit_counts(junit) if junit.is_file() and code != 124 else None
    lines.append(f"- `pytest -m gpu`: exit {code} in {time.perf_counter() - started:.0f} s")
    # the short summary, the slowest tests, and what the tests measured (tables, `measured:` lines)
    shown = [
        line
        for line in text.splitlines()
        if line.startswith(("PASSED", "FAILED", "SKIPPED", "ERROR", "=", "|", "measured:")) or DURATION.match(line)
    ]
    lines += ["", "```", *shown[-80:], "```"]
    return verdict(code, counts, machine, timeout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="check", choices=["check", "wheelhouse"])
    parser.add_argument("--report", default=os.environ.get("GPU_REPORT") or os.environ.get("OUT") or "gpu-report")
    parser.add_argument("--timeout", type=float, default=480.0, help="seconds for the GPU suite")
    parser.add_argument(
        "--no-install", action="store_true", help="run with what this python has: install neither deps nor aotcache"
    )
    args = parser.parse_args()
    if args.what == "wheelhouse":
        return make_wheelhouse()
    report = Path(args.report)
    report.mkdir(parents=True, exist_ok=True)
    machine = probe()
    lines = [f"- machine: {describe(machine)}"]
    if "torch_error" in machine:  # never install into a python that has no torch
        hint = "run it with the python that has the machine's torch (make gpu-check GPU_PYTHON=...)"
        code, line = NOTHING_RAN, f"nothing ran: {no_device_reason(machine)}; {hint}"
    elif not args.no_install and (failed_install := install(lines)):
        code, line = NOTHING_RAN, f"nothing ran: {failed_install}"
    else:
        code, line = run_suite(report, args.timeout, lines, machine)
    text = "\n".join(["# aotcache gpu-check", "", f"**{line}**", "", *lines]) + "\n"
    (report / "gpu-check.md").write_text(text)
    print(text)
    print(f"gpu-check: {line} (report: {report / 'gpu-check.md'})")
    return code


if __name__ == "__main__":
    sys.exit(main())
