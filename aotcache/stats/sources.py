"""Where stats are read from: a stats dir, a remote, or both."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aotcache.envs as envs
from aotcache.errors import UsageError

from .records import ProcessStats, read_dir


def default_stats_dir(stats_dir: str | os.PathLike[str] | None, cache_dir: str | os.PathLike[str] | None) -> Path:
    """`stats_dir`, else AOTCACHE_STATS_DIR, else `<cache dir>/stats`."""
    if stats_dir:
        return Path(stats_dir).expanduser()
    if envs.get(envs.AOTCACHE_STATS_DIR):
        return Path(envs.get(envs.AOTCACHE_STATS_DIR) or "").expanduser()
    from aotcache.store.root import resolve_cache_dir

    return Path(resolve_cache_dir(cache_dir, None)) / "stats"


def is_remote(source: str) -> bool:
    return "://" in source


def read_stats(source: str, *, insecure: bool = False) -> tuple[list[ProcessStats], list[str]]:
    """The records of a stats dir, or of a remote's stats (an OCI registry, an fsspec URL),
    and a warning for each file that could not be read."""
    if is_remote(source):
        return read_remote(source, insecure=insecure)
    path = Path(source).expanduser()
    if not path.is_dir():
        raise UsageError(
            f"no stats dir {str(path)!r}",
            hint="give the AOTCACHE_STATS_DIR the replicas wrote to, or a remote they pushed to (push --stats)",
        )
    return read_dir(path)


def read_remote(url: str, *, insecure: bool = False) -> tuple[list[ProcessStats], list[str]]:
    from aotcache.fleet.connect import open_remote

    from .remote import read_remote_stats

    remote: Any = open_remote(url, insecure=insecure)
    return read_remote_stats(remote)
