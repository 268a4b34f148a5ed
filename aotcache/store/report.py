"""`aotcache verify`: every check of an entry against this host, as a report.

Checks (each reported with the factor or file and its old -> new value): manifest,
signature (when a trusted key is configured), state (the settings the trace read, on the
model: `verify TARGET` has one, `verify KEY` does not and says so), files, environment,
sources. Warnings (unsigned entry, another thread count, another aotcache version) fail
only --strict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aotcache.config import CompilationConfig
from aotcache.errors import CacheMiss
from aotcache.formats import load_needs, missing_needs
from aotcache.key.env import thread_count
from aotcache.key.factors import explain, lookup_hash
from aotcache.key.lookup import lookup_factors
from aotcache.version import __version__

from .checks import CHECKS, Problem, problems
from .manifest import SIGNATURE_NAME, Manifest
from .root import CacheRoot
from .scan import candidate_entries, find_entry, nearest_entry


def _warnings(path: Path, manifest: Manifest, signed_check: bool) -> list[str]:
    warnings = []
    if not signed_check and not (path / SIGNATURE_NAME).exists():
        warnings.append("entry is not signed")
    built_threads = manifest.recorded.get("threads")
    if manifest.recorded.get("kernels") and built_threads not in (None, thread_count()):
        warnings.append(
            f"kernels were compiled for {built_threads} threads, this host runs {thread_count()} "
            "(set TORCHINDUCTOR_CPP_THREADS when precompiling to match the serving hosts)"
        )
    if manifest.tool_version != __version__:
        warnings.append(f"built by aotcache {manifest.tool_version}, this is {__version__}")
    lacking = missing_needs(load_needs(manifest.artifacts))
    if lacking:
        warnings.append(f"loading this entry needs {', '.join(lacking)}, which this host lacks")
    return warnings


NO_MODEL = "not checked: no model here (`verify TARGET`, or `verify KEY --run`, checks it on the model)"


def report_for(path: Path, *, verify_signature: Any = None, strict: bool = False, model: Any = None) -> dict[str, Any]:
    """Every check of the entry at `path`; the traced state's on `model` where given."""
    unknown: list[str] = []
    manifest, found = problems(path, verify_signature=verify_signature, warnings=unknown, model=model)
    by_check: dict[str, Problem] = {}
    for problem in found:  # a check may fail in several ways (environment: factors, then host)
        if problem.check in by_check:
            first = by_check[problem.check]
            by_check[problem.check] = Problem(
                first.check,
                first.status,
                f"{first.message}; {problem.message}",
                first.differences + problem.differences,
                first.hint,
            )
        else:
            by_check[problem.check] = problem
    checks = []
    for name in CHECKS:
        if name == "signature" and verify_signature is None:
            continue
        problem = by_check.get(name)
        if manifest is None and name != "manifest":
            checks.append(
                {"check": name, "ok": False, "status": "skipped", "message": "manifest unreadable", "differences": []}
            )
            continue
        if problem is None and name == "sources" and unknown:
            message = "not checked: files not found from here (see the warning)"
            checks.append({"check": name, "ok": True, "status": "unknown", "message": message, "differences": []})
        elif name == "state" and model is None:
            checks.append({"check": name, "ok": True, "status": "unknown", "message": NO_MODEL, "differences": []})
        elif problem is None:
            checks.append({"check": name, "ok": True, "status": "ok", "message": "ok", "differences": []})
        else:
            checks.append({**problem.to_json(), "ok": False})
    warnings = (_warnings(path, manifest, verify_signature is not None) + unknown) if manifest else []
    ok = all(c["ok"] for c in checks) and not (strict and warnings)
    return {
        "entry": path.name,
        "path": str(path),
        "model": manifest.model_class if manifest else None,
        "target": manifest.recorded.get("target") if manifest else None,
        "part_of": manifest.recorded.get("part_of") if manifest else None,
        "config": manifest.config if manifest else None,
        "load_needs": load_needs(manifest.artifacts) if manifest else [],
        "checks": checks,
        "warnings": warnings,
        "strict": strict,
        "ok": ok,
    }


def verify_entry(root: CacheRoot, key: str, *, verify_signature: Any = None, strict: bool = False) -> dict[str, Any]:
    return report_for(find_entry(root, key), verify_signature=verify_signature, strict=strict)


def verify_target(
    root: CacheRoot,
    model: torch.nn.Module,
    config: CompilationConfig,
    *,
    verify_signature: Any = None,
    strict: bool = False,
) -> dict[str, Any]:
    """The report of the entry this model and config would load (the first candidate
    that passes, else the newest), or a not-found report explaining the nearest miss."""
    factors = lookup_factors(config, model)
    reports = []
    for path in candidate_entries(root, lookup_hash(factors)):
        report = report_for(path, verify_signature=verify_signature, strict=strict, model=model)
        if report["ok"]:
            return report
        reports.append(report)
    if reports:
        return reports[0]
    near = nearest_entry(root, factors)
    differences = explain(near.lookup, factors) if near else []
    message = f"no entry for {type(model).__qualname__} with this config and environment in {root.path}"
    return {
        "entry": None,
        "path": None,
        "model": type(model).__qualname__,
        "target": None,
        "part_of": None,
        "config": config.to_dict(),
        "checks": [
            {
                "check": "lookup",
                "ok": False,
                "status": CacheMiss.reason,
                "message": message + (f"; nearest entry {near.entry_id} differs" if near else ""),
                "differences": [d.to_json() for d in differences],
            }
        ],
        "warnings": [],
        "strict": strict,
        "ok": False,
    }
