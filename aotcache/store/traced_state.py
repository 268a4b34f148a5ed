"""Traced state: every plain setting a trace read and baked into the graph, as checks.

Dynamo guards each value it reads while tracing (a norm's `eps`, an activation's name,
a flag, a module-level constant, `torch.backends.cudnn.enabled`, the class of each
submodule); the compiled graph is only right while those values hold. precompile turns
Dynamo's own guard set into this plain data (backend/guards.py), the manifest
carries it, and a serving process checks it against the live model before anything of
the entry runs: attribute and item reads only, no Dynamo, no Inductor, nothing evaluated
or imported. A value that differs is a miss naming the setting, in the entry -> here.

The data is a table of *nodes*, each read from an earlier one (a path shared by many
checks is read once), and a list of *checks*, each made on a list of nodes (the same
check on every layer of a model is one record):

    nodes:  [parent, op, arg]   roots (parent -1): model | module NAME | model_module NAME
                                | builtins; steps: attr NAME | item KEY | dict_item KEY
                                | child [DICT, KEY] (a submodule: node.DICT[KEY]) | type
    checks: [kind, arg, expected, [node, ...]]

Check kinds. Where `arg` is a name, the kinds marked * read that attribute of the node
first (so that a model's hundreds of flags and hook dicts need no node each):
    equals*   the value's plain form (store/plain.py) is `expected`
    type*     type(value) is the class named `expected` ("module:qualname")
    is*       the value is the object named `expected` (plain.identity)
    len*      len(value) == expected, for builtin containers
    keys*     the dict's keys, in order, are `expected` (a plain list)
    empty     each attribute named in `arg` (a list) is an empty container: no hooks
    fields    `equals` for many attributes of one node: `arg` their names, `expected` their
              values (a transformers config's fields are one record)
    contains  (arg in value) == expected
    hasattr   hasattr(value, arg) == expected
    no_own    `arg` is not in the object's own __dict__ (no per-instance override)
    same      the value is the very object node `expected` holds (tied tensors)
    global    the process-wide setting `arg` (GLOBAL_SETTINGS) is `expected`; no nodes

"""

from __future__ import annotations

import builtins
import collections
import itertools
import operator
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from aotcache.errors import Difference
from aotcache.formats import torch_internals
from aotcache.key.factors import digest

from .plain import NotPlain, encode, holds_global, identity, qualified, same, shown

ROOTS = ("model", "module", "model_module", "builtins")  # the reads a path starts with
READS_ATTR = ("equals", "type", "is", "len", "keys")  # the kinds whose `arg` is an attribute to read first
_LISTS = ("empty", "fields")  # the kinds whose `arg` is a list of attribute names


@dataclass(frozen=True)
class TracedState:
    """What an entry's trace depended on, beyond the tensors' names, shapes and dtypes."""

    nodes: list[list[Any]] = field(default_factory=list)
    checks: list[list[Any]] = field(default_factory=list)
    not_checked: dict[str, int] = field(default_factory=dict)  # why -> how many of Dynamo's guards

    def to_json(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "checks": self.checks, "not_checked": self.not_checked}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TracedState:
        return cls(data["nodes"], data["checks"], data["not_checked"])

    @property
    def digest(self) -> str:
        """What the entry id covers: the checks, not the counts of what is not checked."""
        return digest([self.nodes, self.checks])[:16]

    @property
    def count(self) -> int:
        """How many single checks (a record on n nodes counts n)."""
        return sum(max(1, len(nodes)) * (len(arg) if kind in _LISTS else 1) for kind, arg, _, nodes in self.checks)


class Missing:
    """A value that could not be read here, and why."""

    def __init__(self, why: str) -> None:
        self.why = why


def _global_settings() -> dict[str, Callable[[], Any]]:
    """Process-wide settings a trace bakes in that no environment factor covers (the
    default dtype, deterministic algorithms and the matmul precision are lookup factors;
    autograd is off in every loaded call), by name, each with how to read it."""
    matmul = torch.backends.cuda.matmul
    return {
        "autocast.cpu": lambda: torch.is_autocast_enabled("cpu"),
        "autocast.cuda": lambda: torch.is_autocast_enabled("cuda"),
        "cuda.matmul.fp16_reduction": lambda: bool(matmul.allow_fp16_reduced_precision_reduction),
        "cuda.matmul.bf16_reduction": lambda: bool(matmul.allow_bf16_reduced_precision_reduction),
        "torch_function.enabled": torch_internals.torch_function_enabled,
        "torch_function.modes": torch_internals.torch_function_modes,
        "default_device": lambda: str(torch.get_default_device()),
    }


GLOBAL_SETTINGS = _global_settings()


