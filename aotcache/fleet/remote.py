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

import hashlib
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aotcache.envs as envs
from aotcache.errors import ConfigError, CorruptEntry
from aotcache.key.factors import Factor

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
    # The entry's lookup factors as JSON text (push records them, so that `explain` needs
    # no blob); None in records pushed before. Untrusted: read with parse_factors.
    lookup_factors: str | None = None

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
            **({"lookup_factors": json.loads(self.lookup_factors)} if self.lookup_factors is not None else {}),
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

    def put_stats(self, name: str, data: bytes) -> None:
        """Store one serving process's stats file (`push --stats`), replacing an older copy
        of the same name; apart from entries, blobs and indexes. ConfigError for a name
        that is not a stats file's (STATS_FILE) or data over MAX_STATS_BYTES."""
        ...

    def stats_files(self) -> list[tuple[str, bytes]]:
        """(name, data) of every stats file the remote holds: each read to at most
        MAX_STATS_BYTES + 1 bytes (one more says it is over the cap); a name that is not a
        stats file's is listed with no bytes and never read, and so is a file that cannot
        be read as one, so that the reader can say why it skips it. Untrusted data."""
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


# -- lookup factors in a record: untrusted JSON data, bounded and checked ---------------------

MAX_FACTORS_BYTES = 64 << 10  # a real entry's are about 2 KB
MAX_FACTORS = 256
MAX_FACTOR_NAME = 200
MAX_VALUE_DEPTH = 16


def factors_text(factors: Sequence[Factor]) -> str:
    """The lookup factors as a record holds them: canonical JSON, [{"name", "value"}...]."""
    items = [f.to_json() for f in factors]
    return json.dumps(items, sort_keys=True, separators=(",", ":"), default=str)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_value(value: Any, depth: int = 0) -> None:
    if depth > MAX_VALUE_DEPTH:
        raise ValueError(f"a value nested deeper than {MAX_VALUE_DEPTH}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("a value that is not a finite number")
    if isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            _check_value(item, depth + 1)
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"a value of type {type(value).__name__}")


def parse_factors(text: Any) -> list[Factor]:
    """A record's lookup factors, read as plain JSON data (never evaluated): at most
    MAX_FACTORS_BYTES, a list of at most MAX_FACTORS {"name", "value"} objects, names
    printable, short and distinct, values JSON nested at most MAX_VALUE_DEPTH deep.
    ValueError saying what is wrong otherwise."""
    if not isinstance(text, str):
        raise ValueError("not a JSON text")
    if len(text.encode("utf-8", "replace")) > MAX_FACTORS_BYTES:
        raise ValueError(f"over {MAX_FACTORS_BYTES} bytes")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(data, list) or len(data) > MAX_FACTORS:
        raise ValueError(f"not a list of at most {MAX_FACTORS} factors")
    factors: list[Factor] = []
    seen: set[str] = set()
    for item in data:
        if not isinstance(item, dict) or set(item) != {"name", "value"}:
            raise ValueError('a factor that is not {"name", "value"}')
        name = item["name"]
        if not isinstance(name, str) or not 0 < len(name) <= MAX_FACTOR_NAME or not name.isprintable():
            raise ValueError(f"a factor name that is not a printable string of at most {MAX_FACTOR_NAME} characters")
        if name in seen:
            raise ValueError(f"factor {name} twice")
        _check_value(item["value"])
        seen.add(name)
        factors.append(Factor(name, item["value"]))
    return factors


# -- serving stats on a remote (`push --stats`, `aotcache stats --remote`) --------------------

# The same rules as aotcache.stats.records' FILE_NAME and MAX_FILE_BYTES (fleet is a lower
# layer and never imports stats; tests/test_stats_remote.py checks that they agree).
STATS_FILE = re.compile(r"^[A-Za-z0-9._-]{1,200}\.json$")
MAX_STATS_BYTES = 4 << 20
MAX_STATS_FILES = 10_000  # read per remote: a fleet writes one file per serving process


def check_stats_file(name: str, data: bytes) -> None:
    """ConfigError unless `name` is a stats file's name and `data` within the cap."""
    if not isinstance(name, str) or not STATS_FILE.match(name):
        raise ConfigError("stats file name", name, "letters, digits, '.', '_' and '-', ending in .json")
    if len(data) > MAX_STATS_BYTES:
        raise ConfigError("stats file", name, f"at most {MAX_STATS_BYTES} bytes, not {len(data)}")


HINT_DAMAGED = "the remote's copy is damaged: push the entry again from the cache that built it"


def read_small(remote: Remote, blob: Blob, limit: int) -> bytes:
    """A small blob, read no further than its recorded size (a remote that sends more is
    cut off, never held in memory)."""
    data = bytearray()
    if blob.size <= limit:
        for chunk in remote.read_blob(blob):
            data += chunk
            if len(data) > blob.size:
                break
    if len(data) != blob.size or hashlib.sha256(data).hexdigest() != blob.sha256:
        raise CorruptEntry(
            f"{remote.url}: blob {blob.path} of {blob.size} bytes does not match its digest {blob.sha256[:12]}",
            hint=HINT_DAMAGED,
        )
    return bytes(data)
