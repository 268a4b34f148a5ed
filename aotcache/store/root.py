"""The cache directory: where entries live, and how they appear atomically.

    <root>/CACHEDIR.TAG
    <root>/entries/<entry id>/   published by one rename of a finished staging dir
    <root>/staging/<...>/        unfinished builds; never read by the loader
    <root>/locks/<entry id>.lock one filelock per entry id: one builder at a time
    <root>/trash/<...>/          entries being deleted (renamed here first, then removed)
    <root>/usage/<entry id>      touched on every load: "last used" for LRU eviction
    <root>/index/<unit key>.json which entry holds the artifact built for a unit key
                                 (incremental precompile; see aotcache.backend.reuse)
    <root>/host/<name>.json      facts about the build host that are slow to probe
                                 (aotcache.backend.vec_isa_memo)

An entry directory either does not exist or is complete: builders write and fsync
everything in staging, then rename it into entries/. Deleting renames it into trash/
first, so a reader sees either the whole entry or none of it.

Nothing outside the root is ever read as an entry, moved or deleted: the root's own
folders must be real directories (a symlink there is reported as damage, never
followed), and every move and deletion is relative to descriptors of those folders
(safefs), so a folder swapped for a link between a listing and an action is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aotcache.envs as envs
from aotcache.errors import CacheDirError

from . import safefs
from .atomic import exchange_at, fsync_tree, write_file_atomic
from .failpoints import failpoint

log = logging.getLogger("aotcache.store")

CACHE_DIR_ENV = envs.AOTCACHE_DIR
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
    for candidate in (explicit, envs.get(CACHE_DIR_ENV), configured):
        if candidate:
            return Path(candidate).expanduser()
    return default_cache_dir()


FOLDERS = ("entries", "staging", "locks", "trash", "usage", "index", "host")
# The only files `clear` removes from locks/: the ones `lock()` creates (one per entry
# id, and one per lookup key that loads pull from a remote under).
LOCK_NAME = re.compile(r"^[0-9a-f]{16}(-[0-9a-f]{16}|\.pull)\.lock$")
INDEX_RECORD_BYTES = 4096


def pid_name(stem: str, suffix: str) -> str:
    """A name in staging/ that says which process owns it (`stem.pid.suffix`), so that
    leftovers of a dead process can be told from work in progress."""
    return f"{stem}.{os.getpid()}.{suffix}"


class CacheRoot:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.entries = self.path / "entries"
        self.staging = self.path / "staging"
        self.locks = self.path / "locks"
        self.trash = self.path / "trash"
        self.usage = self.path / "usage"
        self.index = self.path / "index"
        self.host = self.path / "host"

    def __repr__(self) -> str:
        return f"CacheRoot({str(self.path)!r})"

    # -- the layout ------------------------------------------------------------------

    def check_is_directory(self) -> None:
        """CacheDirError when the root exists but is not a directory (every command)."""
        if self.path.exists() and not self.path.is_dir():
            raise CacheDirError(
                f"cache dir {self.path} is a file, not a directory",
                hint="pass --cache-dir (or AOTCACHE_DIR) naming a directory",
            )

    def layout_problems(self) -> list[tuple[str, str]]:
        """(folder, what it is) for each of the root's folders that is not a real directory."""
        try:
            with safefs.opened_dir(self.path) as root:
                kinds = [(name, safefs.kind_at(name, root)) for name in FOLDERS]
        except OSError:
            return []
        return [(name, kind) for name, kind in kinds if kind not in (safefs.DIRECTORY, safefs.MISSING)]

    @contextlib.contextmanager
    def folder(self, name: str, *, create: bool = False) -> Iterator[int]:
        """A descriptor of one of the root's folders, opened without following links;
        UnsafeFile if it is a link or not a directory, FileNotFoundError if missing."""
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.path / name)
        with safefs.opened_dir(self.path / name) as fd:
            yield fd

    def _names(self, folder: str) -> list[str]:
        try:
            with self.folder(folder) as fd:
                return safefs.list_names(fd)
        except OSError:  # missing, not a directory, or a link: nothing to list here
            return []

    # -- for writers ---------------------------------------------------------------

    def ensure_writable(self) -> None:
        """Create the layout; raise CacheDirError naming the problem if we cannot."""
        self.check_is_directory()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            for name in FOLDERS:
                (self.path / name).mkdir(exist_ok=True)
        except OSError as exc:
            raise _not_writable(self.path, exc) from exc
        for name, kind in self.layout_problems():
            raise CacheDirError(
                f"cache dir {self.path}: {name}/ is a {kind}; aotcache never follows links or uses special files "
                "inside its cache dir",
                hint="run `aotcache clear --broken` to remove it, or point --cache-dir at the real location",
            )
        try:
            tag = self.path / "CACHEDIR.TAG"
            if not tag.exists():
                write_file_atomic(tag, CACHEDIR_TAG.encode())
            probe = self.staging / pid_name(".probe", uuid.uuid4().hex[:8])
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise _not_writable(self.path, exc) from exc

    def new_staging_dir(self, entry_id: str) -> Path:
        name = pid_name(entry_id, uuid.uuid4().hex[:8])
        with self.folder("staging") as fd:
            os.mkdir(name, dir_fd=fd)
        return self.staging / name

    def lock(self, entry_id: str, timeout: float = -1) -> Any:
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
        with self.folder("staging") as staging_fd, self.folder("entries") as entries_fd:
            exists = safefs.kind_at(entry_id, entries_fd) != safefs.MISSING
            if exists and exchange_at(staging_fd, staging.name, entries_fd, entry_id):
                _, error = safefs.remove(staging.name, staging_fd)  # staging now holds the old entry
                if error:
                    log.warning("could not delete the replaced entry (%s); `aotcache clear --broken` will", error)
            else:
                if exists:
                    self.remove_entry(self.entry_dir(entry_id))
                os.rename(staging.name, entry_id, src_dir_fd=staging_fd, dst_dir_fd=entries_fd)
            failpoint("after-publish")
            os.fsync(entries_fd)
        return self.entry_dir(entry_id)

    def remove_entry(self, entry: Path) -> tuple[int, str | None]:
        """Delete an entry so that no reader ever sees part of it: rename it into trash/,
        then delete it there (a symlinked entry: the link only). Returns the bytes really
        freed and the error, if any (what could not be deleted stays in trash/, shown by
        inspect-cache, swept by clear)."""
        doomed = f"{entry.name}.{uuid.uuid4().hex[:8]}"
        try:
            with self.folder("entries") as entries_fd, self.folder("trash", create=True) as trash_fd:
                try:
                    os.rename(entry.name, doomed, src_dir_fd=entries_fd, dst_dir_fd=trash_fd)
                except FileNotFoundError:
                    return 0, None
                return safefs.remove(doomed, trash_fd)  # it measures what it freed
        except OSError as exc:
            return 0, _say(entry, exc)

    def remove_leftover(self, path: Path) -> tuple[int, str | None]:
        """Delete a leftover in staging/ or trash/, or one of the root's own folders that
        is not a real directory (a link is removed as itself, never followed)."""
        try:
            if path.parent == self.path and path.name in FOLDERS:
                with safefs.opened_dir(self.path) as root_fd:
                    if safefs.kind_at(path.name, root_fd) == safefs.DIRECTORY:
                        return 0, f"{path}: a real folder of the cache dir"
                    return safefs.remove(path.name, root_fd)
            if path.parent not in (self.staging, self.trash):
                return 0, f"{path}: not a leftover of this cache dir"
            with self.folder(path.parent.name) as fd:
                return safefs.remove(path.name, fd)
        except OSError as exc:
            return 0, _say(path, exc)

    def remove_idle_locks(self) -> tuple[int, list[str]]:
        """Lock files aotcache created (by name and type) that no builder holds; filelock
        leaves them behind. Nothing else in locks/ is touched."""
        from filelock import FileLock, Timeout

        removed, errors = 0, []
        try:
            with self.folder("locks") as fd:
                for name in safefs.list_names(fd):
                    if not LOCK_NAME.match(name) or safefs.kind_at(name, fd) != safefs.REGULAR:
                        continue
                    try:
                        with FileLock(str(self.locks / name), timeout=0):
                            os.unlink(name, dir_fd=fd)
                            removed += 1
                    except Timeout:
                        continue
                    except OSError as exc:
                        errors.append(_say(self.locks / name, exc))
        except (FileNotFoundError, safefs.UnsafeFile):
            pass  # no locks/, or not a real folder (reported by scan as damage; never followed)
        except OSError as exc:
            errors.append(_say(self.locks, exc))
        return removed, errors

    def write_index(self, key: str, entry_id: str, artifact: str) -> None:
        """Record that entry `entry_id` holds `artifact` for the unit key `key`."""
        self.index.mkdir(exist_ok=True)
        data = json.dumps({"entry": entry_id, "artifact": artifact}, sort_keys=True).encode()
        write_file_atomic(self.index / f"{key}.json", data)

    def index_record(self, key: str) -> dict[str, str] | None:
        """The index record of a unit key ({"entry", "artifact"}), None if absent or damaged."""
        try:
            with self.folder("index") as fd:
                return _index_record(fd, f"{key}.json")
        except OSError:
            return None

    def write_host_fact(self, name: str, data: dict[str, Any]) -> None:
        """Best effort: a fact that cannot be recorded is probed again next time."""
        try:
            self.host.mkdir(exist_ok=True)
            write_file_atomic(self.host / name, json.dumps(data, sort_keys=True).encode())
        except OSError as exc:
            log.debug("could not record %s: %s", name, exc)

    def host_fact(self, name: str) -> dict[str, Any] | None:
        """A recorded host fact (read without following links), None if absent or damaged."""
        try:
            with self.folder("host") as fd:
                data = json.loads(safefs.read_file(name, fd, INDEX_RECORD_BYTES))
        except (OSError, ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None

    def prune_index(self) -> int:
        """Remove the index records whose entry is gone (or that are damaged); how many."""
        removed = 0
        with contextlib.suppress(OSError), self.folder("index") as fd:
            for name in safefs.list_names(fd):
                record = _index_record(fd, name)
                if record is None or not os.path.lexists(self.entries / record["entry"]):
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=fd)
                        removed += 1
        return removed

    # -- for readers ---------------------------------------------------------------

    def entry_dirs(self) -> list[Path]:
        return [self.entries / name for name in self._names("entries") if not name.startswith(".")]

    def entries_with_lookup(self, lookup_hash: str) -> list[Path]:
        return [p for p in self.entry_dirs() if p.name.startswith(lookup_hash + "-")]

    def staging_dirs(self) -> list[Path]:
        return [self.staging / name for name in self._names("staging")]

    def trash_dirs(self) -> list[Path]:
        return [self.trash / name for name in self._names("trash")]

    def size_of(self, path: Path) -> int:
        """Bytes under one of the root's items, never following a link."""
        return size_on_disk(path)

    def mark_used(self, entry_id: str) -> None:
        """Best effort: a read-only cache (baked into an image) simply has no usage data.
        The stamp is a regular file of usage/, never a link followed elsewhere."""
        with contextlib.suppress(OSError), self.folder("usage", create=True) as fd:
            stamp = os.open(entry_id, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644, dir_fd=fd)
            try:
                os.utime(stamp)
            finally:
                os.close(stamp)

    def last_used(self, entry_id: str) -> float | None:
        try:
            with self.folder("usage") as fd:
                return os.stat(entry_id, dir_fd=fd, follow_symlinks=False).st_mtime
        except OSError:
            return None

    def forget_usage(self, entry_id: str) -> None:
        with contextlib.suppress(OSError), self.folder("usage") as fd:
            os.unlink(entry_id, dir_fd=fd)