# -- reading -----------------------------------------------------------------------------


def resolve(state: TracedState, model: Any) -> list[Any]:
    """The value of every node for this model in this process (Missing where a read
    fails: an attribute gone, a module not imported here)."""
    values: list[Any] = []
    append = values.append
    for parent, op, arg in state.nodes:
        base = values[parent] if parent >= 0 else None
        if type(base) is Missing:
            append(base)
            continue
        try:  # the common steps first, inline: a model has hundreds of nodes
            if op == "child":
                append(getattr(base, arg[0])[arg[1]])
            elif op == "attr":
                append(getattr(base, arg))
            else:
                append(_read(op, arg, base, model))
        except Exception as exc:  # a read runs the object's own code (properties, __getattr__)
            append(Missing(f"{type(exc).__name__} reading it"))
    return values


def _read(op: str, arg: Any, base: Any, model: Any) -> Any:
    if op == "item":
        return base[arg]
    if op == "dict_item":
        return dict.__getitem__(base, arg)
    if op == "type":
        return type(base)
    if op == "model":
        return model
    if op == "module":
        return sys.modules.get(arg) or Missing(f"module {arg} is not imported in this process")
    if op == "model_module":
        return sys.modules[type(model).__module__]
    if op == "builtins":
        return builtins.__dict__
    return Missing(f"unknown read {op!r}")


def _attr(value: Any, name: str) -> Any:
    if type(value) is Missing:
        return value
    try:
        return getattr(value, name)
    except Exception as exc:
        return Missing(f"{type(exc).__name__} reading it")


# -- checking ----------------------------------------------------------------------------


def problems(state: TracedState, model: Any) -> list[Difference]:
    """Every check that fails for this model in this process, as setting: in the entry ->
    here. Empty when the model is the one the entry was traced from."""
    values = resolve(state, model)
    if _all_hold(state, values):
        return []
    found = []
    for kind, arg, expected, nodes in state.checks:
        if kind == "global":
            read = GLOBAL_SETTINGS.get(arg)
            live = read() if read is not None else Missing("not a setting this aotcache reads")
            if not _holds("equals", None, expected, live, values):
                found.append(Difference(f"torch setting {arg}", shown(expected), _live("equals", live)))
            continue
        for node in _failing(kind, arg, expected, nodes, values):
            found.extend(_explain(state, kind, arg, expected, node, values))
    return found


def _failing(kind: str, arg: Any, expected: Any, nodes: list[int], values: list[Any]) -> list[int]:
    """The nodes a check fails on. The kinds a model repeats per layer have loops of their
    own: this is the whole cost of the check at load."""
    if kind == "empty":
        return [node for node in nodes if not _all_empty(values[node], arg)]
    if kind == "fields":
        return [node for node in nodes if _differing_fields(values[node], arg, expected)]
    reads = arg is not None and kind in READS_ATTR
    bad = []
    if kind == "type":
        for node in nodes:
            value = _attr(values[node], arg) if reads else values[node]
            if (_TYPE_NAMES.get(type(value)) or _type_name(type(value))) != expected:
                bad.append(node)
    elif kind == "equals" and type(expected) in _PLAIN_SCALARS:
        expected_type = type(expected)
        for node in nodes:
            value = _attr(values[node], arg) if reads else values[node]
            if type(value) is not expected_type or value != expected:
                bad.append(node)
    elif kind == "no_own":
        for node in nodes:
            own = getattr(values[node], "__dict__", None)
            if type(own) is not dict or arg in own or type(values[node]) is Missing:
                bad.append(node)
    else:
        for node in nodes:
            value = _attr(values[node], arg) if reads else values[node]
            if not _holds(kind, arg, expected, value, values):
                bad.append(node)
    return bad


def _all_hold(state: TracedState, values: list[Any]) -> bool:
    """Whether every check holds: the same answers as _failing, with the per-node loops
    run by map() and attrgetter, so that a 32-layer model costs a fraction of a
    millisecond. Any surprise (a value missing, an attribute absent) answers False and
    _failing then says what differs."""
    if any(type(value) is Missing for value in values):
        return False
    at = values.__getitem__
    try:
        for kind, arg, expected, nodes in state.checks:
            if kind in _VECTORED:
                if not _VECTORED[kind](arg, expected, list(map(at, nodes))):
                    return False
            elif kind != "global" and _failing(kind, arg, expected, nodes, values):
                return False
            elif kind == "global":
                read = GLOBAL_SETTINGS.get(arg)
                if read is None or not same(read(), expected):
                    return False
    except Exception:  # an attribute the fast path could not read: the slow path says which
        return False
    return True


