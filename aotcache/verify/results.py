"""What a verify says, typed: one verdict per entry checked (a whole model's, or each
part's for a model served as parts), and the report over them. The CLI renders these
and prints `to_json()` for --json; the schemas below name that JSON's shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA = "aotcache.verify/1"  # one entry: a PartVerdict's JSON and the schema
PARTS_SCHEMA = "aotcache.verify-parts/1"  # a model served as parts: each part's, by path


@dataclass
class CheckResult:
    """One check of an entry (manifest, signature, state, files, environment, sources;
    `lookup` when no entry was found)."""

    check: str
    ok: bool
    status: str  # ok, unknown, skipped, or the failure's reason
    message: str
    differences: list[dict[str, Any]] = field(default_factory=list)  # name, old, new

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "ok": self.ok,
            "status": self.status,
            "message": self.message,
            "differences": self.differences,
        }


@dataclass
class PartVerdict:
    """Every check of one entry against this host (and the model, where there is one),
    and, after `--run`, the fresh process's comparison with eager (`run`)."""

    entry: str | None  # None: no entry found (the `lookup` check says why)
    path: str | None
    model: str | None
    target: str | None  # the TARGET the entry records (what --run imports)
    part_of: str | None
    config: dict[str, Any] | None
    checks: list[CheckResult]
    warnings: list[str]
    strict: bool
    ok: bool
    load_needs: list[str] | None = None
    run: dict[str, Any] | None = None  # the child's JSON (aotcache.verify.child)

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "entry": self.entry,
            "path": self.path,
            "model": self.model,
            "target": self.target,
            "part_of": self.part_of,
            "config": self.config,
        }
        if self.load_needs is not None:
            found["load_needs"] = self.load_needs
        found.update(checks=[c.to_json() for c in self.checks], warnings=self.warnings, strict=self.strict, ok=self.ok)
        if self.run is not None:
            found["run"] = self.run
        return found


@dataclass
class VerifyReport:
    """What `verify` found: the verdict of the entry a TARGET or KEY names (`parts[""]`),
    or of each part's entry, by its path, for a model served as parts."""

    model: str | None
    parts: dict[str, PartVerdict]
    strict: bool

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.parts.values())

    @property
    def whole(self) -> PartVerdict | None:
        return self.parts.get("")

    def to_json(self) -> dict[str, Any]:
        if self.whole is not None:
            return {**self.whole.to_json(), "schema": SCHEMA}
        parts = {path: verdict.to_json() for path, verdict in self.parts.items()}
        return {"schema": PARTS_SCHEMA, "model": self.model, "parts": parts, "strict": self.strict, "ok": self.ok}