def size_on_disk(path: Path) -> int:
    """Bytes of every file below `path` (an entry: its manifest and signature included),
    never following a link: the one byte count every command reports."""
    try:
        with safefs.opened_dir(path.parent) as fd:
            return safefs.tree_size(path.name, fd)
    except OSError:
        return 0


def _index_record(fd: int, name: str) -> dict[str, str] | None:
    """index/<name> read without following links: {"entry", "artifact"}, or None."""
    try:
        record = json.loads(safefs.read_file(name, fd, INDEX_RECORD_BYTES))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("entry", "artifact")):
        return None
    if "/" in record["entry"] or record["entry"].startswith("."):
        return None
    return record


def _say(path: Path, exc: OSError) -> str:
    """One line for an OS error met at `path` (an unsafe name says what it is)."""
    return str(exc) if isinstance(exc, safefs.UnsafeFile) else f"{path}: {exc.strerror or exc}"


def _not_writable(path: Path, exc: OSError) -> CacheDirError:
    return CacheDirError(
        f"cache dir {path} is not writable: {exc.strerror or exc}",
        hint="pass --cache-dir (or AOTCACHE_DIR) naming a writable directory",
    )


def lock_holder(path: str | os.PathLike[str]) -> int | None:
    """The pid that holds the flock on `path`, read from /proc/locks (Linux); None where
    it cannot be told."""
    try:
        info = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":  # "->" marks a waiter, not the holder
            continue
        major, minor, inode = fields[5].split(":")
        if int(inode) == info.st_ino and os.makedev(int(major, 16), int(minor, 16)) == info.st_dev:
            return int(fields[4])
    return None


