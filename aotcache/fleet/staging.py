"""A pull's staging dir, handled like the cache dir itself: nothing in it is ever
written through a link, opened blocking, or adopted from someone else.

Every file is created and written relative to a descriptor of the staging dir opened
with O_NOFOLLOW, one directory level at a time; a name that is not what a pull would
have left there (a link, a FIFO, a file with other hard links, a folder owned by another
user) is removed and made anew, never written through. An interrupted pull's dir is
adopted only if it is a real directory owned by this user.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from aotcache.store import safefs
from aotcache.store.root import CacheRoot, pid_name, staging_is_abandoned

log = logging.getLogger("aotcache.fleet")

PART = ".part"
_WRITE_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _ours(info: os.stat_result) -> bool:
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()


def _discard(name: str, dir_fd: int) -> None:
    """Remove whatever `name` is (a link as itself); never follows anything."""
    _, error = safefs.remove(name, dir_fd)
    if error:
        raise OSError(errno.EEXIST, f"cannot remove {name} from the staging dir: {error}")


def _subdir(name: str, parent: int) -> int:
    """A descriptor of the real directory `name` below `parent`, made if missing; a link
    or file in its place is removed first."""
    for _ in range(2):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
        try:
            return safefs.open_dir(name, parent)
        except safefs.UnsafeFile:
            _discard(name, parent)
    raise OSError(errno.EEXIST, f"{name} keeps reappearing in the staging dir")


class Staging:
    """An open staging dir of one entry's pull (use as a context manager)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, root: CacheRoot, entry_id: str) -> Staging:
        """This pull's staging dir: an abandoned one of the same entry that is a real
        directory of ours, adopted, or a new one; anything else under those names goes."""
        ours = pid_name(entry_id, "pull")
        with root.folder("staging", create=True) as folder:
            for name in safefs.list_names(folder):
                if name == ours or not (name.startswith(entry_id + ".") and name.endswith(".pull")):
                    continue
                if not staging_is_abandoned(root.staging / name):
                    continue
                if _ours(os.lstat(name, dir_fd=folder)) and safefs.kind_at(ours, folder) == safefs.MISSING:
                    os.rename(name, ours, src_dir_fd=folder, dst_dir_fd=folder)
                    log.info("resuming the interrupted pull of %s", entry_id)
                else:
                    _discard(name, folder)
            kind = safefs.kind_at(ours, folder)
            if kind != safefs.MISSING and not (kind == safefs.DIRECTORY and _ours(os.lstat(ours, dir_fd=folder))):
                _discard(ours, folder)  # planted under our own name: never used
            return cls(root.staging / ours, _subdir(ours, folder))

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    @contextlib.contextmanager
    def _parent(self, rel: str) -> Iterator[tuple[int, str]]:
        """(descriptor of the folder that holds `rel`, its last name), folders made one
        level at a time."""
        parts = rel.split("/")
        fds: list[int] = []
        parent = self.fd
        try:
            for part in parts[:-1]:
                parent = _subdir(part, parent)
                fds.append(parent)
            yield parent, parts[-1]
        finally:
            for fd in reversed(fds):
                os.close(fd)

    def has(self, rel: str, sha256: str, size: int) -> bool:
        """Whether `rel` is already here, whole and right (left by an earlier pull)."""
        with self._parent(rel) as (parent, name):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
            except OSError:
                return False
            try:
                return _single_regular(fd, size) and _sha256(fd) == sha256
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def part(self, rel: str) -> Iterator[tuple[int, int]]:
        """(descriptor, bytes already there) of `rel`'s partial file, to append to; one
        that is not a regular file with one link is removed and made anew."""
        with self._parent(rel) as (parent, name):
            fd = _open_part(name + PART, parent)
            try:
                yield fd, os.lseek(fd, 0, os.SEEK_END)
            finally:
                os.close(fd)

    def restart(self, rel: str) -> None:
        """Forget `rel`'s partial file (it did not check out)."""
        with self._parent(rel) as (parent, name), contextlib.suppress(FileNotFoundError):
            os.unlink(name + PART, dir_fd=parent)

    def part_sha256(self, rel: str) -> tuple[int, str]:
        with self.part(rel) as (fd, size):
            return size, _sha256(fd)

    def finish(self, rel: str) -> None:
        """The checked partial file becomes `rel` (a rename: whatever had that name, a
        link included, is replaced, never followed)."""
        with self._parent(rel) as (parent, name):
            os.rename(name + PART, name, src_dir_fd=parent, dst_dir_fd=parent)

    def write(self, rel: str, data: bytes) -> None:
        """A whole file, written aside with O_EXCL and renamed into place."""
        with self._parent(rel) as (parent, name):
            aside = f".{name}.{uuid.uuid4().hex[:8]}.tmp"
            fd = os.open(aside, _WRITE_FLAGS | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=parent)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(aside, name, src_dir_fd=parent, dst_dir_fd=parent)

    def remove_strays(self, wanted: set[str]) -> None:
        """Delete every file the entry's manifest does not list (links as themselves)."""
        for folder, dirs, names, folder_fd in os.fwalk(".", dir_fd=self.fd, follow_symlinks=False):
            links = [d for d in dirs if safefs.kind_at(d, folder_fd) == safefs.SYMLINK]
            for name in names + links:
                rel = os.path.normpath(os.path.join(folder, name))
                if rel not in wanted:
                    os.unlink(name, dir_fd=folder_fd)


def _single_regular(fd: int, size: int | None = None) -> bool:
    info = os.fstat(fd)
    return stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and (size is None or info.st_size == size)


def _open_part(name: str, parent: int) -> int:
    try:
        fd = os.open(name, _WRITE_FLAGS | os.O_CREAT, 0o644, dir_fd=parent)
        if _single_regular(fd):
            return fd
        os.close(fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.EACCES):
            raise
    _discard(name, parent)  # a link, FIFO, hard link or folder planted as our partial file
    return os.open(name, _WRITE_FLAGS | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=parent)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append(fd: int, data: bytes) -> None:
    _write_all(fd, data)


def _sha256(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()
