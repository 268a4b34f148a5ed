"""Crash-safe writes: every file is written and fsynced before the rename that makes it
visible, and a directory is swapped atomically where the kernel can exchange two paths.
A SIGKILL at any point leaves either the old state or the new one, plus leftovers in
staging/ that `clear --broken` removes."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from .failpoints import failpoint


def write_file_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_file(path: Path, data: bytes, point: str | None = None) -> None:
    """Write and fsync a file inside a staging dir (published later by a rename).
    `point` names a failpoint reached half-way through the write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        if point is not None:
            f.write(data[: len(data) // 2])
            f.flush()
            failpoint(point)
            data = data[len(data) // 2 :]
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def exchange_at(a_dir: int, a: str, b_dir: int, b: str) -> bool:
    """Atomically swap two names, each relative to a directory descriptor (Linux
    renameat2 RENAME_EXCHANGE; never follows a link); False where the platform or file
    system cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rename_exchange = 2
    result = renameat2(a_dir, os.fsencode(a), b_dir, os.fsencode(b), rename_exchange)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), b)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(root: Path) -> None:
    for folder, dirs, _ in os.walk(root, topdown=False):
        for name in dirs:
            fsync_dir(Path(folder, name))
    fsync_dir(root)


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def cleanup_on_error(path: Path) -> Iterator[None]:
    """Remove a staging dir if building it fails (a SIGKILL leaves it; `clear` sweeps)."""
    try:
        yield
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
