"""What every command shares: output streams, logging, and turning errors into one
line on stderr with the documented exit code (a traceback only with --verbose)."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import textwrap
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

import aotcache.envs as envs
from aotcache.errors import EXIT_CHECK_FAILED, AotCacheError

F = TypeVar("F", bound=Callable[..., Any])

# The options every command shares.
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        envvar="AOTCACHE_DIR",
        metavar="DIR",
        help="Cache directory [default: the user cache dir].",
        show_default=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object, errors included (see docs/json.md).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (and --json output).")]
Verbose = Annotated[
    int,
    typer.Option(
        "--verbose", "-v", count=True, show_default=False, help="More logging; -vv for debug. Shows tracebacks."
    ),
]


def _console(stderr: bool) -> Console:
    """A terminal's own width, else COLUMNS where set, else 200 (CI logs and pipes, so
    that nothing is cut to 80 columns)."""
    probe = Console(stderr=stderr)
    columns = envs.text(envs.COLUMNS)
    width = None if probe.is_terminal or columns.isdigit() else 200
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


stdout = _console(False)
stderr = _console(True)


_TORCH_QUIET = logging.CRITICAL + 1


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of the record (typer's test runner
    swaps it per invocation), never to a stream that has since been closed."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class Output:
    """Per-invocation output settings."""

    def __init__(self, json_mode: bool = False, quiet: bool = False, verbose: int = 0) -> None:
        self.json = json_mode
        self.quiet = quiet
        self.verbose = verbose
        level = logging.WARNING if verbose == 0 else (logging.INFO if verbose == 1 else logging.DEBUG)
        logging.basicConfig(
            level=level, format="%(levelname)s %(name)s: %(message)s", handlers=[_StderrHandler()], force=True
        )
        # torch's own handlers print ERROR records with whole tracebacks (a shape error under
        # the trace logs ~25 lines from fake_tensor) before the exception reaches us and
        # becomes the one-line error; they are shown from -v on. Importing torch resets its
        # logger's level, so it is imported first (every command imports it anyway).
        import torch  # noqa: F401

        logging.getLogger("torch").setLevel(_TORCH_QUIET if verbose == 0 else logging.WARNING)

    def print(self, *args: Any, **kwargs: Any) -> None:
        if not self.quiet and not self.json:
            stdout.print(*args, **kwargs)

    def paragraph(self, text: str, indent: str = "", hang: str = "    ") -> None:
        """Prose (a message, a warning, a list of fields) wrapped to the output's width,
        continuation lines indented by `hang`; printed as it is, never as markup."""
        if self.quiet or self.json:
            return
        lines = textwrap.wrap(
            text, width=max(40, stdout.width), initial_indent=indent, subsequent_indent=indent + hang,
            break_on_hyphens=False,
        )  # fmt: skip
        for line in lines or [indent]:
            stdout.print(line, markup=False, highlight=False)

    def print_table(self, table: Any, *, wide: bool = False) -> None:
        """A table without the spaces rich pads its lines with (CI logs, diffs, grep);
        `wide`: at its natural width, whatever the terminal's."""
        if self.quiet or self.json:
            return
        console = stdout
        if wide:
            console = Console(width=4000, force_terminal=stdout.is_terminal, color_system=stdout.color_system)
        with console.capture() as captured:
            console.print(table)
        for line in captured.get().splitlines():
            stdout.print(Text.from_ansi(line.rstrip()), soft_wrap=True)

    def emit_json(self, data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()


ERROR_SCHEMA = "aotcache.error/1"


def error_json(message: str, code: int, hint: str | None = None, kind: str = "error") -> dict[str, Any]:
    """What --json prints when a command fails: one object, whatever went wrong."""
    return {
        "schema": ERROR_SCHEMA,
        "ok": False,
        "error": {"code": code, "type": kind, "message": message, "hint": hint},
    }


def fail(
    message: str, code: int, hint: str | None = None, *, json_mode: bool = False, kind: str = "error"
) -> typer.Exit:
    """One line on stderr (and with --json one error object on stdout); the exit code."""
    text = f"error: {message}"
    if hint:
        text += f" ({hint})"
    stderr.print(text, markup=False)
    if json_mode:
        sys.stdout.write(json.dumps(error_json(message, code, hint, kind), indent=2, sort_keys=True) + "\n")
        sys.stdout.flush()
    return typer.Exit(code)


def handle_errors(command: F) -> F:
    """Run a command; map AotCacheError to its exit code and one line on stderr."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = kwargs.get("verbose", 0) or 0
        json_mode = bool(kwargs.get("json_out"))
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except AotCacheError as exc:
            if verbose:
                traceback.print_exc()
            raise fail(exc.message, exc.exit_code, exc.hint, json_mode=json_mode, kind=type(exc).__name__) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130, json_mode=json_mode, kind="KeyboardInterrupt") from None
        except Exception as exc:
            if verbose:
                traceback.print_exc()
            raise fail(
                f"unexpected {type(exc).__name__}: {exc}",
                EXIT_CHECK_FAILED,
                "run with -v for the traceback",
                json_mode=json_mode,
                kind=type(exc).__name__,
            ) from None

    return wrapper  # type: ignore[return-value]


def cache_root(cache_dir: Path | None, configured: str | None = None, *, must_exist: bool = False) -> Any:
    """The cache root a command works on; exit 3 when it is a file, not a directory, or
    (`must_exist`: commands that only read it) when it does not exist."""
    from aotcache.store.root import open_root

    return open_root(cache_dir, configured, must_exist=must_exist)


def import_cwd() -> None:
    """Let TARGETs and traced sources resolve from the working directory, as they do
    for `python -m`: a console script's sys.path starts at its own bin/ instead."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def human_bytes(count: int | float | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def parse_int_list(text: str | None, field: str) -> list[int] | None:
    from aotcache.errors import ConfigError

    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [int(t) for t in items]
    except ValueError:
        raise ConfigError(field, text, "a comma-separated list of integers such as 1,2,4") from None