def _subjects(arg: str | None, objects: list[Any]) -> Any:
    return objects if arg is None else map(operator.attrgetter(arg), objects)


def _types_are(arg: str | None, expected: str, objects: list[Any]) -> bool:
    return all(_type_name(cls) == expected for cls in set(map(type, _subjects(arg, objects))))


def _equal_to(arg: str | None, expected: Any, objects: list[Any]) -> bool:
    if expected is None:  # a bias that is None on every linear layer: identity, in C
        return all(map(operator.is_, _subjects(arg, objects), itertools.repeat(None)))
    if type(expected) not in _PLAIN_SCALARS:
        return all(same(value, expected) for value in _subjects(arg, objects))
    live = list(_subjects(arg, objects))
    return set(map(type, live)) <= {type(expected)} and live.count(expected) == len(live)


def _none_own(arg: str, expected: Any, objects: list[Any]) -> bool:
    return not any(map(operator.contains, map(_OWN_DICT, objects), itertools.repeat(arg)))


def _hooks_empty(arg: list[str], expected: Any, objects: list[Any]) -> bool:
    hooks = map(operator.itemgetter(*arg), map(_OWN_DICT, objects))
    return not any(map(any, hooks) if len(arg) > 1 else hooks)


def _are(arg: str | None, expected: str, objects: list[Any]) -> bool:
    return all(_identity(value) == expected for value in _subjects(arg, objects))


_OWN_DICT = operator.attrgetter("__dict__")
_VECTORED: dict[str, Callable[[Any, Any, list[Any]], bool]] = {
    "type": _types_are,
    "equals": _equal_to,
    "no_own": _none_own,
    "empty": _hooks_empty,
    "is": _are,
    "fields": lambda names, expected, objects: not any(_differing_fields(o, names, expected) for o in objects),
}
_PLAIN_SCALARS = frozenset({str, int, bool, float})
_TYPE_NAMES: dict[type, str] = {}


def _type_name(cls: type) -> str:
    name = _TYPE_NAMES[cls] = qualified(cls)
    return name


def _all_empty(value: Any, names: list[str]) -> bool:
    own = getattr(value, "__dict__", None)
    if type(own) is not dict or type(value) is Missing:
        return False
    get = own.get
    for name in names:
        hooks = get(name)
        if hooks or type(hooks) not in _HOOK_DICTS:
            return False
    return True


_HOOK_DICTS = frozenset({dict, collections.OrderedDict})


def _differing_fields(value: Any, names: list[str], expected: list[Any]) -> list[int]:
    """The positions of `names` whose value on `value` is not the expected one. A value
    stored on the object is read from its __dict__ (what getattr returns, without
    transformers' Python-level __getattribute__ hooks: ~2 us a field)."""
    differing = []
    own = getattr(value, "__dict__", None) if type(value) is not Missing else None
    own = own if type(own) is dict else {}
    for index, (name, want) in enumerate(zip(names, expected, strict=True)):
        live = own[name] if name in own else _attr(value, name)
        if type(want) in _PLAIN_SCALARS:
            if type(live) is not type(want) or live != want:
                differing.append(index)
        elif want is None:
            if live is not None:
                differing.append(index)
        elif not same(live, want):
            differing.append(index)
    return differing


def _no_own(value: Any, name: str) -> bool:
    own = getattr(value, "__dict__", None)
    return type(own) is dict and type(value) is not Missing and name not in own


_IDENTITIES: dict[int, tuple[Any, str | None]] = {}  # id -> (object, name): classes, functions, modules


def _identity(value: Any) -> str | None:
    cached = _IDENTITIES.get(id(value))
    if cached is not None and cached[0] is value:
        if cached[1] is None or not cached[1].startswith("object ") or holds_global(value, cached[1]):
            return cached[1]
    name = identity(value)
    if isinstance(value, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)) or (
        name is not None and name.startswith("object ")
    ):
        _IDENTITIES[id(value)] = (value, name)  # immortal in practice: kept, so the id stays theirs
    return name


def _holds(kind: str, arg: Any, expected: Any, value: Any, values: list[Any]) -> bool:
    if type(value) is Missing:
        return False
    if kind == "equals":
        return same(value, expected)
    if kind == "type":
        return _type_name(type(value)) == expected
    if kind == "is":
        return _identity(value) == expected
    if kind == "len":
        return _length(value) == expected
    if kind == "keys":
        keys = _keys(value)
        return keys is not None and same(keys, expected)
    if kind == "empty":
        return _all_empty(value, arg)
    if kind == "contains":
        return _contains(value, arg) == expected
    if kind == "hasattr":
        try:
            return hasattr(value, arg) == expected
        except Exception:
            return False
    if kind == "no_own":
        return _no_own(value, arg)
    if kind == "same":
        return isinstance(expected, int) and 0 <= expected < len(values) and value is values[expected]
    return False


