"""Plain, click-style help that reads the same in a terminal, a pipe or a CI log: no
boxes cut to 80 columns, flags without a `<bool>` type, value options with a metavar
(`--cache-dir DIR`), and arguments in the usage line by name (`TARGET`, `[KEY]...`)."""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperCommand, TyperGroup

# typer vendors its own click (typer._click) since 0.26: parameters are told apart by
# their `param_type_name`, as typer's own formatter does, never by isinstance.
Param = Any
Context = Any
Formatter = Any

# typer's type labels, and the metavar each becomes where an option names none
_TYPE_LABEL = re.compile(r"\s*<([^<>]*)>$")
_METAVARS = {"int": "N", "float": "NUMBER", "path": "PATH", "str": "TEXT"}


def _argument_name(param: Param) -> str:
    name = param.metavar or (param.name or "").upper()
    return name + ("..." if param.nargs != 1 else "")


def _usage_piece(param: Param) -> str:
    name = param.metavar or (param.name or "").upper()
    piece = name if param.required else f"[{name}]"
    return piece + ("..." if param.nargs != 1 else "")


def _option_name(param: Param, name: str) -> str:
    match = _TYPE_LABEL.search(name)
    if match is None:
        return name
    bare = name[: match.start()]
    if param.is_flag or param.count:
        return bare
    label = match.group(1)
    return f"{bare} {_METAVARS.get(label, label.upper())}"


def _help_records(command: Any, ctx: Context) -> tuple[list[Any], list[Any]]:
    arguments, options = [], []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        name, text = record
        if param.param_type_name == "argument":
            arguments.append((_argument_name(param), text))
        elif param.param_type_name == "option":
            options.append((_option_name(param, name), text))
    return arguments, options


def _write(formatter: Formatter, arguments: list[Any], options: list[Any]) -> None:
    if arguments:
        with formatter.section("Arguments"):
            formatter.write_dl(arguments)
    if options:
        with formatter.section("Options"):
            formatter.write_dl(options)


class Command(TyperCommand):
    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_usage_piece(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_options(self, ctx: Context, formatter: Formatter) -> None:
        _write(formatter, *_help_records(self, ctx))


class Group(TyperGroup):
    def format_options(self, ctx: Context, formatter: Formatter) -> None:
        _write(formatter, *_help_records(self, ctx))
        self.format_commands(ctx, formatter)


def examples(*lines: str, note: str | None = None) -> str:
    """An epilog of example command lines, kept as written (`\\b` stops click rewrapping)."""
    text = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
    return text + (f"\n\n{note}" if note else "")
