"""manifest.json: everything the loader needs to find, check and run an entry.

The file is canonical JSON (sorted keys, no insignificant whitespace) and carries the
sha256 of its own content, so that any changed byte is detected, and it lists the
sha256 and size of every other file of the entry. Signing the manifest therefore signs
the whole entry. `aotcache inspect-cache KEY` shows it in readable form.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any

from aotcache.errors import CorruptEntry, UnsupportedFormat
from aotcache.key.factors import Factor, factors_from_json
from aotcache.key.lookup import FORMAT_VERSION

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
# Top-level names an entry may hold besides the manifest and its signature.
ENTRY_FOLDERS = ("graph.py", "pieces", "artifacts", "kernels")


@dataclass
class FileRecord:
    sha256: str
    bytes: int


@dataclass
class Manifest:
    entry_id: str
    tool_version: str
    created: str
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
    pieces: dict[str, dict[str, Any]]
    units: list[dict[str, Any]]
    artifacts: dict[str, dict[str, Any]]
    files: dict[str, FileRecord]
    stats: dict[str, Any] = field(default_factory=dict)
    output_dims: list[list[int]] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lookup"] = [f.to_json() for f in self.lookup]
        data["build"] = [f.to_json() for f in self.build]
        return data

    def to_bytes(self) -> bytes:
        body = self.to_json()
        body["checksum"] = _checksum(body)
        return _canonical(body) + b"\n"

    @property
    def total_bytes(self) -> int:
        return sum(record.bytes for record in self.files.values())

    @property
    def model_class(self) -> str:
        return str(self.model.get("class", "?"))

    def referenced_paths(self) -> list[str]:
        """Every file the manifest's structure points at (each must be listed in files)."""
        paths = [self.stitch]
        paths += [p["code"] for p in self.pieces.values() if p.get("code")]
        for artifact in self.artifacts.values():
            paths.append(artifact["wrapper"])
            paths += list(artifact.get("kernels", {}).values())
        return paths


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in body.items() if k != "checksum"})).hexdigest()


def parse(raw: bytes, entry_id: str | None = None) -> Manifest:
    """Parse and validate manifest bytes; raise CorruptEntry or UnsupportedFormat."""

    def corrupt(why: str) -> CorruptEntry:
        return CorruptEntry(
            f"manifest of entry {entry_id or '?'} is corrupt: {why}",
            entry_id=entry_id,
            hint="run `aotcache clear --broken` and precompile again",
        )

    try:
        body = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise corrupt(f"not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise corrupt("not a JSON object")
    version = body.get("format_version")
    if not isinstance(version, int):
        raise corrupt("no format_version")
    if version > FORMAT_VERSION:
        raise UnsupportedFormat(
            f"entry {entry_id or '?'} has format version {version}; this aotcache reads up to {FORMAT_VERSION}",
            entry_id=entry_id,
            hint="upgrade aotcache, or precompile again with this version",
        )
    if body.get("checksum") != _checksum(body) or _canonical(body) + b"\n" != raw:
        raise corrupt("its checksum does not match its content")
    try:
        manifest = Manifest(
            entry_id=_str(body, "entry_id"),
            tool_version=_str(body, "tool_version"),
            created=_str(body, "created"),
            lookup=factors_from_json(_list(body, "lookup")),
            build=factors_from_json(_list(body, "build")),
            recorded=_dict(body, "recorded"),
            config=_dict(body, "config"),
            model=_dict(body, "model"),
            input_spec=_dict(body, "input_spec"),
            graph_inputs=_list(body, "graph_inputs"),
            output_spec=body.get("output_spec"),
            sources=_list(body, "sources"),
            stitch=_str(body, "stitch"),
            pieces=_dict(body, "pieces"),
            units=_list(body, "units"),
            artifacts=_dict(body, "artifacts"),
            files={
                _safe_path(p): FileRecord(str(r["sha256"]), int(r["bytes"])) for p, r in _dict(body, "files").items()
            },
            stats=_dict(body, "stats"),
            output_dims=_list(body, "output_dims"),
            format_version=version,
        )
        unlisted = [p for p in manifest.referenced_paths() if _safe_path(p) not in manifest.files]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise corrupt(f"unexpected structure ({exc})") from None
    if unlisted:
        raise corrupt(f"it refers to {unlisted[0]!r}, which it does not list")
    return manifest


def _safe_path(path: Any) -> str:
    """A relative, normalised path inside the entry: no '..', no absolute, no oddities."""
    if not isinstance(path, str) or not path or "\\" in path or "\0" in path:
        raise ValueError(f"bad path {path!r}")
    if posixpath.isabs(path) or posixpath.normpath(path) != path or path.split("/")[0] in ("..", "."):
        raise ValueError(f"path {path!r} leaves the entry")
    if path.split("/")[0] not in ENTRY_FOLDERS:
        raise ValueError(f"path {path!r} is outside the entry's folders")
    return path


def _str(body: dict[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} is not a string")
    return value


def _list(body: dict[str, Any], name: str) -> list[Any]:
    value = body[name]
    if not isinstance(value, list):
        raise TypeError(f"{name} is not a list")
    return value


def _dict(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body[name]
    if not isinstance(value, dict):
        raise TypeError(f"{name} is not an object")
    return value