_CONTAINERS = (list, tuple, dict, set, frozenset)


def _length(value: Any) -> int | None:
    for container in _CONTAINERS:
        if isinstance(value, container):
            return container.__len__(value)
    return None


def _keys(value: Any) -> list[Any] | None:
    if isinstance(value, dict):
        return list(dict.keys(value))
    if isinstance(value, types.MappingProxyType):  # a class's __dict__
        return list(value.keys())
    return None


def _contains(value: Any, key: Any) -> bool | None:
    if isinstance(value, types.MappingProxyType):
        value = dict(value)
    for container in (dict, set, frozenset):
        if isinstance(value, container):
            try:
                return container.__contains__(value, key)
            except TypeError:
                return None
    return None


# -- saying what differs -------------------------------------------------------------------


def _explain(state: TracedState, kind: str, arg: Any, expected: Any, node: int, values: list[Any]) -> list[Difference]:
    value = values[node]
    if kind == "empty":  # one difference per hook dict that is not empty
        own = getattr(value, "__dict__", {}) if type(value) is not Missing else {}
        return [
            Difference(f"{_join(path_of(state, node), name)}", "empty", _live("len", own.get(name)))
            for name in arg
            if not _all_empty(value, [name])
        ]
    if kind == "fields":  # one difference per field that differs
        path = path_of(state, node)
        return [
            Difference(_join(path, arg[i]), shown(expected[i]), _live("equals", _attr(value, arg[i])))
            for i in _differing_fields(value, arg, expected)
        ]
    if arg is not None and kind in READS_ATTR:
        value = _attr(value, arg)
    return [Difference(_label(state, node, kind, arg), _expected_shown(kind, arg, expected), _live(kind, value, arg))]


def _expected_shown(kind: str, arg: Any, expected: Any) -> Any:
    if kind in ("equals", "keys"):
        return shown(expected)
    if kind == "type":
        return str(expected).replace(":", ".")
    if kind in ("contains", "hasattr"):
        return "present" if expected else "absent"
    if kind == "no_own":
        return "not overridden"
    if kind == "same":
        return "the same object"
    return expected


def _live(kind: str, value: Any, arg: Any = None) -> Any:
    if type(value) is Missing:
        return value.why
    if kind in ("equals", "keys"):
        try:
            return shown(encode(_keys(value) if kind == "keys" else value))
        except (NotPlain, TypeError):
            return f"a {type(value).__qualname__}"
    if kind == "type":
        return qualified(type(value)).replace(":", ".")
    if kind == "is":
        return identity(value) or f"a {type(value).__qualname__}"
    if kind == "len":
        return _length(value)
    if kind == "contains":
        return {True: "present", False: "absent"}.get(_contains(value, arg), "not a container")  # type: ignore[arg-type]
    if kind == "hasattr":
        return "present" if hasattr(value, arg) else "absent"
    if kind == "no_own":
        return "overridden on the instance"
    return "another object"


def path_of(state: TracedState, node: int) -> str:
    """`layers.0.input_layernorm.variance_epsilon` for a node of the model, the module's
    name first for a module's (`torch.backends.cudnn.enabled`); '' for the model."""
    return "".join(_path_parts(state, node)).lstrip(".")


def _path_parts(state: TracedState, node: int) -> Iterator[str]:
    chain = []
    while node >= 0:
        chain.append(state.nodes[node])
        node = state.nodes[node][0]
    for _, op, arg in reversed(chain):
        if op == "model":
            continue
        if op in ("module", "model_module"):
            yield str(arg)
        elif op == "builtins":
            yield "builtins"
        elif op == "type":
            yield ".__class__"
        elif op == "attr":
            yield f".{arg}"
        else:
            key = arg[1] if op == "child" else arg
            yield f".{key}" if isinstance(key, str) and (key.isidentifier() or key.isdigit()) else f"[{key!r}]"


def _join(path: str, name: Any) -> str:
    return f"{path}.{name}" if path else str(name)


def _label(state: TracedState, node: int, kind: str, arg: Any) -> str:
    base = path_of(state, node)
    if arg is not None and kind in READS_ATTR:
        base = _join(base, arg)
    suffix = {
        "type": " (class)",
        "is": " (which object)",
        "len": " (length)",
        "keys": " (keys)",
        "contains": f" (holds {arg!r})",
        "hasattr": f" (has .{arg})",
        "no_own": f" (own .{arg})",
        "same": " (one object with another path)",
    }.get(kind, "")
    return (base or "the model") + suffix
