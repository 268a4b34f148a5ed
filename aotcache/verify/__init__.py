"""Verify: check an entry before rollout, from Python or the CLI, and say why it fails.

Owns every check of an entry against this host and a model, as typed verdicts (`report`,
`results`: PartVerdict, VerifyReport, the JSON schemas of `verify --json`), and both
halves of `verify --run`'s fresh-process check: the parent that starts a cold
interpreter and reads its result (`fresh_process`) and the child that loads the entry
and compares it with eager (`child`). `check()` is what `aotcache verify` runs; the CLI
only parses and renders. Depends on `key`, `store`, `formats` and `serve`; never on the
compile side.

    report = aotcache.verify.check("examples/tiny_llama.py:spec", run=True)
    assert report.ok, report.to_json()
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .results import PARTS_SCHEMA, SCHEMA, CheckResult, PartVerdict, VerifyReport

__all__ = ["PARTS_SCHEMA", "SCHEMA", "CheckResult", "PartVerdict", "VerifyReport", "check"]

ConfigOf = Callable[[dict[str, Any]], Any]  # a spec's config fields -> the CompilationConfig to check


class RunWatcher(Protocol):
    """Shown while one `run` goes on (the CLI's spinner, then a bar over the child's CUDA
    graph captures)."""

    def __enter__(self) -> RunWatcher: ...
    def __exit__(self, *exc: object) -> None: ...
    def update(self, done: int, total: int, label: str) -> None: ...


class _Unwatched:
    def __enter__(self) -> _Unwatched:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, done: int, total: int, label: str) -> None:
        return None


def check(
    target_or_key: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    config_of: ConfigOf | None = None,
    trusted_key: str | os.PathLike[str] | None = None,
    strict: bool = False,
    run: bool = False,
    watch: Callable[[], RunWatcher] | None = None,
) -> VerifyReport:
    """Every check of the entry a TARGET (`module:attr`, `file.py:attr`, `hf:PATH`) would
    load, or of the entry a KEY names; for a model served as parts, of each part's entry.
    `run`: then load each in a fresh, cold process and compare it with eager (started
    only for an entry that passed). `config_of` turns the spec's config fields into the
    config checked (default: those fields under pyproject's [tool.aotcache] and the
    environment); `trusted_key` (else AOTCACHE_TRUSTED_KEY) requires its signature;
    `strict` fails on warnings too; `watch` makes what is shown while each run goes on.
    Raises CacheDirError, TargetError or ConfigError for bad input; a failed check is a
    report with `ok` False, never an exception."""
    from aotcache.store.signing import signature_checker

    checker = signature_checker(trusted_key)
    if ":" in target_or_key:
        target: str | None = target_or_key
        root, model, parts = _target_verdicts(target_or_key, cache_dir, config_of, checker, strict)
    else:
        from aotcache.store.root import open_root

        from .report import verify_entry

        root, model = open_root(cache_dir, must_exist=True), None
        parts = {"": verify_entry(root, target_or_key, verify_signature=checker, strict=strict)}
        target = parts[""].target
    if run:
        _run_each(parts, model, target, root.path, trusted_key, strict, watch or _Unwatched)
    return VerifyReport(model=model, parts=parts, strict=strict)


def _target_verdicts(
    target: str, cache_dir: Any, config_of: ConfigOf | None, checker: Any, strict: bool
) -> tuple[Any, str, dict[str, PartVerdict]]:
    """The cache root, the model's class and the verdict of each entry TARGET loads: its
    own ("") or, for a model served as parts, each part's (by path), with its config."""
    from aotcache.configuration import load_config
    from aotcache.serve.parts import compiled_parts
    from aotcache.store.root import open_root
    from aotcache.target import as_spec, import_target

    from .report import verify_target

    config_of = config_of or (lambda fields: load_config(base=fields, pyproject=True))
    spec = as_spec(import_target(target), origin=target)
    resolved = config_of(spec.config_dict())
    root = open_root(cache_dir, resolved.cache_dir)
    model = spec.build_model()
    parts = compiled_parts(model, config_of)
    checked = [(p.path, p.module, p.config) for p in parts] or [("", model, resolved)]
    verdicts = {
        path: verify_target(root, module, part_config, verify_signature=checker, strict=strict)
        for path, module, part_config in checked
    }
    return root, type(model).__qualname__, verdicts


def _run_each(
    parts: dict[str, PartVerdict],
    model: str | None,
    target: str | None,
    cache_dir: Path,
    trusted_key: str | os.PathLike[str] | None,
    strict: bool,
    watch: Callable[[], RunWatcher],
) -> None:
    """`--run` of each verdict's entry (by part path; "" for a whole model, whose entry
    may still be a part: its part_of says which)."""
    from .fresh_process import checked_run

    for path, verdict in parts.items():
        if verdict.entry:
            part_of = f"{model}.{path}" if path else verdict.part_of
            with (watch if verdict.ok else _Unwatched)() as watcher:
                verdict.run = checked_run(
                    verdict,
                    target,
                    cache_dir,
                    trusted_key=trusted_key,
                    strict=strict,
                    part_of=part_of,
                    progress=watcher.update,
                )
            verdict.ok = verdict.ok and verdict.run.get("ok", False)
