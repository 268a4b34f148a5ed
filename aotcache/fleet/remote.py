"""What a remote holds, whatever it is: content-addressed blobs, one record per entry,
and an index from lookup key to entries, and an index from unit key (one compiled artifact,
backend/reuse.py) to an entry that holds it, so that a build elsewhere can fetch that
artifact alone.

An entry travels as its files, each a blob named by its sha256 (the digest its
manifest already records, so a blob is checked against the manifest, and blobs shared
by entries are stored once), plus a record naming those blobs. Each backend stores the
record in its own way (an OCI image manifest, a small JSON object) but means the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import aotcache.envs as envs

REMOTE_ENV = envs.AOTCACHE_REMOTE
# An entry id, `<lookup key>-<build hash>`: what tags, records and index items must name.
ENTRY_ID = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{16}$")
UNIT_KEY = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


@dataclass(frozen=True)
class Blob:
    """One file of an entry: where it goes in the entry, its sha256 and its size."""

    path: str
    sha256: str
    size: int

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"


@dataclass
class EntryRecord:
    """An entry as a remote holds it: the manifest and signature blobs, every file."""

    entry_id: str
    lookup: str
    created: str
    manifest: Blob
    signature: Blob | None = None
    files: list[Blob] = field(default_factory=list)
    units: list[str] = field(default_factory=list)  # unit keys its manifest lists (publish indexes them)

    @property
    def blobs(self) -> list[Blob]:
        """Every blob, manifest first, each path once, in a stable order."""
        extra = [self.signature] if self.signature else []
        return [self.manifest, *extra, *sorted(self.files, key=lambda b: b.path)]

    @property
    def total_bytes(self) -> int:
        return sum(blob.size for blob in self.blobs)

    def same_bytes(self, other: EntryRecord) -> bool:
        return {(b.path, b.sha256) for b in self.blobs} == {(b.path, b.sha256) for b in other.blobs}

    def to_json(self) -> dict[str, Any]:
        def blob(b: Blob | None) -> dict[str, Any] | None:
            return None if b is None else {"path": b.path, "sha256": b.sha256, "size": b.size}

        return {
            "entry": self.entry_id,
            "lookup": self.lookup,
            "created": self.created,
            "manifest": blob(self.manifest),
            "signature": blob(self.signature),
            "files": [blob(b) for b in sorted(self.files, key=lambda b: b.path)],
        }


class Remote(Protocol):
    """The operations push and pull need; one implementation per kind of remote."""

    url: str

    def entry_ids(self) -> list[str]: ...

    def entries_for_lookup(self, lookup: str) -> list[str]:
        """Entry ids recorded for a lookup key, found without listing every entry."""
        ...

    def record(self, entry_id: str) -> EntryRecord | None: ...

    def unit_record(self, unit_key: str) -> EntryRecord | None:
        """The record of an entry the unit index names for this unit key (untrusted: its
        manifest must list the key, and is checked as a pull checks it)."""
        ...

    def has_blob(self, blob: Blob) -> bool: ...

    def upload_blob(self, blob: Blob, data: bytes) -> None: ...

    def read_blob(self, blob: Blob, offset: int = 0) -> Iterator[bytes]:
        """The blob's bytes from `offset` on, in chunks (as the remote sends them:
        nothing here is trusted until its sha256 is checked)."""
        ...

    def publish(self, record: EntryRecord) -> None:
        """Make an entry visible, after all its blobs are uploaded: its record, then its
        place in the lookup index and the unit index."""
        ...

    def restart_deadline(self) -> None:
        """A new deadline for the next entry (push and pull give each entry its own)."""
        ...

    def missing(self) -> str | None:
        """Why the remote itself does not exist (no such directory, bucket or repository:
        a mistyped URL), or None where it exists, holding entries or not."""
        ...


# How many of a lookup key's entries a load considers (newest first, duplicates dropped):
# each costs a manifest request, and a remote may list any number.
MAX_CANDIDATES = 16


def considered(entry_ids: list[str], lookup: str) -> list[str]:
    """The entries of a lookup index worth a manifest request: well-formed ids of this
    lookup key, each once, at most MAX_CANDIDATES, in the order given."""
    kept: list[str] = []
    for entry_id in entry_ids:
        if ENTRY_ID.match(entry_id) and entry_id.startswith(lookup + "-") and entry_id not in kept:
            kept.append(entry_id)
            if len(kept) == MAX_CANDIDATES:
                break
    return kept
