"""Stats files to and from a remote: `push --stats` sends a stats dir's files, `aotcache
stats --remote` reads them back. The remote stores each file under its name (a newer
copy replaces the older one); what comes back is untrusted data, read as records.py
reads a local file: names checked, size capped, plain JSON, a file that fails skipped
with a warning."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from aotcache.errors import CacheDirError, printable

from .records import FILE_NAME, BadStats, ProcessStats, read_stats_file

if TYPE_CHECKING:
    from aotcache.fleet.remote import Remote

log = logging.getLogger("aotcache.stats")


def push_stats(stats_dir: Path, remote: Remote) -> list[str]:
    """Send every valid stats file of `stats_dir` to the remote, each under its own name
    (replacing the remote's older copy); the names sent. A file that is not a valid stats
    file is not sent (a warning says why); a missing stats dir is a CacheDirError."""
    try:
        names = sorted(entry.name for entry in os.scandir(stats_dir))
    except FileNotFoundError:
        raise CacheDirError(
            f"stats dir {stats_dir} does not exist",
            hint="pass --stats-dir (or set AOTCACHE_STATS_DIR) naming the dir replicas write their stats to",
        ) from None
    except OSError as exc:
        raise CacheDirError(f"stats dir {stats_dir} cannot be read: {exc.strerror or exc}") from None
    sent: list[str] = []
    for name in names:
        if not FILE_NAME.match(name):
            continue  # a file being written aside, or not a stats file at all
        try:
            data = read_stats_file(stats_dir / name)
            ProcessStats.from_bytes(name, data)
        except (OSError, BadStats) as exc:
            log.warning("not pushing stats file %s: %s", stats_dir / name, exc)
            continue
        remote.put_stats(name, data)
        sent.append(name)
    return sent


def read_remote_stats(remote: Remote) -> tuple[list[ProcessStats], list[str]]:
    """The records of every stats file the remote holds, and a warning for each file
    skipped (a bad name, over MAX_FILE_BYTES, not a stats file, a name seen twice)."""
    records: list[ProcessStats] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for name, data in remote.stats_files():
        where = printable(f"stats file {name} on {remote.url}", 400)
        if not isinstance(name, str) or not FILE_NAME.match(name):
            warnings.append(f"{where} skipped: not a stats file name (letters, digits, . _ - ending in .json)")
            continue
        if name in seen:
            warnings.append(f"{where} skipped: the remote lists it twice")
            continue
        seen.add(name)
        if not data:
            warnings.append(f"{where} skipped: empty, or not readable as a file")
            continue
        try:
            records.append(ProcessStats.from_bytes(name, data))
        except (ValueError, TypeError, RecursionError) as exc:  # BadStats, or JSON nested too deep
            reason = str(exc) if isinstance(exc, BadStats) else f"not a stats file ({type(exc).__name__})"
            warnings.append(printable(f"{where} skipped: {reason}", 600))
    return records, warnings