@contextlib.contextmanager
def held(
    lock: Any, on_wait: Callable[[str, float], None], what: str, *, timeout: float | None = None
) -> Iterator[None]:
    """Hold a FileLock, telling `on_wait(who, seconds)` every HEARTBEAT_SECONDS while
    another process holds it (`who`: its pid and `what` it does); TimeoutError after
    `timeout` seconds of waiting, if given."""
    from filelock import Timeout

    from aotcache.progress import HEARTBEAT_SECONDS

    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        try:
            step = HEARTBEAT_SECONDS if timeout is None else max(0.0, min(HEARTBEAT_SECONDS, timeout - waited))
            lock.acquire(timeout=step)
            break
        except Timeout:
            pid = lock_holder(lock.lock_file)
            who = f"{'pid ' + str(pid) if pid else 'another process'}, which {what}"
            if timeout is not None and time.monotonic() - started >= timeout:
                raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {who}") from None
            on_wait(who, time.monotonic() - started)
    try:
        yield
    finally:
        lock.release()


def staging_is_abandoned(path: Path) -> bool:
    """A staging item whose owner process is gone (its pid is part of the name)."""
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


def open_root(
    cache_dir: str | os.PathLike[str] | None = None, configured: str | None = None, *, must_exist: bool = False
) -> CacheRoot:
    """The cache root an operation works on (resolve_cache_dir's order); CacheDirError
    when it is a file, or (`must_exist`: operations that only read it) when it is missing."""
    root = CacheRoot(resolve_cache_dir(cache_dir, configured))
    root.check_is_directory()
    if must_exist and not root.path.is_dir():
        raise CacheDirError(
            f"cache dir {root.path} does not exist",
            hint="check --cache-dir or AOTCACHE_DIR; precompile and pull create it",
        )
    return root
