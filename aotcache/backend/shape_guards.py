"""Inductor's shape guards of a compiled piece (`2 <= L['s0']`), read by a small grammar.

A guard string is data: it comes from Inductor in this process, or from an earlier
entry or a remote's when a unit is reused, so it is never handed to `eval`. It is
parsed by Python's own parser into a syntax tree (parsing runs nothing) and only these
nodes are accepted:

* integer and float literals, `True`, `False`;
* `L['name']`: a symbolic size (every one of them is the size being tested: aotcache
  traces one dynamic size);
* `+ - * // % / **` (a small exponent), unary `- + not`, comparisons, `and`, `or`;
* calls of the named helpers torch's printers emit (`Eq`, `Ne`, `Mod`, `FloorDiv`,
  `CeilToInt`, `FloorToInt`, `Max`, `Min`, `Abs`, `And`, `Or`, `Not`) and of
  `math.floor`, `math.ceil`, `math.trunc`, with positional arguments only.

No attribute access (but those three), no other name, no subscript but `L[...]`, no
other call: anything else is UnreadableGuard, which for a unit taken from another entry
means "compile it here", and for a unit compiled here fails the precompile.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from functools import lru_cache
from typing import Any

MAX_GUARD_CHARS = 4096
MAX_EXPONENT = 64


class UnreadableGuard(ValueError):
    """A guard string outside the grammar."""


_HELPERS: dict[str, Callable[..., Any]] = {
    "Eq": lambda a, b: a == b,
    "Ne": lambda a, b: a != b,
    "Mod": lambda a, b: a % b,
    "FloorDiv": lambda a, b: a // b,
    "CeilToInt": math.ceil,
    "FloorToInt": math.floor,
    "Max": max,
    "Min": min,
    "Abs": abs,
    "And": lambda *a: all(a),
    "Or": lambda *a: any(a),
    "Not": lambda a: not a,
}
_MATH = {"floor": math.floor, "ceil": math.ceil, "trunc": math.trunc}
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Div: operator.truediv,
    ast.Pow: lambda a, b: a**b,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


@lru_cache(maxsize=1024)
def parse(text: str) -> ast.expr:
    """The guard's syntax tree, checked against the grammar (UnreadableGuard if not)."""
    if not isinstance(text, str) or len(text) > MAX_GUARD_CHARS:
        raise UnreadableGuard("not a guard of a sane length")
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise UnreadableGuard("not an expression") from None
    _check(tree)
    return tree


def holds(text: str, size: int) -> bool:
    """Whether the guard holds when every symbolic size is `size`."""
    tree = parse(text)
    try:
        return bool(_value(tree, size))
    except UnreadableGuard:
        raise
    except (ArithmeticError, ValueError, TypeError, OverflowError) as exc:
        raise UnreadableGuard(f"cannot be evaluated at size {size}: {type(exc).__name__}") from None


def _check(node: ast.AST) -> None:
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float, bool):
            raise UnreadableGuard(f"a constant of type {type(node.value).__name__}")
    elif isinstance(node, ast.Subscript):
        if not (
            _is_name(node.value, "L") and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)
        ):
            raise UnreadableGuard("an item other than L['size']")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise UnreadableGuard(f"the operator {type(node.op).__name__}")
        _check(node.left)
        _check(node.right)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            raise UnreadableGuard(f"the operator {type(node.op).__name__}")
        _check(node.operand)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value)
    elif isinstance(node, ast.Compare):
        if not all(type(op) in _COMPARE for op in node.ops):
            raise UnreadableGuard("a comparison other than == != < <= > >=")
        for value in (node.left, *node.comparators):
            _check(value)
    elif isinstance(node, ast.Call):
        if node.keywords or not (_helper(node.func) or _math(node.func)):
            raise UnreadableGuard(f"a call of {ast.dump(node.func)[:60]}")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise UnreadableGuard("a starred argument")
            _check(arg)
    else:
        raise UnreadableGuard(f"a {type(node).__name__}")


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _helper(func: ast.AST) -> bool:
    return isinstance(func, ast.Name) and func.id in _HELPERS


def _math(func: ast.AST) -> bool:
    return isinstance(func, ast.Attribute) and _is_name(func.value, "math") and func.attr in _MATH


def _value(node: ast.AST, size: int) -> Any:
    """Evaluate a tree _check accepted."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Subscript):
        return size
    if isinstance(node, ast.BinOp):
        left, right = _value(node.left, size), _value(node.right, size)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise OverflowError("an exponent out of range")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        operand = _value(node.operand, size)
        return (
            not operand if isinstance(node.op, ast.Not) else (-operand if isinstance(node.op, ast.USub) else +operand)
        )
    if isinstance(node, ast.BoolOp):
        values = (_value(v, size) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _value(node.left, size)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _value(comparator, size)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        function = _HELPERS[node.func.id] if isinstance(node.func, ast.Name) else _MATH[node.func.attr]  # type: ignore[attr-defined]
        return function(*(_value(arg, size) for arg in node.args))
    raise UnreadableGuard(f"a {type(node).__name__}")
