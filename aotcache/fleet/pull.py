"""Pull: bring entries from a remote into the cache dir, verified before they appear.

The manifest comes first: its own checksum, its entry id and (with a trusted key) its
signature are checked before any other byte is fetched. Each file then lands in a
staging dir of the entry and is checked against the sha256 the manifest records; the
whole entry is checked once more (the same pipeline as a load), and only then published
by the same atomic rename as a precompile. A blob that does not match publishes nothing.

Files another local entry already holds are copied, not downloaded. An interrupted pull
leaves its staging dir (named by entry id and pid): the next pull of that entry adopts
it once its process is gone, keeps the files already checked and continues a partial
file from where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aotcache.errors import (
    AotCacheError,
    CacheDirError,
    CacheMiss,
    CorruptEntry,
    EntryNotFound,
    IncompatibleEnvironment,
    RemoteError,
    StaleEntry,
)
from aotcache.key.factors import Factor
from aotcache.store import safefs
from aotcache.store.checks import (
    MAX_MANIFEST_BYTES,
    SignatureCheck,
    entry_problems,
    environment_problems,
    open_entry,
    read_manifest,
    source_problems,
)
from aotcache.store.failpoints import failpoint
from aotcache.store.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, parse
from aotcache.store.root import CacheRoot
from aotcache.store.traced_state import problems as traced_state_problems

from .remote import ENTRY_ID, HINT_DAMAGED, Blob, EntryRecord, Remote, considered, read_small
from .staging import Staging, append
from .transfer import Progress, Transfer

log = logging.getLogger("aotcache.fleet")


class LocalBlobs:
    """Files of the local entries by sha256, so a pull copies what it already has."""

    def __init__(self, root: CacheRoot) -> None:
        self.root = root
        self._where: dict[str, tuple[Path, str]] | None = None

    def find(self, sha256: str) -> tuple[Path, str] | None:
        if self._where is None:
            self._where = {}
            for entry in self.root.entry_dirs():
                with contextlib.suppress(CacheMiss, OSError):
                    manifest, _ = read_manifest(entry)
                    for path, record in manifest.files.items():
                        self._where.setdefault(record.sha256, (entry, path))
        return self._where.get(sha256)

    def read(self, blob: Blob) -> bytes | None:
        """The bytes of a local copy of `blob`, checked; None if there is none."""
        found = self.find(blob.sha256)
        if found is None:
            return None
        entry, path = found
        try:
            with safefs.opened_dir(entry) as fd:
                data = safefs.read_file(path, fd, blob.size)
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == blob.sha256 else None


def fetch_manifest(
    remote: Remote, record: EntryRecord, verify_signature: SignatureCheck | None
) -> tuple[Manifest, bytes, bytes | None]:
    """The entry's manifest, checked (sha256, checksum, structure, id, signature)."""
    raw = read_small(remote, record.manifest, MAX_MANIFEST_BYTES)
    manifest = parse(raw, record.entry_id)
    if manifest.entry_id != record.entry_id:
        raise CorruptEntry(
            f"{remote.url}: entry {record.entry_id} holds the manifest of {manifest.entry_id}",
            entry_id=record.entry_id,
            hint=HINT_DAMAGED,
        )
    signature = read_small(remote, record.signature, 4096) if record.signature else None
    if verify_signature is not None:
        verify_signature(record.entry_id, raw, signature)
    return manifest, raw, signature


def _fetch_file(
    remote: Remote, blob: Blob, staging: Staging, local: LocalBlobs, done: Transfer, progress: Progress | None
) -> None:
    """One file of the entry into staging, checked against the manifest's sha256."""
    if staging.has(blob.path, blob.sha256, blob.size):
        _count_skipped(done, blob.size, progress)  # checked by an earlier, interrupted pull
        return
    for _ in range(2):  # a resumed partial file that does not check out is fetched again whole
        resumed = _fill(remote, blob, staging, local, done, progress)
        if staging.part_sha256(blob.path) == (blob.size, blob.sha256):
            break
        staging.restart(blob.path)
        if not resumed:
            raise CorruptEntry(
                f"{remote.url}: file {blob.path} of entry {done.entry_id} does not match the sha256 its manifest "
                "records",
                entry_id=done.entry_id,
                hint=HINT_DAMAGED,
            )
    staging.finish(blob.path)
    failpoint("pull-after-file")


