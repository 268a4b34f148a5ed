"""What a push or a pull did to one entry, for the CLI to render and --json to print."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aotcache.errors import AotCacheError

Progress = Callable[[int], None]  # told of the bytes of each chunk sent, received or skipped


@dataclass
class Transfer:
    entry_id: str
    status: str  # pushed / pulled, present (nothing to do), or failed
    bytes: int = 0  # the entry's size, manifest and signature included
    bytes_transferred: int = 0  # uploaded (push) or downloaded (pull)
    bytes_skipped: int = 0  # not sent: already on the remote, copied from a local entry, or resumed
    blobs_transferred: int = 0
    blobs_skipped: int = 0
    error: AotCacheError | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.entry_id,
            "status": self.status,
            "bytes": self.bytes,
            "bytes_transferred": self.bytes_transferred,
            "bytes_skipped": self.bytes_skipped,
            "blobs_transferred": self.blobs_transferred,
            "blobs_skipped": self.blobs_skipped,
            "error": self.error.one_line() if self.error else None,
            "exit_code": self.error.exit_code if self.error else 0,
        }
