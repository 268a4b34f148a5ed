"""A manifest's inner records, typed: its pieces and its units (its artifacts are
formats.artifact.Artifact). Read once, after the schema check (schema.py), so that
everything past the parser reads attributes, never string keys; their JSON form is the
manifest's, key for key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Piece:
    """One piece of the split graph: `compiled` (an artifact per unit), `eager` (run
    as its FX code) or `splitting_op` (the opaque op it was cut at, `op`)."""

    kind: str
    digest: str  # what identical pieces share: one artifact per unit for all of them
    code: str  # the piece's FX code, a file of the entry
    single_output: bool
    op: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Piece:
        return cls(data["kind"], data["digest"], data["code"], bool(data["single_output"]), data.get("op"))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "digest": self.digest,
            "code": self.code,
            "single_output": self.single_output,
            "op": self.op,
        }


@dataclass(frozen=True)
class Unit:
    """One compile range or size, `start`..`end` inclusive: the artifact each unique
    piece runs there (piece digest -> artifact name), or, for a size the trace does not
    hold at, why it is `refused` (served by nothing: a clear error instead)."""

    start: int
    end: int
    artifacts: dict[str, str] = field(default_factory=dict)
    refused: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Unit:
        start, end = data["range"]
        return cls(int(start), int(end), dict(data["artifacts"]), data.get("refused"))

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"range": [self.start, self.end], "artifacts": dict(self.artifacts)}
        if self.refused is not None:
            found["refused"] = self.refused
        return found

    @property
    def range(self) -> list[int]:
        return [self.start, self.end]

    @property
    def served(self) -> bool:
        return self.refused is None
