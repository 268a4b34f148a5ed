"""The building blocks of a structure check (string, integer, record, mapping, ...): each
returns a check that raises SchemaError naming where a value is wrong. schema.py builds
the manifest's schema from them; it is checked once, when a manifest is parsed.

A manifest that passed the check has the right type in every field the loader, the checks
and the reports read, numbers within sane bounds and no nesting beyond MAX_DEPTH, so no
TypeError, KeyError, RecursionError or OverflowError can escape from code that uses it:
anything else is a SchemaError, which the parser turns into CorruptEntry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 32  # of free-form JSON values (factor values, stats, config tables)
MAX_INT = 2**53  # what JSON numbers carry exactly
MAX_ITEMS = 1_000_000
MAX_SIZE = 2**31  # a size, a dimension or a range end

Check = Callable[[Any, str], None]


class SchemaError(ValueError):
    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where or 'manifest'}: {why}")


def string(pattern: str | None = None, max_len: int = 1 << 16) -> Check:
    compiled = re.compile(pattern) if pattern else None

    def check(value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise SchemaError(where, f"expected a string, got {type(value).__name__}")
        if len(value) > max_len:
            raise SchemaError(where, f"a string of {len(value)} characters")
        if compiled is not None and not compiled.fullmatch(value):
            raise SchemaError(where, f"{value[:40]!r} is not of the expected form")

    return check


def integer(low: int = 0, high: int = MAX_INT) -> Check:
    def check(value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(where, f"expected an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise SchemaError(where, f"{value} is outside [{low}, {high}]")

    return check


def number(value: Any, where: str) -> None:
    """An integer of sane size or a finite float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(where, f"expected a number, got {type(value).__name__}")
    json_value(value, where)


def boolean(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise SchemaError(where, f"expected true or false, got {type(value).__name__}")


def one_of(*choices: Any) -> Check:
    def check(value: Any, where: str) -> None:
        if value not in choices:
            raise SchemaError(where, f"{str(value)[:40]!r} is not one of {', '.join(map(str, choices))}")

    return check


def optional(inner: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if value is not None:
            inner(value, where)

    return check


def either(*options: Check) -> Check:
    def check(value: Any, where: str) -> None:
        errors = []
        for option in options:
            try:
                option(value, where)
                return
            except SchemaError as exc:
                errors.append(str(exc))
        raise SchemaError(where, "; ".join(errors))

    return check


def items(inner: Check, length: int | None = None) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise SchemaError(where, f"expected a list, got {type(value).__name__}")
        if len(value) > MAX_ITEMS or (length is not None and len(value) != length):
            raise SchemaError(where, f"a list of {len(value)} items")
        for index, item in enumerate(value):
            inner(item, f"{where}[{index}]")

    return check


def mapping(inner: Check, key: Check | None = None) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(where, f"expected an object, got {type(value).__name__}")
        if len(value) > MAX_ITEMS:
            raise SchemaError(where, f"an object of {len(value)} fields")
        for name, item in value.items():
            if key is not None:
                key(name, f"{where} key")
            inner(item, f"{where}.{name}")

    return check


def record(required: dict[str, Check], optional_fields: dict[str, Check] | None = None) -> Check:
    """An object with these fields (and no others)."""
    known = {**required, **(optional_fields or {})}

    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(where, f"expected an object, got {type(value).__name__}")
        missing = [name for name in required if name not in value]
        if missing:
            raise SchemaError(where, f"no field {missing[0]!r}")
        unknown = [name for name in value if name not in known]
        if unknown:
            raise SchemaError(where, f"unexpected field {str(unknown[0])[:40]!r}")
        for name, item in value.items():
            known[name](item, f"{where}.{name}" if where else name)

    return check


def json_value(value: Any, where: str, depth: int = 0) -> None:
    """Any JSON value: finite numbers of sane size, nested at most MAX_DEPTH deep."""
    if depth > MAX_DEPTH:
        raise SchemaError(where, f"nested more than {MAX_DEPTH} deep")
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise SchemaError(where, "an absurdly large number")
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise SchemaError(where, "a number that is not finite")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            json_value(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for name, item in value.items():
            json_value(item, f"{where}.{name}", depth + 1)
        return
    raise SchemaError(where, f"not a JSON value ({type(value).__name__})")
