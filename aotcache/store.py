"""The cache directory: where entries live, and how they appear atomically.

    <root>/CACHEDIR.TAG
    <root>/entries/<entry id>/   published by one rename of a finished staging dir
    <root>/staging/<...>/        unfinished builds; never read by the loader
    <root>/locks/<entry id>.lock one filelock per entry id: one builder at a time
    <root>/trash/<...>/          entries being deleted (renamed here first, then removed)
    <root>/usage/<entry id>      touched on every load: "last used" for LRU eviction

An entry directory either does not exist or is complete: builders write and fsync
everything in staging, then rename it into entries/. Deleting renames it into trash/
first, so a reader sees either the whole entry or none of it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import CacheDirError
from .failpoints import failpoint

CACHE_DIR_ENV = "AOTCACHE_DIR"
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by aotcache.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("aotcache", appauthor=False))


def resolve_cache_dir(explicit: str | os.PathLike[str] | None = None, configured: str | None = None) -> Path:
    """An explicit argument, else AOTCACHE_DIR, else the config's cache_dir, else the
    platform's user cache directory."""
    for candidate in (explicit, os.environ.get(CACHE_DIR_ENV), configured):
        if candidate:
            return Path(candidate).expanduser()
    return default_cache_dir()


class CacheRoot:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.entries = self.path / "entries"
        self.staging = self.path / "staging"
        self.locks = self.path / "locks"
        self.trash = self.path / "trash"
        self.usage = self.path / "usage"

    def __repr__(self) -> str:
        return f"CacheRoot({str(self.path)!r})"

    # -- for writers ---------------------------------------------------------------

    def ensure_writable(self) -> None:
        """Create the layout; raise CacheDirError naming the problem if we cannot."""
        if self.path.exists() and not self.path.is_dir():
            raise CacheDirError(
                f"cache dir {self.path} is a file, not a directory",
                hint="pass --cache-dir (or AOTCACHE_DIR) naming a directory",
            )
        try:
            for folder in (self.path, self.entries, self.staging, self.locks, self.trash, self.usage):
                folder.mkdir(parents=True, exist_ok=True)
            tag = self.path / "CACHEDIR.TAG"
            if not tag.exists():
                write_file_atomic(tag, CACHEDIR_TAG.encode())
            probe = self.staging / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise CacheDirError(
                f"cache dir {self.path} is not writable: {exc.strerror or exc}",
                hint="pass --cache-dir (or AOTCACHE_DIR) naming a writable directory",
            ) from exc

    def new_staging_dir(self, entry_id: str) -> Path:
        path = self.staging / f"{entry_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def lock(self, entry_id: str, timeout: float = -1):
        from filelock import FileLock

        return FileLock(str(self.locks / f"{entry_id}.lock"), timeout=timeout)

    def entry_dir(self, entry_id: str) -> Path:
        return self.entries / entry_id

    def publish(self, staging: Path, entry_id: str) -> Path:
        """Make a finished staging dir visible as an entry, in one rename. An existing
        entry of the same id (a broken one, or --force) is swapped out atomically where
        the kernel can exchange two directories, so readers see the old or the new one."""
        fsync_tree(staging)
        failpoint("before-publish")
        target = self.entry_dir(entry_id)
        if target.exists() and exchange(staging, target):
            shutil.rmtree(staging, ignore_errors=True)  # staging now holds the old entry
        else:
            if target.exists():
                self.remove_entry(target)
            os.rename(staging, target)
        failpoint("after-publish")
        fsync_dir(self.entries)
        return target

    def remove_entry(self, entry: Path) -> None:
        """Delete an entry so that no reader ever sees part of it."""
        doomed = self.trash / f"{entry.name}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(entry, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    # -- for readers ---------------------------------------------------------------

    def entry_dirs(self) -> list[Path]:
        try:
            return sorted(p for p in self.entries.iterdir() if not p.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def entries_with_lookup(self, lookup_hash: str) -> list[Path]:
        return [p for p in self.entry_dirs() if p.name.startswith(lookup_hash + "-")]

    def staging_dirs(self) -> list[Path]:
        try:
            return sorted(self.staging.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def trash_dirs(self) -> list[Path]:
        try:
            return sorted(self.trash.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def mark_used(self, entry_id: str) -> None:
        """Best effort: a read-only cache (baked into an image) simply has no usage data."""
        with contextlib.suppress(OSError):
            stamp = self.usage / entry_id
            if not stamp.exists():
                self.usage.mkdir(parents=True, exist_ok=True)
                stamp.touch()
            os.utime(stamp)

    def last_used(self, entry_id: str) -> float | None:
        try:
            return (self.usage / entry_id).stat().st_mtime
        except OSError:
            return None

    def forget_usage(self, entry_id: str) -> None:
        with contextlib.suppress(OSError):
            (self.usage / entry_id).unlink()


def staging_is_abandoned(path: Path) -> bool:
    """A staging dir whose builder process is gone (its pid is part of the name)."""
    parts = path.name.split(".")
    if len(parts) < 3 or not parts[-2].isdigit():
        return True
    pid = int(parts[-2])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def dir_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


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


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the
    platform or file system cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


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
