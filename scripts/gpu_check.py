"""`make gpu-check`: install aotcache on a machine that already has torch (the GPU image:
torch 2.11 + CUDA 13, Triton 3.6, Python 3.12, no network) and run the GPU suite.

    python3 scripts/gpu_check.py [--report DIR] [--timeout SECONDS]
    python3 scripts/gpu_check.py wheelhouse      # on a networked machine, beforehand

It never reaches a network: aotcache installs from this tree with the machine's own
torch (`pip install --no-deps --no-build-isolation -e .`), and any pure-Python dependency
the machine lacks comes from `.wheelhouse/` (made by `make gpu-wheelhouse`, carried with
the tree). It then runs `pytest -m gpu` under a time limit and writes what it saw to
DIR/gpu-check.md (and the pytest log beside it). Without a CUDA device every GPU test
skips with its reason, and the report says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO / ".wheelhouse"
# aotcache's runtime dependencies (import name -> distribution), what typer and rich
# need in turn, and what the editable install needs; all pure Python. torch and numpy
# come with the machine.
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
    # setuptools before 70.1 builds an editable install only with `wheel` beside it
    "wheel": "wheel",
}
WHEEL_PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
MAX_WHEELHOUSE_BYTES = 16 << 20


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_CONSTRAINT": ""}
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


def install(lines: list[str]) -> bool:
    """Install what is missing from the wheelhouse, then aotcache from this tree."""
    missing = [dist for module, dist in RUNTIME.items() if importlib.util.find_spec(module) is None]
    if missing:
        wheels = [str(w) for d in missing for w in WHEELHOUSE.glob(f"{d.replace('-', '_')}-*.whl")]
        lines.append(f"- missing here, installed from {WHEELHOUSE.name}/: {', '.join(missing)}")
        if len(wheels) < len(missing):
            lines.append(f"- **not in the wheelhouse** (run `make gpu-wheelhouse` on a networked machine): {missing}")
            return False
        done = _pip("install", "-q", "--no-deps", *wheels)
        if done.returncode != 0:
            lines.append(f"- **installing the wheelhouse failed**: {done.stderr.strip()[-500:]}")
            return False
    done = _pip("install", "-q", "--no-deps", "--no-build-isolation", "-e", str(REPO))
    if done.returncode != 0:
        lines.append(f"- **installing aotcache failed**: {done.stderr.strip()[-800:]}")
        return False
    lines.append("- aotcache installed from the tree (`pip install --no-deps --no-build-isolation -e .`)")
    return True


def describe_machine(lines: list[str]) -> None:
    code = (
        "import sys, torch; from importlib.util import find_spec\n"
        "cuda = torch.cuda.is_available()\n"
        "name = torch.cuda.get_device_name(0) if cuda else 'no CUDA device'\n"
        "triton = __import__('triton').__version__ if find_spec('triton') else 'absent'\n"
        "print(f'python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        "triton {triton}: {name}')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    lines.append(f"- machine: {(done.stdout or done.stderr).strip().splitlines()[-1]}")


def run_suite(report: Path, timeout: float, lines: list[str]) -> int:
    log_path = report / "gpu-pytest.log"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-rs", "-v", "-p", "no:cacheprovider"]
    command += ["tests/test_gpu.py", "tests/test_cudagraph.py"]
    started = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False)
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = 124
    text = log_path.read_text()
    summary = [line for line in text.splitlines() if line.startswith(("PASSED", "FAILED", "SKIPPED", "ERROR", "="))]
    lines.append(f"- `pytest -m gpu`: exit {code} in {time.perf_counter() - started:.0f} s")
    lines += ["", "```", *summary[-60:], "```"]
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="check", choices=["check", "wheelhouse"])
    parser.add_argument("--report", default=os.environ.get("GPU_REPORT") or os.environ.get("OUT") or "gpu-report")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds for the GPU suite")
    args = parser.parse_args()
    if args.what == "wheelhouse":
        return make_wheelhouse()
    report = Path(args.report)
    report.mkdir(parents=True, exist_ok=True)
    lines = ["# aotcache gpu-check", ""]
    describe_machine(lines)
    code = run_suite(report, args.timeout, lines) if install(lines) else 3
    (report / "gpu-check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if code in (0, 5) else code


if __name__ == "__main__":
    sys.exit(main())
