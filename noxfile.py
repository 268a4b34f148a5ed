"""The torch matrix (`make test-matrix`): the whole suite on every torch aotcache supports.

One virtual environment per torch version (`.nox/`), all installing from one folder of
downloaded wheels (`.matrix/wheels`, gitignored: pip's own HTTP cache stores nothing on
the project's machines, and the CUDA wheels are 0.5-1 GB each); each pins its torch with
a constraint file of its own (PIP_CONSTRAINT), which also lifts a machine-wide cap.
Each version runs the suite, then the demo (precompile, then a compiler-free load in a
fresh process), timed; `cross_torch` loads an entry built under one torch with the next; `gpu_offline`
runs `make gpu-check` with no network on a venv whose torch was installed beforehand,
as on the GPU machine; `matrix_table` writes the table into benchmarks/results/ and
the README.

    make test-matrix                        # everything (~80 min on 2 cores, ~25 GB)
    .venv/bin/nox -s "torch(2.11.0)"         # one version
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import nox

REPO = Path(__file__).resolve().parent
MATRIX = REPO / ".matrix"
RESULTS = MATRIX / "results"
TORCH_VERSIONS = ["2.11.0", "2.12.1", "2.13.0", "2.14.1", "2.15.0"]
# The GPU machine's torch: the offline install check uses it.
GPU_TORCH = "2.11.0"
# As `make test`: one pytest worker per core (up to 4), each test file on one worker so
# that its module fixtures are built once.
XDIST = ["-n", "auto", "--maxprocesses", "4", "--dist", "loadfile"]

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["torch", "cross_torch", "gpu_offline", "matrix_table"]


def _pip_env(torch_version: str) -> dict[str, str]:
    constraints = MATRIX / "constraints" / f"torch-{torch_version}.txt"
    constraints.parent.mkdir(parents=True, exist_ok=True)
    constraints.write_text(f"torch=={torch_version}\n")
    return {"PIP_CONSTRAINT": str(constraints)}


def _install(session: nox.Session, torch_version: str, *requirements: str, editable: str | None = None) -> None:
    """Download what is missing into .matrix/wheels (a file already there is reused),
    then install from that folder alone (`editable`: a project directory, as `-e`)."""
    env = _pip_env(torch_version)
    wheels = str(MATRIX / "wheels")
    project = [editable] if editable else []
    pip = ["python", "-m", "pip"]
    session.run(*pip, "download", "-q", "-d", wheels, "setuptools>=68", *project, *requirements, env=env)
    editable_args = ["-e", editable] if editable else []
    session.run(*pip, "install", "-q", "--no-index", "--find-links", wheels, *editable_args, *requirements, env=env)


def _timed(session: nox.Session, *args: str, **kwargs: object) -> float:
    started = time.perf_counter()
    session.run(*args, **kwargs)  # type: ignore[arg-type]
    return round(time.perf_counter() - started, 1)


def _junit_counts(path: Path) -> dict[str, int]:
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    total, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    return {"passed": total - failed - skipped, "failed": failed, "skipped": skipped}


def _venv_size(session: nox.Session) -> int:
    root = Path(session.virtualenv.location)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@nox.session
@nox.parametrize("torch", TORCH_VERSIONS, ids=TORCH_VERSIONS)
def torch(session: nox.Session, torch: str) -> None:
    """The whole suite and the demo on one torch."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record: dict[str, object] = {"torch": torch, "python": session.virtualenv.location}
    started = time.perf_counter()
    _install(session, torch, editable=".[dev]")
    record["install_s"] = round(time.perf_counter() - started, 1)
    record["venv_gb"] = round(_venv_size(session) / 1e9, 1)
    installed = session.run("python", "-c", "import torch; print(torch.__version__)", silent=True)
    record["torch_installed"] = str(installed).strip().splitlines()[-1]
    junit = RESULTS / f"{torch}.xml"
    started = time.perf_counter()
    pytest = ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--run-slow", *XDIST, f"--junitxml={junit}"]
    session.run(*pytest, success_codes=[0, 1])
    record["suite_s"] = round(time.perf_counter() - started, 1)
    record.update(_junit_counts(junit))
    demo = MATRIX / f"demo-{torch}"
    shutil.rmtree(demo, ignore_errors=True)
    record["precompile_s"] = _timed(
        session, "aotcache", "precompile", "examples/tiny_llama.py:spec", "--cache-dir", str(demo), "-q"
    )
    record["load_s"] = _timed(session, "python", "examples/serve.py", "--cache-dir", str(demo))
    (RESULTS / f"{torch}.json").write_text(json.dumps(record, indent=2) + "\n")
    if record["failed"]:
        session.error(f"torch {torch}: {record['failed']} test(s) failed")