def _fill(
    remote: Remote, blob: Blob, staging: Staging, local: LocalBlobs, done: Transfer, progress: Progress | None
) -> int:
    """Write the file's bytes to its partial file: from a local entry that has them, else
    from the remote (continuing a partial file). Returns the offset a download resumed from."""
    copy = local.read(blob)
    with staging.part(blob.path) as (fd, offset):
        if copy is not None or offset > blob.size:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            offset = 0
        if copy is not None:
            append(fd, copy)
            _count_skipped(done, blob.size, progress)
            return 0
        _count_skipped(done, offset, progress, blobs=0)
        written = offset
        if offset < blob.size:
            for chunk in remote.read_blob(blob, offset):
                append(fd, chunk)
                written += len(chunk)
                done.bytes_transferred += len(chunk)
                if progress:
                    progress(len(chunk))
                if written > blob.size:
                    break  # more than the manifest says: it will not match
            os.fsync(fd)
    done.blobs_transferred += 1
    return offset


def _count_skipped(done: Transfer, size: int, progress: Progress | None, *, blobs: int = 1) -> None:
    """Bytes not downloaded (and `blobs` whole files: 0 for the resumed part of one)."""
    done.blobs_skipped += blobs
    if size:
        done.bytes_skipped += size
        if progress:
            progress(size)


def is_present(root: CacheRoot, entry_id: str, verify_signature: SignatureCheck | None) -> bool:
    """A local entry of this id that passes its checks (then there is nothing to pull)."""
    try:
        open_entry(root.entry_dir(entry_id), check_env=False, check_sources=False, verify_signature=verify_signature)
    except (CacheMiss, OSError):
        return False
    return True


def pull_entry(
    root: CacheRoot,
    remote: Remote,
    record: EntryRecord,
    verify_signature: SignatureCheck | None = None,
    progress: Progress | None = None,
    local: LocalBlobs | None = None,
    fetched: tuple[Manifest, bytes, bytes | None] | None = None,
) -> Transfer:
    """Pull one entry; raise the typed error of the first problem (nothing published).
    `fetched`: its manifest, already fetched and checked by fetch_manifest."""
    done = Transfer(record.entry_id, "pulled", bytes=record.total_bytes)
    if is_present(root, record.entry_id, verify_signature):
        done.status = "present"
        _count_skipped(done, record.total_bytes, progress, blobs=len(record.blobs))
        return done
    manifest, raw, signature = fetched or fetch_manifest(remote, record, verify_signature)
    files = [Blob(path, f.sha256, f.bytes) for path, f in sorted(manifest.files.items())]
    done.bytes = sum(b.size for b in files) + len(raw) + len(signature or b"")
    _check_space(root, done.bytes)
    staging_path: Path | None = None
    try:
        with Staging.open(root, record.entry_id) as staging:
            staging_path = staging.path
            local = local or LocalBlobs(root)
            for blob in files:
                _fetch_file(remote, blob, staging, local, done, progress)
            staging.remove_strays({b.path for b in files})  # an adopted dir may hold another attempt's files
            staging.write(MANIFEST_NAME, raw)
            if signature is not None:
                staging.write(SIGNATURE_NAME, signature)
        done.bytes_transferred += len(raw) + len(signature or b"")  # fetched first, above
        if progress:
            progress(len(raw) + len(signature or b""))
        _check_staged(staging_path, manifest, raw, verify_signature)
    except CorruptEntry:
        if staging_path is not None:
            _remove(root, staging_path)  # nothing of a pull that failed its checks is resumed
        raise
    except OSError as exc:
        raise CacheDirError(f"pulling {record.entry_id} into {root.path} failed: {exc}") from exc
    with root.lock(record.entry_id):
        if is_present(root, record.entry_id, verify_signature):  # another pull published it meanwhile
            _remove(root, staging_path)
            done.status = "present"
            return done
        root.publish(staging_path, record.entry_id)
    log.info("pulled %s from %s: %d bytes downloaded", record.entry_id, remote.url, done.bytes_transferred)
    return done


def _check_space(root: CacheRoot, needed: int) -> None:
    free = shutil.disk_usage(root.path).free
    if free < needed:
        raise CacheDirError(
            f"cache dir {root.path} has {free} bytes free; the entry needs {needed}",
            hint="free space or run `aotcache clear --max-size`",
        )


def _remove(root: CacheRoot, staging: Path) -> None:
    _, error = root.remove_leftover(staging)
    if error:
        log.warning("could not remove %s (%s); `aotcache clear --broken` will", staging, error)


def _check_staged(staging: Path, manifest: Manifest, raw: bytes, verify_signature: SignatureCheck | None) -> None:
    """The load's own checks on the staged entry (files, signature), before it appears."""
    with safefs.opened_dir(staging) as fd:
        problem = next(
            entry_problems(fd, manifest, raw, verify_signature=verify_signature, check_env=False, with_sources=False),
            None,
        )
    if problem is not None:
        raise problem.error(manifest.entry_id)


