"""An object store (S3, GCS, a shared file system...) as a remote, through fsspec.

    <prefix>/blobs/sha256/<digest>         every file of every entry, stored once
    <prefix>/entries/<entry id>.json       the entry's record: which blobs make it
    <prefix>/lookup/<lookup key>/<entry id> an empty marker: the index by lookup key
    <prefix>/units/<unit key>              the id of an entry holding that unit's artifact
    <prefix>/stats/<name>.json             a serving process's stats file (`push --stats`)

A record is written only after all its blobs, and each object appears whole (an object
store's PUT is atomic; on a local or mounted file system it is written aside and
renamed), so a reader never finds a record whose blobs are not all there. Endpoint and
credentials come the standard way: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for S3.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import uuid
from collections.abc import Iterator
from typing import Any

from aotcache.errors import AotCacheError, ConfigError, CorruptEntry, RemoteError, printable

from .http import Deadline
from .remote import (
    CHUNK,
    ENTRY_ID,
    MAX_STATS_BYTES,
    MAX_STATS_FILES,
    STATS_FILE,
    UNIT_KEY,
    Blob,
    EntryRecord,
    check_stats_file,
    considered,
)

MAX_RECORD_BYTES = 4 << 20
_EXTRAS = {"s3": "s3", "s3a": "s3"}


class ObjectStoreRemote:
    def __init__(self, url: str, *, deadline: Deadline | None = None) -> None:
        self.url = url
        self.deadline = deadline or Deadline()
        try:
            import fsspec

            self.fs, root = fsspec.core.url_to_fs(url)
        except ImportError as exc:
            scheme = url.split("://")[0]
            extra = _EXTRAS.get(scheme, "s3")
            raise RemoteError(
                f"{url}: {scheme}:// remotes need a package that is not installed ({exc})",
                hint=f"pip install 'aotcache[{extra}]' (or the fsspec backend for {scheme}://)",
            ) from None
        except ValueError as exc:
            raise ConfigError("remote", url, f"oci://host/repository or a URL fsspec knows ({exc})") from None
        self.root = root.rstrip("/")
        self._local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def restart_deadline(self) -> None:
        self.deadline = Deadline(self.deadline.seconds)

    def missing(self) -> str | None:
        """A directory must exist; in an object store, its bucket (a prefix with nothing
        under it yet is an empty remote, not a missing one)."""
        with self._errors("checking that it exists"):
            if self._local:
                return None if self.fs.isdir(self.root) else f"no such directory {self.root}"
            bucket = self.root.split("/", 1)[0]
            return None if self.fs.exists(bucket) else f"no such bucket {bucket}"

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        self.deadline.check(self.url, what)
        try:
            yield
        except AotCacheError:
            raise
        except FileNotFoundError as exc:  # a missing bucket (a missing object is handled where it is expected)
            raise RemoteError(f"{self.url}: {what}: not found ({exc})") from None
        except Exception as exc:  # botocore, aiohttp, OSError...: the store's own words
            raise RemoteError(f"{self.url}: {what}: {type(exc).__name__}: {exc}") from None

    def _blob_path(self, blob: Blob) -> str:
        return f"{self.root}/blobs/sha256/{blob.sha256}"

    def _put(self, path: str, data: bytes) -> None:
        if self._local:  # a file system: never a half-written object under its name
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            aside = f"{path}.{uuid.uuid4().hex[:8]}.part"
            self.fs.pipe_file(aside, data)
            self.fs.mv(aside, path)
        else:
            self.fs.pipe_file(path, data)

    def _names(self, folder: str) -> list[str]:
        with self._errors(f"listing {folder}"):
            self.fs.invalidate_cache(folder)
            try:
                return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False)]
            except FileNotFoundError:
                return []

    # -- the Remote interface ------------------------------------------------------

    def entry_ids(self) -> list[str]:
        names = self._names(f"{self.root}/entries")
        return sorted(n.removesuffix(".json") for n in names if ENTRY_ID.match(n.removesuffix(".json")))

    def entries_for_lookup(self, lookup: str) -> list[str]:
        return considered(sorted(self._names(f"{self.root}/lookup/{lookup}"), reverse=True), lookup)

    def _open(self, path: str) -> Any:
        """A file of the store opened for reading; on a local file system only a regular
        file, opened without following a link or blocking (a FIFO never hangs a pull)."""
        if not self._local:
            return self.fs.open(path, "rb")
        local = path  # url_to_fs gave the root without its protocol
        if not stat.S_ISREG(os.lstat(local).st_mode):
            raise RemoteError(f"{self.url}: {printable(path)} is not a regular file; it is never read")
        fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RemoteError(f"{self.url}: {printable(path)} is not a regular file; it is never read")
        return os.fdopen(fd, "rb")

    def _read_capped(self, path: str, limit: int) -> bytes:
        with self._open(path) as handle:
            return handle.read(limit + 1)

    def record(self, entry_id: str) -> EntryRecord | None:
        path = f"{self.root}/entries/{entry_id}.json"
        with self._errors(f"reading the record of {entry_id}"):
            try:
                raw = self._read_capped(path, MAX_RECORD_BYTES)
            except FileNotFoundError:
                return None
        try:
            if len(raw) > MAX_RECORD_BYTES:
                raise ValueError("too large")
            return _record_from_json(json.loads(raw), entry_id)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise RemoteError(f"{self.url}: the record of {entry_id} is damaged: {exc}") from None

    def unit_record(self, unit_key: str) -> EntryRecord | None:
        if not UNIT_KEY.match(unit_key):
            return None
        with self._errors(f"reading the unit index of {unit_key[:12]}"):
            try:
                named = self._read_capped(f"{self.root}/units/{unit_key}", 64).decode("ascii", "replace").strip()
            except FileNotFoundError:
                return None
        if not ENTRY_ID.match(named):
            raise RemoteError(f"{self.url}: the unit index of {unit_key[:12]} names no entry id")
        return self.record(named)

    def has_blob(self, blob: Blob) -> bool:
        with self._errors(f"checking blob {blob.sha256[:12]}"):
            try:
                return int(self.fs.info(self._blob_path(blob))["size"]) == blob.size
            except FileNotFoundError:
                return False

    def upload_blob(self, blob: Blob, data: bytes) -> None:
        with self._errors(f"uploading {blob.path}"):
            self._put(self._blob_path(blob), data)

    def read_blob(self, blob: Blob, offset: int = 0) -> Iterator[bytes]:
        with self._errors(f"downloading {blob.path}"):
            try:
                handle = self._open(self._blob_path(blob))
            except FileNotFoundError:
                raise CorruptEntry(
                    f"{self.url}: blob {blob.sha256[:12]} ({blob.path}) is missing",
                    hint="the remote's copy is damaged: push the entry again from the cache that built it",
                ) from None
            with handle:
                handle.seek(offset)
                while chunk := handle.read(CHUNK):
                    self.deadline.check(self.url, f"downloading {printable(blob.path)}")
                    yield chunk

    def publish(self, record: EntryRecord) -> None:
        data = json.dumps(record.to_json(), sort_keys=True, indent=1).encode()
        with self._errors(f"writing the record of {record.entry_id}"):
            self._put(f"{self.root}/entries/{record.entry_id}.json", data)
            self._put(f"{self.root}/lookup/{record.lookup}/{record.entry_id}", b"")
            for unit_key in record.units:
                self._put(f"{self.root}/units/{unit_key}", record.entry_id.encode())

    def put_stats(self, name: str, data: bytes) -> None:
        check_stats_file(name, data)
        with self._errors(f"writing stats file {name}"):
            self._put(f"{self.root}/stats/{name}", data)

    def stats_files(self) -> list[tuple[str, bytes]]:
        found: list[tuple[str, bytes]] = []
        for name in sorted(self._names(f"{self.root}/stats"))[:MAX_STATS_FILES]:
            if name.endswith(".part"):
                continue  # another push writing it aside
            if not STATS_FILE.match(name):
                found.append((printable(name, 240), b""))  # not a stats file (planted?): never read
                continue
            with self._errors(f"reading stats file {name}"):
                try:
                    found.append((name, self._read_capped(f"{self.root}/stats/{name}", MAX_STATS_BYTES)))
                except (FileNotFoundError, RemoteError):  # removed meanwhile, or not a regular file
                    found.append((name, b""))
        return found


def _blob(data: Any) -> Blob:
    if not isinstance(data, dict) or not re.fullmatch(r"[0-9a-f]{64}", str(data.get("sha256", ""))):
        raise ValueError("a blob without a sha256")
    if not isinstance(data.get("size"), int) or not isinstance(data.get("path"), str):
        raise ValueError("a blob without a size or path")
    return Blob(data["path"], data["sha256"], data["size"])


def _record_from_json(data: Any, entry_id: str) -> EntryRecord:
    if not isinstance(data, dict) or data.get("entry") != entry_id:
        raise ValueError(f"it does not describe entry {entry_id}")
    return EntryRecord(
        entry_id=entry_id,
        lookup=str(data.get("lookup", "")),
        created=str(data.get("created", "")),
        manifest=_blob(data["manifest"]),
        signature=_blob(data["signature"]) if data.get("signature") else None,
        files=[_blob(b) for b in data.get("files") or []],
        lookup_factors=None if data.get("lookup_factors") is None else json.dumps(data["lookup_factors"]),
    )