@nox.session(python=False)
def cross_torch(session: nox.Session) -> None:
    """An entry built under each torch, loaded under the next: a clean miss naming
    torch.version (tests/test_cross_torch.py, run by the loading version's python)."""
    records = [json.loads(p.read_text()) for v in TORCH_VERSIONS if (p := RESULTS / f"{v}.json").is_file()]
    if len(records) < 2:
        session.error("cross_torch needs two torch sessions run first")
    for built, loading in itertools.pairwise(records):
        python = str(Path(loading["python"]) / "bin" / "python")
        env = {"AOTCACHE_BUILD_PYTHON": str(Path(built["python"]) / "bin" / "python")}
        junit = RESULTS / f"cross-{built['torch']}-{loading['torch']}.xml"
        session.run(
            python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cross_torch", f"--junitxml={junit}", env=env
        )
        counts = _junit_counts(junit)
        if counts["passed"] < 1 or counts["skipped"]:
            session.error(f"the cross-torch test did not run for {built['torch']} -> {loading['torch']}: {counts}")


@nox.session
def gpu_offline(session: nox.Session) -> None:
    """`make gpu-check` as on the GPU machine: torch (the machine's 2.11) installed
    beforehand with what its image has, then no network at all (a network namespace of
    its own) while aotcache installs from the tree and the wheelhouse."""
    image = ["pytest", "typer", "rich", "filelock", "numpy", "setuptools", "transformers"]
    _install(session, GPU_TORCH, f"torch=={GPU_TORCH}", *image)
    session.run("python", "-m", "pip", "uninstall", "-q", "-y", "platformdirs", "aotcache", success_codes=[0, 1])
    session.run("make", "gpu-wheelhouse", external=True)
    python = str(Path(session.virtualenv.location) / "bin" / "python")
    report = MATRIX / "gpu-offline"
    shutil.rmtree(report, ignore_errors=True)
    # Without a device nothing runs, and gpu-check must fail saying so (make exits 2).
    command = ["unshare", "--net", "make", "gpu-check", f"GPU_PYTHON={python}", f"GPU_REPORT={report}"]
    session.run(*command, external=True, success_codes=[2])
    text = (report / "gpu-check.md").read_text()
    if "nothing ran: 0 of" not in text or "needs a CUDA device" not in text:
        session.error("gpu-check did not install offline, run the GPU suite and say that nothing ran")
    (RESULTS / "gpu-offline.json").write_text(json.dumps({"ok": True, "report": text[-4000:]}) + "\n")


@nox.session(python=False)
def matrix_table(session: nox.Session) -> None:
    """The table of every version's results: benchmarks/results/torch-matrix.{json,md},
    and its copies in the README and docs/torch-versions.md (between their markers)."""
    records = [json.loads(p.read_text()) for v in TORCH_VERSIONS if (p := RESULTS / f"{v}.json").is_file()]
    rows = [
        "| torch | install s (venv GB) | suite: passed / failed / skipped (min) | demo precompile s | demo load s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        rows.append(
            f"| {r['torch_installed']} | {r['install_s']:.0f} ({r['venv_gb']}) | {r['passed']} / {r['failed']} / "
            f"{r['skipped']} ({r['suite_s'] / 60:.1f}) | {r['precompile_s']:.1f} | {r['load_s']:.1f} |"
        )
    crossed = sorted(p.stem.removeprefix("cross-") for p in RESULTS.glob("cross-*.xml"))
    table = "\n".join(rows) + (f"\n\nCross-version loads (a clean miss naming torch.version): {', '.join(crossed)}.\n")
    # A record's "note" says what was done to it after its run (e.g. a test re-run alone).
    notes = [f"- torch {r['torch_installed']}: {r['note']}" for r in records if r.get("note")]
    table += ("\n" + "\n".join(notes) + "\n") if notes else ""
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "torch-matrix.json").write_text(json.dumps(records, indent=2) + "\n")
    (out / "torch-matrix.md").write_text(table)
    for page in (REPO / "README.md", REPO / "docs" / "torch-versions.md"):
        _replace_between_markers(page, "torch-matrix", table)
    session.log(table)


def _replace_between_markers(path: Path, name: str, text: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = path.read_text()
    if begin not in content or end not in content:
        print(f"{path.name} has no {begin} ... {end} markers; table not copied there", file=sys.stderr)
        return
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")
