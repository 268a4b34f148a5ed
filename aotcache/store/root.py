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
import logging
import os
import shutil
import uuid
from pathlib import Path

from aotcache.errors import CacheDirError

from .atomic import exchange, fsync_dir, fsync_tree, write_file_atomic
from .failpoints import failpoint

log = logging.getLogger("aotcache.store")

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
            _, error = remove_tree(staging)  # staging now holds the old entry
            if error:
                log.warning(
                    "could not delete the replaced entry in %s (%s); `aotcache clear --broken` will", staging, error
                )
        else:
            if target.exists():
                self.remove_entry(target)
            os.rename(staging, target)
        failpoint("after-publish")
        fsync_dir(self.entries)
        return target

    def remove_entry(self, entry: Path) -> tuple[int, str | None]:
        """Delete an entry so that no reader ever sees part of it: rename it into trash/,
        then delete it there. Returns the bytes really freed and the error, if any (what
        could not be deleted stays in trash/, shown by inspect-cache, swept by clear)."""
        doomed = self.trash / f"{entry.name}.{uuid.uuid4().hex[:8]}"
        size = dir_size(entry)
        try:
            os.rename(entry, doomed)
        except FileNotFoundError:
            return 0, None
        except OSError as exc:
            return 0, f"{entry}: {exc.strerror or exc}"
        freed, error = remove_tree(doomed)
        return (size if error is None else freed), error

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


def remove_tree(path: Path) -> tuple[int, str | None]:
    """Delete a directory tree; the bytes really freed, and the first error met."""
    before = dir_size(path)
    errors: list[str] = []

    def record(function: object, failed: str, exc_info: tuple[type[BaseException], BaseException, object]) -> None:
        exc = exc_info[1]
        errors.append(f"{failed}: {getattr(exc, 'strerror', None) or exc}")

    shutil.rmtree(path, onerror=record)
    remaining = dir_size(path) if os.path.lexists(path) else 0
    return before - remaining, (errors[0] if errors else None)


def dir_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total
