"""Explain, before any artifact byte moves, where a load of this model and config would
find its entry: here (an entry of its lookup key that passes a load's checks), on the
remote (one its lookup index lists), or nowhere, and then which entry is nearest (same
model class, fewest differing lookup factors) and each factor that differs, old (the
entry's) -> new (this host's).

A remote entry's lookup factors come from its record (push writes them there); only for
a record pushed before that is its manifest.json fetched, never any other blob. Records
are untrusted: the factors are plain JSON, bounded and checked (remote.parse_factors),
and must hash to the entry's own lookup key; a record that fails is skipped with a
warning. `aotcache explain` renders an Explanation; a load that misses on its remote
raises `remote_miss`'s error, which names the same nearest entry and factors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aotcache.errors import AotCacheError, CacheMiss, Difference, EntryNotFound, RemoteError, printable
from aotcache.key.factors import Factor, explain, lookup_hash
from aotcache.store.checks import MAX_MANIFEST_BYTES, SignatureCheck, open_entry
from aotcache.store.manifest import parse
from aotcache.store.root import CacheRoot
from aotcache.store.scan import candidate_entries, model_class_of, nearest_entry

from .remote import EntryRecord, Remote, considered, parse_factors, read_small

log = logging.getLogger("aotcache.fleet")

SCHEMA = "aotcache.explain/1"
HIT, MISS = "hit", "miss"
LOCAL, REMOTE = "local", "remote"
# Records read to find the nearest remote entry: one per lookup key (all entries of a key
# share its factors), each a small request (an OCI manifest, a JSON record).
MAX_RECORDS = 64


@dataclass
class Nearest:
    """The entry of the same model class whose lookup factors differ least."""

    entry: str
    where: str  # LOCAL or REMOTE
    differences: list[Difference]

    def to_json(self) -> dict[str, Any]:
        return {"entry": self.entry, "where": self.where, "differences": [d.to_json() for d in self.differences]}


@dataclass
class Refusal:
    """An entry of this very lookup key that a load would refuse, and why."""

    entry: str
    where: str
    reason: str  # a CacheMiss reason: stale, corrupt, incompatible-env, untrusted...
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"entry": self.entry, "where": self.where, "reason": self.reason, "message": self.message}


@dataclass
class Explanation:
    """Whether a load would hit, where, and otherwise the nearest entry and why it differs."""

    model: str
    lookup: str
    factors: list[Factor]
    cache_dir: str
    remote: str | None = None
    verdict: str = MISS
    where: str | None = None
    entry: str | None = None
    nearest: Nearest | None = None
    refused: list[Refusal] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def hit(self) -> bool:
        return self.verdict == HIT

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "verdict": self.verdict,
            "where": self.where,
            "entry": self.entry,
            "lookup": self.lookup,
            "factors": [f.to_json() for f in self.factors],
            "nearest": self.nearest.to_json() if self.nearest else None,
            "refused": [r.to_json() for r in self.refused],
            "cache_dir": self.cache_dir,
            "remote": self.remote,
            "warnings": self.warnings,
        }


def explain_load(
    model_class: str,
    factors: list[Factor],
    root: CacheRoot,
    remote: Remote | None = None,
    *,
    model: Any = None,
    verify_signature: SignatureCheck | None = None,
) -> Explanation:
    """What a load of a model with these lookup factors would do on this host. `model`
    (built without weights is enough) lets the local check include the settings its
    trace read, as a load checks them. RemoteError for a remote that does not exist or
    cannot be used."""
    lookup = lookup_hash(factors)
    found = Explanation(model_class, lookup, list(factors), str(root.path), remote.url if remote else None)
    entry, found.refused = local_entry(root, lookup, model, verify_signature)
    where = LOCAL
    if entry is None and remote is not None:
        if (why := remote.missing()) is not None:  # a mistyped URL, not an empty remote
            raise RemoteError(f"{remote.url}: {why}", hint="check the remote's URL")
        listed = considered(remote.entries_for_lookup(lookup), lookup)  # newest first
        entry, where = (listed[0] if listed else None), REMOTE
    if entry is not None:
        found.verdict, found.where, found.entry = HIT, where, entry
        return found
    found.nearest = nearest(root, remote, factors, found.warnings)
    return found


def local_entry(
    root: CacheRoot, lookup: str, model: Any = None, verify_signature: SignatureCheck | None = None
) -> tuple[str | None, list[Refusal]]:
    """The newest local entry of this lookup key that passes every check a load makes
    (its files read and hashed, nothing of it run), and why each newer one would not."""
    refused: list[Refusal] = []
    for path in candidate_entries(root, lookup):
        try:
            open_entry(path, verify_signature=verify_signature, model=model)
        except CacheMiss as exc:
            refused.append(Refusal(path.name, LOCAL, exc.reason, exc.one_line()))
            continue
        except OSError as exc:  # removed while we read it
            refused.append(Refusal(path.name, LOCAL, EntryNotFound.reason, f"unreadable: {exc}"))
            continue
        return path.name, refused
    return None, refused


def nearest(root: CacheRoot, remote: Remote | None, factors: Sequence[Factor], warnings: list[str]) -> Nearest | None:
    """The nearest entry of another lookup key, here or on the remote (here on a tie)."""
    best = nearest_local(root, factors)
    if remote is not None:
        there = nearest_remote(remote, factors, warnings)
        if there is not None and (best is None or len(there.differences) < len(best.differences)):
            best = there
    return best


def nearest_local(root: CacheRoot, factors: Sequence[Factor]) -> Nearest | None:
    """The local entry of the same model class and another lookup key whose lookup
    factors differ least (entries of this key are the load's candidates, not the nearest)."""
    manifest = nearest_entry(root, factors, other_than=lookup_hash(factors))
    return None if manifest is None else Nearest(manifest.entry_id, LOCAL, explain(manifest.lookup, factors))


def nearest_remote(remote: Remote, factors: Sequence[Factor], warnings: list[str]) -> Nearest | None:
    """The remote entry of the same model class and another lookup key whose lookup
    factors differ least: one record read per lookup key (at most MAX_RECORDS), no blob
    but the manifest.json of a record that predates recorded factors."""
    lookup, model_class = lookup_hash(factors), model_class_of(factors)
    by_key: dict[str, list[str]] = {}
    for entry_id in remote.entry_ids():
        by_key.setdefault(entry_id.split("-")[0], []).append(entry_id)
    by_key.pop(lookup, None)
    best: Nearest | None = None
    budget = MAX_RECORDS
    for entry_ids in by_key.values():
        for entry_id in entry_ids:
            if budget == 0:
                warnings.append(f"{remote.url}: only {MAX_RECORDS} records were read to find the nearest entry")
                return best
            budget -= 1
            theirs = remote_factors(remote, entry_id, warnings)
            if theirs is None:
                continue  # said why; another entry of the same key may still tell
            if model_class_of(theirs) == model_class:
                differences = explain(theirs, factors)
                if best is None or len(differences) < len(best.differences):
                    best = Nearest(entry_id, REMOTE, differences)
            break
    return best


def remote_factors(remote: Remote, entry_id: str, warnings: list[str]) -> list[Factor] | None:
    """A remote entry's lookup factors, checked: from its record, else (a record pushed
    before records carried them) from its manifest.json; None with a warning when they
    cannot be read or do not hash to the entry's own lookup key."""
    try:
        record = remote.record(entry_id)
        if record is None:
            return None
        factors = _record_factors(remote, record)
    except (AotCacheError, ValueError, TypeError, KeyError) as exc:  # a damaged or hostile record
        message = exc.one_line() if isinstance(exc, AotCacheError) else f"{type(exc).__name__}: {exc}"
        warnings.append(printable(f"{remote.url}: entry {entry_id} skipped: {message}"))
        return None
    if lookup_hash(factors) != entry_id.split("-")[0]:
        warnings.append(
            printable(f"{remote.url}: entry {entry_id} skipped: its lookup factors do not hash to its lookup key")
        )
        return None
    return factors


def _record_factors(remote: Remote, record: EntryRecord) -> list[Factor]:
    if record.lookup_factors is not None:
        try:
            return parse_factors(record.lookup_factors)
        except ValueError as exc:
            raise ValueError(f"its record's lookup factors are unreadable: {exc}") from None
    raw = read_small(remote, record.manifest, MAX_MANIFEST_BYTES)  # the one blob, checked against its sha256
    return parse(raw, record.entry_id).lookup


def remote_miss(root: CacheRoot, remote: Remote, factors: Sequence[Factor]) -> EntryNotFound:
    """The miss of a load that found no entry of its lookup key here nor on the remote,
    naming the nearest entry (here or there) and each lookup factor that differs.
    Explaining never turns the miss into another error: a remote that fails meanwhile
    leaves the plain miss."""
    lookup = lookup_hash(factors)
    message = f"{remote.url} holds no entry for {model_class_of(factors)} with lookup key {lookup}"
    hint = "precompile and push this model and config from CI"
    warnings: list[str] = []
    try:
        near = nearest(root, remote, factors, warnings)
    except Exception as exc:  # whatever a broken remote makes a client raise
        log.debug("could not find the nearest entry on %s: %s", remote.url, exc)
        near = None
    for warning in warnings:
        log.warning("aotcache: %s", warning)
    if near is None:
        return EntryNotFound(message, hint=hint)
    where = "here" if near.where == LOCAL else "on the remote"
    return EntryNotFound(f"{message}; nearest is {near.entry} ({where})", differences=near.differences, hint=hint)