def resolve_keys(remote: Remote, keys: list[str]) -> list[str]:
    """Entry ids for the keys given (full ids, or unique prefixes), else every entry."""
    if keys and all(ENTRY_ID.match(k) for k in keys):
        return keys
    listed = remote.entry_ids()
    if not keys:
        return listed
    resolved = []
    for key in keys:
        matches = [i for i in listed if i.startswith(key)] if key else []
        if len(matches) != 1:
            what = "no entry" if not matches else f"{len(matches)} entries"
            raise EntryNotFound(
                f"{remote.url} holds {what} matching {key!r}",
                hint="give entry ids as `aotcache inspect-cache` lists them",
            )
        resolved.append(matches[0])
    return resolved


def pull(
    root: CacheRoot,
    remote: Remote,
    keys: list[str] | None = None,
    verify_signature: SignatureCheck | None = None,
    progress: Progress | None = None,
    on_start: Callable[[int], None] | None = None,
) -> list[Transfer]:
    """Pull the entries named (every entry the remote holds if none), each on its own:
    one that fails is reported and the others still arrive. A remote that does not
    exist (a mistyped URL) is a RemoteError before anything is written."""
    try:
        why = remote.missing()
    except AotCacheError:
        raise
    except Exception as exc:  # whatever a hostile or broken remote makes a client raise
        raise RemoteError(f"{remote.url}: checking that it exists: {type(exc).__name__}: {exc}") from None
    if why is not None:
        raise RemoteError(f"{remote.url}: {why}", hint="check the remote's URL; nothing was pulled or written")
    root.ensure_writable()
    records: list[EntryRecord] = []
    results: list[Transfer] = []
    try:
        for entry_id in resolve_keys(remote, list(keys or [])):
            record = remote.record(entry_id)
            if record is None:
                error = EntryNotFound(f"{remote.url} holds no entry {entry_id}", entry_id=entry_id)
                results.append(Transfer(entry_id, "failed", error=error))
            else:
                records.append(record)
    except AotCacheError:
        raise
    except Exception as exc:  # whatever a hostile or broken remote makes a client raise
        raise RemoteError(f"{remote.url}: listing entries: {type(exc).__name__}: {exc}") from None
    if on_start:
        on_start(sum(r.total_bytes for r in records))
    local = LocalBlobs(root)
    for record in records:
        remote.restart_deadline()  # each entry has AOTCACHE_REMOTE_TIMEOUT of its own
        try:
            results.append(pull_entry(root, remote, record, verify_signature, progress, local))
        except AotCacheError as exc:
            results.append(Transfer(record.entry_id, "failed", error=exc))
        except Exception as exc:  # whatever a hostile or broken remote makes a parser raise
            error = RemoteError(f"{remote.url}: entry {record.entry_id}: {type(exc).__name__}: {exc}")
            results.append(Transfer(record.entry_id, "failed", error=error))
    return results


def pull_for_lookup(
    root: CacheRoot,
    remote: Remote,
    lookup: str,
    verify_signature: SignatureCheck | None = None,
    model: Any = None,
    factors: Sequence[Factor] | None = None,
) -> Transfer:
    """For a load that missed locally: pull the newest entry of this lookup key that this
    host can run with the sources it has, and (given `model`) whose traced settings hold
    on that model, judged from the manifest alone, before any other byte is fetched.
    Raises why none fits (the first entry's reason); where the remote lists none, given
    the lookup `factors`, the miss names the nearest entry and each factor that differs."""
    refusals: list[CacheMiss] = []
    for entry_id in considered(remote.entries_for_lookup(lookup), lookup):  # its own key only, capped
        record = remote.record(entry_id)
        if record is None:
            continue
        try:
            fetched = fetch_manifest(remote, record, verify_signature)
        except CacheMiss as exc:
            refusals.append(exc)
            continue
        manifest = fetched[0]
        environment, sources = environment_problems(manifest), source_problems(manifest)
        if environment:
            refusals.append(
                IncompatibleEnvironment(
                    f"{remote.url}: entry {entry_id} was built for another environment",
                    differences=environment,
                    entry_id=entry_id,
                )
            )
        elif sources:
            refusals.append(
                StaleEntry(
                    f"{remote.url}: entry {entry_id} was built from other sources",
                    differences=sources,
                    entry_id=entry_id,
                )
            )
        elif model is not None and (settings := traced_state_problems(manifest.traced_state, model)):
            refusals.append(
                StaleEntry(
                    f"{remote.url}: entry {entry_id} was traced from a model with other settings",
                    differences=settings,
                    entry_id=entry_id,
                )
            )
        else:
            return pull_entry(root, remote, record, verify_signature, fetched=fetched)
    if refusals:
        raise refusals[0]
    if factors is not None:
        from .explain import remote_miss  # (explain reads what a pull reads: imported when needed)

        raise remote_miss(root, remote, factors)
    raise EntryNotFound(
        f"{remote.url} holds no entry for lookup key {lookup}", hint="precompile and push this model and config from CI"
    )
