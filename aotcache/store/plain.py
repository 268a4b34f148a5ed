"""Plain values: what a traced setting may be, as JSON that says its own type.

A setting the trace baked into the graph (a norm's eps, an activation's name, a flag) is
recorded in the manifest as plain data and compared at load with the live value. JSON
alone would confuse `True` with `1`, `1` with `1.0` and a tuple with a list, and it has
no NaN or infinity, so every value that is not a plain str, int, float, bool or None is
a one-key object naming its type: `{"tuple": [...]}`, `{"float": "inf"}`,
`{"dtype": "float32"}`. Comparison is by type and value, never by calling a live
object's own `__eq__`, and nothing is ever evaluated or imported to read a value back.
"""

from __future__ import annotations

import enum
import math
import sys
import types
from typing import Any

import torch


class NotPlain(ValueError):
    """A value with no plain form (an arbitrary object)."""


_SCALARS = (str, int, float, bool, type(None))
_MAX_ITEMS = 1024  # a setting is a few numbers; a bigger container is no setting


def encode(value: Any, depth: int = 0) -> Any:
    """The plain form of `value`, or NotPlain."""
    kind = type(value)
    if kind in (str, int, bool) or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if depth > 8:
        raise NotPlain("nested too deep")
    if kind in (tuple, list, frozenset, set, torch.Size):
        if len(value) > _MAX_ITEMS:
            raise NotPlain(f"a {kind.__name__} of {len(value)} items")
        items = [encode(item, depth + 1) for item in value]
        if kind in (frozenset, set):
            items.sort(key=_order)
        return {kind.__name__: items}
    if kind is dict:
        if len(value) > _MAX_ITEMS:
            raise NotPlain(f"a dict of {len(value)} items")
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is torch.dtype:
        return {"dtype": str(value).removeprefix("torch.")}
    if kind is torch.device:
        return {"device": str(value)}
    if kind is slice:
        return {"slice": [encode(value.start), encode(value.stop), encode(value.step)]}
    if kind is range:
        return {"range": [value.start, value.stop, value.step]}
    if isinstance(value, enum.Enum):
        return {"enum": [qualified(type(value)), value.name]}
    if isinstance(value, type):
        return {"class": qualified(value)}
    raise NotPlain(f"a {qualified(kind)}")


def _order(item: Any) -> str:
    return repr(item)


def qualified(cls: Any) -> str:
    """`module:qualname` of a class or function: how plain data names one."""
    return f"{getattr(cls, '__module__', None)}:{getattr(cls, '__qualname__', None)}"


def same(live: Any, expected: Any) -> bool:
    """Whether a live value's plain form is `expected` (types compared too)."""
    try:
        return _same(encode(live), expected)
    except (NotPlain, TypeError, ValueError, RecursionError):
        return False


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def shown(value: Any) -> str:
    """A plain value as a person reads it: 1e-06, 'gelu', (1, 2), torch.float32."""
    if isinstance(value, str):
        return repr(value)
    if not isinstance(value, dict) or len(value) != 1:
        return str(value)
    ((kind, inner),) = value.items()
    if kind == "float":
        return str(inner)
    if kind in ("tuple", "list", "set", "frozenset", "Size"):
        parts = ", ".join(shown(item) for item in inner)
        return {"tuple": f"({parts}{',' if len(inner) == 1 else ''})", "list": f"[{parts}]"}.get(
            kind, f"{kind}({{{parts}}})"
        )
    if kind == "dict":
        return "{" + ", ".join(f"{shown(k)}: {shown(v)}" for k, v in inner) + "}"
    if kind == "dtype":
        return f"torch.{inner}"
    if kind == "class":
        return str(inner).replace(":", ".")
    if kind == "enum":
        return f"{str(inner[0]).replace(':', '.')}.{inner[1]}"
    return f"{kind}({inner})"


def identity(value: Any) -> str | None:
    """A name that says which object `value` is, where it has one a serving process can
    check without importing anything: a module, a class, a function (by its module and
    qualified name; its code is a traced source), a builtin, an op, an enum member, or an
    object its class's module holds as a global (a module-level singleton such as the
    `kernels` package's function modules, which transformers >= 5.25 decorates attention
    with): by that module and global name, read back without importing anything."""
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    if isinstance(value, type):
        return f"class {qualified(value)}"
    if isinstance(value, types.FunctionType):
        return f"function {value.__module__}:{value.__code__.co_qualname}"
    if isinstance(value, types.BuiltinFunctionType):  # builtin functions and methods are one type
        return _builtin(value)
    if isinstance(value, _DESCRIPTORS):
        return f"descriptor {qualified(value.__objclass__)}.{value.__name__}"
    if isinstance(value, types.MethodType):
        inner = identity(value.__func__)
        return f"method {inner} of {identity(value.__self__)}" if inner else None
    if isinstance(value, enum.Enum):
        return f"enum {qualified(type(value))}.{value.name}"
    kind = type(value).__name__
    if kind == "OpOverloadPacket" and type(value).__module__ == "torch._ops":
        return f"op {value._qualified_op_name}"
    if kind == "OpOverload" and type(value).__module__ == "torch._ops":
        return f"op {value._name}.{value._overloadname}"
    if kind == "_OpNamespace" and type(value).__module__ == "torch._ops":
        return f"op-namespace {value.name}"
    if kind == "_Ops" and type(value).__module__ == "torch._ops":
        return "torch.ops"
    if value is None or type(value) is bool:
        return f"constant {value}"
    return module_global(value)


def module_global(value: Any) -> str | None:
    """`object module:name` where the module of `value`'s class is loaded and holds
    `value` itself as the global `name`; None otherwise."""
    module = sys.modules.get(getattr(type(value), "__module__", None) or "")
    held = getattr(module, "__dict__", None)
    if type(held) is not dict:
        return None
    for name, item in held.items():
        if item is value and type(name) is str:
            return f"object {module.__name__}:{name}"  # type: ignore[union-attr]
    return None


def holds_global(value: Any, name: str) -> bool:
    """Whether `name` (`object module:name`) still names `value`: one dict read."""
    module_name, _, attr = name.removeprefix("object ").partition(":")
    held = getattr(sys.modules.get(module_name), "__dict__", None)
    return type(held) is dict and held.get(attr) is value


_DESCRIPTORS = (types.MethodDescriptorType, types.WrapperDescriptorType, types.ClassMethodDescriptorType)


def _builtin(value: Any) -> str | None:
    """A builtin function by where it is found (`torch.rsqrt`, `builtins.iter`): never by
    its pybind11 qualified name, which names the C++ ABI of the build."""
    owner = getattr(value, "__self__", None)
    if isinstance(owner, type):
        return f"builtin {qualified(owner)}.{value.__name__}"
    module = getattr(value, "__module__", None)
    if module:
        return f"builtin {module}.{value.__name__}"
    return None  # a method bound to an instance: the instance has no name
