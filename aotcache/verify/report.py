"""Every check of an entry against this host, as a PartVerdict.

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

from aotcache.configuration import CompilationConfig
from aotcache.errors import CacheMiss
from aotcache.formats import load_needs, missing_needs
from aotcache.key.env import thread_count
from aotcache.key.factors import explain, lookup_hash
from aotcache.key.lookup import lookup_factors
from aotcache.store.checks import CHECKS, Problem, problems
from aotcache.store.manifest import SIGNATURE_NAME, Manifest
from aotcache.store.root import CacheRoot
from aotcache.store.scan import candidate_entries, find_entry, nearest_entry
from aotcache.version import __version__

from .results import CheckResult, PartVerdict


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


def report_for(path: Path, *, verify_signature: Any = None, strict: bool = False, model: Any = None) -> PartVerdict:
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
    checks = [
        _check_result(name, by_check.get(name), manifest is not None, bool(unknown), model is not None)
        for name in CHECKS
        if name != "signature" or verify_signature is not None
    ]
    warnings = (_warnings(path, manifest, verify_signature is not None) + unknown) if manifest else []
    return PartVerdict(
        entry=path.name,
        path=str(path),
        model=manifest.model_class if manifest else None,
        target=manifest.recorded.get("target") if manifest else None,
        part_of=manifest.recorded.get("part_of") if manifest else None,
        config=manifest.config if manifest else None,
        load_needs=load_needs(manifest.artifacts) if manifest else [],
        checks=checks,
        warnings=warnings,
        strict=strict,
        ok=all(c.ok for c in checks) and not (strict and warnings),
    )


def _check_result(name: str, problem: Problem | None, readable: bool, unknown: bool, has_model: bool) -> CheckResult:
    if not readable and name != "manifest":
        return CheckResult(name, False, "skipped", "manifest unreadable")
    if problem is None and name == "sources" and unknown:
        return CheckResult(name, True, "unknown", "not checked: files not found from here (see the warning)")
    if name == "state" and not has_model:
        return CheckResult(name, True, "unknown", NO_MODEL)
    if problem is None:
        return CheckResult(name, True, "ok", "ok")
    return CheckResult(name, False, problem.status, problem.message, [d.to_json() for d in problem.differences])


def verify_entry(root: CacheRoot, key: str, *, verify_signature: Any = None, strict: bool = False) -> PartVerdict:
    return report_for(find_entry(root, key), verify_signature=verify_signature, strict=strict)


def verify_target(
    root: CacheRoot,
    model: torch.nn.Module,
    config: CompilationConfig,
    *,
    verify_signature: Any = None,
    strict: bool = False,
) -> PartVerdict:
    """The report of the entry this model and config would load (the first candidate
    that passes, else the newest), or a not-found report explaining the nearest miss."""
    factors = lookup_factors(config, model)
    reports = []
    for path in candidate_entries(root, lookup_hash(factors)):
        report = report_for(path, verify_signature=verify_signature, strict=strict, model=model)
        if report.ok:
            return report
        reports.append(report)
    if reports:
        return reports[0]
    near = nearest_entry(root, factors)
    differences = explain(near.lookup, factors) if near else []
    message = f"no entry for {type(model).__qualname__} with this config and environment in {root.path}"
    lookup = CheckResult(
        "lookup",
        False,
        CacheMiss.reason,
        message + (f"; nearest entry {near.entry_id} differs" if near else ""),
        [d.to_json() for d in differences],
    )
    return PartVerdict(
        entry=None,
        path=None,
        model=type(model).__qualname__,
        target=None,
        part_of=None,
        config=config.to_dict(),
        checks=[lookup],
        warnings=[],
        strict=strict,
        ok=False,
    )
