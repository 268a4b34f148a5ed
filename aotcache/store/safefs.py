"""File operations inside the cache dir that never follow a symbolic link, never block
on a special file and never read more than they expect.

Everything the store reads, moves or deletes goes through here, relative to a directory
descriptor opened with O_NOFOLLOW: a folder swapped for a symlink between a listing and
an action is refused (or, for deletion, only the link itself is removed), never followed
outside the cache dir.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# What lstat says a name is.
MISSING, DIRECTORY, REGULAR, SYMLINK, SPECIAL = "missing", "directory", "regular file", "symbolic link", "special file"


class UnsafeFile(OSError):
    """A name that is not what the cache dir may hold there: a symbolic link, a special
    file (FIFO, device, socket) or a file larger than expected."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(errno.EINVAL, why, name)
        self.name = name
        self.why = why

    def __str__(self) -> str:
        return f"{self.name} is {self.why}"


def kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return DIRECTORY
    if stat.S_ISREG(mode):
        return REGULAR
    if stat.S_ISLNK(mode):
        return SYMLINK
    return SPECIAL


def kind_at(name: str, dir_fd: int | None = None) -> str:
    """What `name` is (relative to dir_fd), without following a link."""
    try:
        return kind_of(os.lstat(name, dir_fd=dir_fd).st_mode)
    except FileNotFoundError:
        return MISSING


def open_dir(name: str | os.PathLike[str], dir_fd: int | None = None) -> int:
    """A descriptor of a real directory; UnsafeFile if `name` is a link or not a directory."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeFile(os.fspath(name), _describe(name, dir_fd, "a directory")) from None
        raise


@contextlib.contextmanager
def opened_dir(name: str | os.PathLike[str], dir_fd: int | None = None) -> Iterator[int]:
    fd = open_dir(name, dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _describe(name: str | os.PathLike[str], dir_fd: int | None, expected: str) -> str:
    kind = kind_at(os.fspath(name), dir_fd)
    return f"a {kind}, not {expected}" if kind != MISSING else "missing"


def read_file(rel: str, dir_fd: int, limit: int) -> bytes:
    """The bytes of the regular file `rel` (a path of plain names below dir_fd), each
    component opened without following links; at most `limit` bytes, else UnsafeFile."""
    parts = rel.split("/")
    fds: list[int] = []
    try:
        parent = dir_fd
        for part in parts[:-1]:
            parent = open_dir(part, parent)
            fds.append(parent)
        kind = kind_at(parts[-1], parent)
        if kind not in (REGULAR, MISSING):  # refused before opening: a socket cannot even be opened
            raise UnsafeFile(rel, f"a {kind}, not a regular file")
        try:
            fd = os.open(parts[-1], FILE_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):  # swapped for a link or a socket since
                raise UnsafeFile(rel, "not a regular file") from None
            raise
        fds.append(fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(rel, f"a {kind_of(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise UnsafeFile(rel, f"{info.st_size} bytes, more than the {limit} expected")
        chunks = []
        remaining = limit + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 20))):
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise UnsafeFile(rel, f"more than the {limit} bytes expected")
        return data
    finally:
        for fd in reversed(fds):
            os.close(fd)


def tree_size(name: str, dir_fd: int | None = None) -> int:
    """Bytes held by `name` and, for a real directory, everything below it; links are
    counted as themselves and never followed."""
    try:
        info = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(info.st_mode):
        return info.st_size
    total = 0
    for _, dirs, files, folder_fd in os.fwalk(name, dir_fd=dir_fd, follow_symlinks=False):
        for item in files + dirs:
            with contextlib.suppress(OSError):
                entry = os.lstat(item, dir_fd=folder_fd)
                if not stat.S_ISDIR(entry.st_mode):
                    total += entry.st_size
    return total


def remove(name: str, dir_fd: int) -> tuple[int, str | None]:
    """Delete `name` below dir_fd: a real directory with everything in it, anything else
    (a link, a file, a FIFO) as itself. Returns the bytes really freed and the first
    error met; nothing outside dir_fd is ever touched."""
    before = tree_size(name, dir_fd)
    errors: list[str] = []
    try:
        if kind_at(name, dir_fd) == DIRECTORY:

            def record(function: object, failed: str, exc_info: tuple[type, BaseException, object]) -> None:
                errors.append(f"{failed}: {getattr(exc_info[1], 'strerror', None) or exc_info[1]}")

            shutil.rmtree(name, onerror=record, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        errors.append(f"{name}: {exc.strerror or exc}")
    return before - tree_size(name, dir_fd), (errors[0] if errors else None)


def list_names(dir_fd: int) -> list[str]:
    return sorted(os.listdir(dir_fd))
