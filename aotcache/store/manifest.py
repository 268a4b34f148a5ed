"""manifest.json: everything the loader needs to find, check and run an entry.

The file is canonical JSON (sorted keys, no insignificant whitespace) and carries the
sha256 of its own content, so that any changed byte is detected, and it lists the
sha256 and size of every other file of the entry. Signing the manifest therefore signs
the whole entry. `aotcache inspect-cache KEY` shows it in readable form.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from aotcache.errors import CorruptEntry, UnsupportedFormat
from aotcache.formats.artifact import Artifact
from aotcache.key.factors import Factor, factors_from_json
from aotcache.key.lookup import FORMAT_VERSION
from aotcache.store.traced_state import TracedState

from .records import Piece, Unit
from .schema import check_structure
from .structure import SchemaError

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"


@dataclass
class FileRecord:
    sha256: str
    bytes: int


@dataclass
class Manifest:
    entry_id: str
    tool_version: str
    created: str | None  # from SOURCE_DATE_EPOCH, else None: a build's bytes never hold its wall clock
    lookup: list[Factor]
    build: list[Factor]
    recorded: dict[str, Any]
    config: dict[str, Any]
    model: dict[str, Any]
    input_spec: dict[str, Any]
    graph_inputs: list[dict[str, Any]]
    output_spec: str | None
    sources: list[dict[str, str]]
    stitch: str
    pieces: dict[str, Piece]
    units: list[Unit]
    artifacts: dict[str, Artifact]
    files: dict[str, FileRecord]
    stats: dict[str, Any] = field(default_factory=dict)
    output_dims: list[list[int]] = field(default_factory=list)
    unit_keys: dict[str, str] = field(default_factory=dict)  # unit key -> artifact name (remote reuse)
    traced_state: TracedState = field(default_factory=TracedState)  # what the trace read (store/traced_state.py)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(replace(self, pieces={}, units=[], artifacts={}))
        data["pieces"] = {name: piece.to_json() for name, piece in self.pieces.items()}
        data["units"] = [unit.to_json() for unit in self.units]
        data["artifacts"] = {name: artifact.to_json() for name, artifact in self.artifacts.items()}
        data["lookup"] = [f.to_json() for f in self.lookup]
        data["build"] = [f.to_json() for f in self.build]
        data["traced_state"] = self.traced_state.to_json()
        return data

    def to_bytes(self) -> bytes:
        body = self.to_json()
        body["checksum"] = _checksum(body)
        return _canonical(body) + b"\n"

    @property
    def total_bytes(self) -> int:
        return sum(record.bytes for record in self.files.values())

    @property
    def served_units(self) -> list[Unit]:
        """The units a size is dispatched to (not those refused)."""
        return [unit for unit in self.units if unit.served]

    @property
    def model_class(self) -> str:
        return str(self.model.get("class", "?"))


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in body.items() if k != "checksum"})).hexdigest()


def _corrupt(entry_id: str | None, why: str) -> CorruptEntry:
    return CorruptEntry(
        f"manifest of entry {entry_id or '?'} is corrupt: {why}",
        entry_id=entry_id,
        hint="run `aotcache clear --broken` and precompile again",
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def parse(raw: bytes, entry_id: str | None = None) -> Manifest:
    """Parse and validate manifest bytes; raise CorruptEntry or UnsupportedFormat."""
    try:
        body = json.loads(raw.decode("ascii"), parse_constant=_no_constants, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise _corrupt(entry_id, f"not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(body, dict):
        raise _corrupt(entry_id, "not a JSON object")
    version = body.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _corrupt(entry_id, "no format_version")
    if version > FORMAT_VERSION:
        raise UnsupportedFormat(
            f"entry {entry_id or '?'} has format version {version}; this aotcache reads up to {FORMAT_VERSION}",
            entry_id=entry_id,
            hint="upgrade aotcache, or precompile again with this version",
        )
    try:
        if body.get("checksum") != _checksum(body) or _canonical(body) + b"\n" != raw:
            raise _corrupt(entry_id, "its checksum does not match its content")
        check_structure(body)
    except (SchemaError, ValueError, RecursionError) as exc:
        raise _corrupt(entry_id, str(exc)[:300]) from None
    return _from_body(body, version)


def _from_body(body: dict[str, Any], version: int) -> Manifest:
    """The Manifest of a body whose structure check_structure accepted."""
    return Manifest(
        entry_id=body["entry_id"],
        tool_version=body["tool_version"],
        created=body["created"],
        lookup=factors_from_json(body["lookup"]),
        build=factors_from_json(body["build"]),
        recorded=body["recorded"],
        config=body["config"],
        model=body["model"],
        input_spec=body["input_spec"],
        graph_inputs=body["graph_inputs"],
        output_spec=body["output_spec"],
        sources=body["sources"],
        stitch=body["stitch"],
        pieces={name: Piece.from_json(piece) for name, piece in body["pieces"].items()},
        units=[Unit.from_json(unit) for unit in body["units"]],
        artifacts={name: Artifact.from_json(artifact) for name, artifact in body["artifacts"].items()},
        files={path: FileRecord(r["sha256"], r["bytes"]) for path, r in body["files"].items()},
        stats=body["stats"],
        output_dims=body["output_dims"],
        unit_keys=body.get("unit_keys", {}),
        traced_state=TracedState.from_json(body.get("traced_state", TracedState().to_json())),
        format_version=version,
    )
