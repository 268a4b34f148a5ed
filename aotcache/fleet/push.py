"""Push: send verified local entries to a remote, each blob once, never overwriting."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from aotcache.errors import AotCacheError, RemoteConflict, RemoteError
from aotcache.store.checks import OpenedEntry, open_entry
from aotcache.store.manifest import MANIFEST_NAME, SIGNATURE_NAME
from aotcache.store.root import CacheRoot
from aotcache.store.scan import entry_created, find_entry

from .remote import MAX_FACTORS_BYTES, Blob, EntryRecord, Remote, factors_text
from .transfer import Progress, Transfer

log = logging.getLogger("aotcache.fleet")


def entry_record(opened: OpenedEntry) -> EntryRecord:
    """The record of a verified local entry: its manifest, signature and files as blobs,
    and its lookup factors (so that `explain` can compare them without fetching a blob)."""
    manifest = opened.manifest

    def blob(path: str, data: bytes) -> Blob:
        return Blob(path, hashlib.sha256(data).hexdigest(), len(data))

    files = [Blob(path, record.sha256, record.bytes) for path, record in sorted(manifest.files.items())]
    factors = factors_text(manifest.lookup)  # over the cap a reader refuses: left out, read from the manifest
    return EntryRecord(
        entry_id=manifest.entry_id,
        lookup=manifest.entry_id.split("-")[0],
        created=entry_created(opened.path, manifest) or "",
        manifest=blob(MANIFEST_NAME, opened.raw_manifest),
        signature=blob(SIGNATURE_NAME, opened.signature) if opened.signature is not None else None,
        files=files,
        units=sorted(manifest.unit_keys),
        lookup_factors=factors if len(factors.encode()) <= MAX_FACTORS_BYTES else None,
    )


def _contents(opened: OpenedEntry) -> dict[str, bytes]:
    contents = dict(opened.blobs)
    contents[MANIFEST_NAME] = opened.raw_manifest
    if opened.signature is not None:
        contents[SIGNATURE_NAME] = opened.signature
    return contents


def push_entry(opened: OpenedEntry, remote: Remote, progress: Progress | None = None) -> Transfer:
    """Upload the blobs the remote lacks, then publish the record. An entry of the same
    id with the same bytes is left as it is; with other bytes it is refused."""
    record = entry_record(opened)
    done = Transfer(record.entry_id, "pushed", bytes=record.total_bytes)
    existing = remote.record(record.entry_id)
    if existing is not None:
        if not existing.same_bytes(record):
            raise RemoteConflict(
                f"{remote.url} already holds entry {record.entry_id} with other bytes; push never overwrites",
                hint="remove it from the remote first if it is wrong, or push from the cache that built it",
            )
        done.status = "present"
        done.bytes_skipped = record.total_bytes
        done.blobs_skipped = len(record.blobs)
        remote.publish(record)  # the same bytes again; makes sure the lookup index lists it
        if progress:
            progress(record.total_bytes)
        return done
    contents = _contents(opened)
    seen: set[str] = set()
    for blob in record.blobs:
        if blob.sha256 in seen or remote.has_blob(blob):
            done.blobs_skipped += 1
            done.bytes_skipped += blob.size
        else:
            remote.upload_blob(blob, contents[blob.path])
            done.blobs_transferred += 1
            done.bytes_transferred += blob.size
        seen.add(blob.sha256)
        if progress:
            progress(blob.size)
    remote.publish(record)
    log.info(
        "pushed %s to %s: %d bytes sent, %d already there",
        record.entry_id,
        remote.url,
        done.bytes_transferred,
        done.bytes_skipped,
    )
    return done


def entries_to_push(root: CacheRoot, keys: list[str]) -> list[Any]:
    """The entries named (each must exist: EntryNotFound otherwise), or every entry."""
    if keys:
        return [find_entry(root, key) for key in keys]
    return root.entry_dirs()


def push(
    root: CacheRoot,
    remote: Remote,
    keys: list[str] | None = None,
    progress: Progress | None = None,
    on_start: Callable[[int], None] | None = None,
) -> list[Transfer]:
    """Push the entries named (every valid entry if none). An entry that fails its checks
    is not pushed: when named, that is a failure; otherwise it is skipped with a warning."""
    results: list[Transfer] = []
    opened_entries: list[OpenedEntry] = []
    for path in entries_to_push(root, list(keys or [])):
        try:
            opened_entries.append(open_entry(path, check_env=False, check_sources=False))
        except AotCacheError as exc:
            if keys:
                results.append(Transfer(path.name, "failed", error=exc))
            else:
                log.warning("not pushing %s: %s", path.name, exc.one_line())
    if on_start:
        on_start(sum(entry_record(o).total_bytes for o in opened_entries))
    for opened in opened_entries:
        remote.restart_deadline()  # each entry has AOTCACHE_REMOTE_TIMEOUT of its own
        try:
            results.append(push_entry(opened, remote, progress))
        except AotCacheError as exc:
            results.append(Transfer(opened.entry_id, "failed", error=exc))
        except Exception as exc:  # whatever a hostile or broken remote makes a client raise
            error = RemoteError(f"{remote.url}: entry {opened.entry_id}: {type(exc).__name__}: {exc}")
            results.append(Transfer(opened.entry_id, "failed", error=error))
    if not results and keys is not None and not keys:
        log.warning("no entries to push in %s", root.path)
    return results
