"""Typed errors. Every error the tool raises on purpose derives from AotCacheError.

Each carries the CLI exit code it maps to, so the CLI never has to guess:
0 ok, 1 check failed / not found, 2 usage or bad input, 3 environment problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3


@dataclass(frozen=True)
class Difference:
    """One named thing (a key factor, a traced file, an artifact) that differs."""

    name: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.name}: {_short(self.old)} -> {_short(self.new)}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "old": self.old, "new": self.new}


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


MAX_MESSAGE_CHARS = 2000


def printable(text: Any, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` made safe for one line of a terminal, a log or a table: every control or
    other unprintable character escaped (a remote's newline or terminal escape sequence
    cannot forge output), and at most `limit` characters."""
    value = str(text)
    if not value.isprintable():
        value = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value)
    return value if len(value) <= limit else value[: limit - 3] + "..."


class AotCacheError(Exception):
    """Base class. `hint` says how to fix it, in one line. Both are made printable:
    messages quote things a remote or a damaged file chose."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        message = printable(message)
        super().__init__(message)
        self.message = message
        self.hint = printable(hint) if hint is not None else None

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(AotCacheError, ValueError):
    """An invalid configuration value: names the field, the value and what is allowed."""

    exit_code = EXIT_USAGE

    def __init__(self, field: str, value: Any, allowed: str, *, hint: str | None = None) -> None:
        super().__init__(f"invalid {field}={value!r}: {allowed}", hint=hint)
        self.field = field
        self.value = value
        self.allowed = allowed


class UsageError(AotCacheError):
    """A command was called in a way that does not make sense (nothing selected...)."""

    exit_code = EXIT_USAGE


class TargetError(AotCacheError):
    """TARGET could not be imported or does not follow the target contract."""

    exit_code = EXIT_USAGE


class CacheDirError(AotCacheError):
    """The cache directory is missing, not a directory, read-only or full."""

    exit_code = EXIT_ENVIRONMENT


class CompileError(AotCacheError):
    """Capturing, splitting or compiling the model failed."""


class DispatchError(AotCacheError, ValueError):
    """A call whose size or inputs no artifact of the entry can serve."""


class CacheMiss(AotCacheError):
    """No usable entry: the base of every reason a load can refuse."""

    reason = "miss"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        differences: list[Difference] | None = None,
        entry_id: str | None = None,
    ) -> None:
        self.differences = list(differences or [])
        self.entry_id = entry_id
        self.summary = message  # the message without the differences
        if self.differences:
            message = message + ": " + "; ".join(str(d) for d in self.differences)
        super().__init__(message, hint=hint)


class EntryNotFound(CacheMiss):
    reason = "not-found"


class StaleEntry(CacheMiss):
    """A traced source file changed since the entry was built."""

    reason = "stale"


class CorruptEntry(CacheMiss):
    """A file of the entry is missing, truncated, altered or out of place."""

    reason = "corrupt"


class IncompatibleEnvironment(CacheMiss):
    """The entry was built for another torch, Python, CPU ISA, compiler or device."""

    reason = "incompatible-env"


class UnsupportedFormat(CacheMiss):
    """The entry was written by a newer aotcache format."""

    reason = "unsupported-format"


class SignatureError(CacheMiss):
    """The entry is unsigned, or its signature does not match a trusted key."""

    reason = "untrusted"


class RemoteError(CacheMiss):
    """A remote (registry or object store) could not be reached, refused us, or is
    missing the client library its URL needs. To a load it is a miss like any other."""

    reason = "remote"
    exit_code = EXIT_ENVIRONMENT


class RemoteConflict(AotCacheError):
    """The remote holds an entry of this id with other bytes: push never overwrites."""
