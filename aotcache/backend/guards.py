"""Dynamo's guards, turned into the plain checks an entry carries (aotcache/store/traced_state.py).

Dynamo's own guard set is the source of truth: every guard it installs while tracing
`forward` is either turned into a check that a serving process can make with attribute
reads alone, or is covered by something aotcache already checks (named below, and
counted in the manifest), or fails the precompile by name. None is dropped silently.

Roots. The trace starts in `_forward_of(model, arguments)` (capture.py), whose globals
hold nothing of the user's, so every guard starts at the model, at the call's arguments,
or at a module (Dynamo reaches a module's globals as `__import_<module>`), or at the
process's global state.

What is covered elsewhere, not recorded as a check:
  * the tensors: the model's are bound by name and keyed by name, shape and dtype (the
    lookup key), the call's are checked per call against the input spec;
  * the call's plain arguments: the input spec, per call;
  * the dynamic size: the dispatcher serves each size from a unit whose guards hold;
  * autograd: every loaded call runs without it;
  * the default dtype, deterministic algorithms, matmul precision, threads: key factors;
  * Dynamo's and Inductor's own code (their polyfills), never imported at load, and
    aotcache's own (its files are traced sources; its ops are registered at load);
  * how aotcache.hf routes a transformers model's attention to aotcache::attention
    (hf_state.py);
  * the size of a module-level dict the trace did not iterate: a registry such as
    transformers' output-capture table grows with every model class a process builds;
    the items the trace read from it are checked, by key.
"""

from __future__ import annotations

import builtins
import collections
import logging
import sys
import types
from collections.abc import Sequence
from typing import Any

import torch

from aotcache.errors import CompileError
from aotcache.store import traced_state as state_mod
from aotcache.store.plain import NotPlain, encode, identity, qualified
from aotcache.store.traced_state import TracedState

from . import _torch_compat as compat
from . import hf_state

log = logging.getLogger("aotcache.capture")

# Guards whose subject is covered by another check, by the reason given.
COVERED_TENSORS = "tensors: the model's by name, shape and dtype (lookup key); the call's by the input spec"
COVERED_ARGUMENTS = "the call's arguments: checked per call against the input spec"
COVERED_SIZE = "the dynamic size: the dispatcher picks a unit whose size guards hold"
COVERED_AUTOGRAD = "autograd state: every loaded call runs without autograd"
COVERED_ENV = "default dtype, deterministic algorithms: lookup key factors"
COVERED_TRACER = "Dynamo's and Inductor's own code (never imported when loading)"
COVERED_OWN = "aotcache's own code and ops (its files are traced sources)"
COVERED_REGISTRY = "the size of a module-level registry the trace did not iterate (items read: checked by key)"

_TRACER_MODULES = ("torch._dynamo", "torch._inductor")
_OWN_MODULES = ("aotcache",)
_GLOBAL_STATE_CHECKS = {
    "GLOBAL_STATE": (
        "autocast.cpu",
        "autocast.cuda",
        "cuda.matmul.fp16_reduction",
        "cuda.matmul.bf16_reduction",
        "torch_function.enabled",
    ),
    "TORCH_FUNCTION_STATE": ("torch_function.enabled", "torch_function.modes"),
    "DEFAULT_DEVICE": ("default_device",),
}
_COVERED_KINDS = {
    "TENSOR_MATCH": COVERED_TENSORS,
    "NOT_NONE_MATCH": COVERED_TENSORS,
    "SHAPE_ENV": COVERED_SIZE,
    "GRAD_MODE": COVERED_AUTOGRAD,
    "AUTOGRAD_SAVED_TENSORS_HOOKS": COVERED_AUTOGRAD,
    "DUAL_LEVEL": COVERED_AUTOGRAD,
    "FUNCTORCH_STACK_MATCH": COVERED_AUTOGRAD,
    "DETERMINISTIC_ALGORITHMS": COVERED_ENV,
}
_VALUE_KINDS = {"CONSTANT_MATCH", "EQUALS_MATCH", "BOOL_MATCH", "NONE_MATCH", "CONSTANT_SUBCLASS_MATCH"}
_IDENTITY_KINDS = {
    "ID_MATCH",
    "FUNCTION_MATCH",
    "CLOSURE_MATCH",
    "CLASS_MATCH",
    "MODULE_MATCH",
    "BUILTIN_MATCH",
    "NN_MODULE",
}
_LENGTH_KINDS = {"SEQUENCE_LENGTH", "LIST_LENGTH", "TUPLE_LENGTH", "DICT_LENGTH", "EMPTY_NN_MODULE_HOOKS_DICT"}
_KEYS_KINDS = {"DICT_KEYS_MATCH", "DICT_KEYS", "MAPPING_KEYS_CHECK"}
_CONTAINS_KINDS = {"DICT_CONTAINS": True, "DICT_NOT_CONTAINS": False, "SET_CONTAINS": True, "SET_NOT_CONTAINS": False}


class _Covered(Exception):
    """The guard's subject is checked elsewhere (the reason names where)."""


class _Refused(Exception):
    """The guard has no plain check."""


class StateRecorder:
    """Builds one TracedState from a trace's guards (and, for transformers models, the
    config's fields: hf_state.py); `state()` refuses the build if any guard had no
    plain form."""

    def __init__(self, model: torch.nn.Module, frame_globals: dict[str, Any]) -> None:
        self.model = model
        self.frame_globals = frame_globals
        self.nodes: list[list[Any]] = []
        self._node_index: dict[tuple[int, str, Any], int] = {}
        self.checks: list[list[Any]] = []
        self._check_keys: set[str] = set()
        self.not_checked: collections.Counter[str] = collections.Counter()
        self.refused: list[str] = []
        self._settings: set[str] = set()  # global settings the trace depends on
        self._present_keys: set[tuple[int, Any]] = set()  # (dict node, key) Dynamo saw in a dict
        self._dict_lengths: set[tuple[int, Any]] = set()  # (node, attr) of a dict's length check

    # -- building ----------------------------------------------------------------------

    def node(self, parent: int, op: str, arg: Any = None) -> int:
        key = (parent, op, arg if not isinstance(arg, list) else tuple(arg))
        if key not in self._node_index:
            self._node_index[key] = len(self.nodes)
            self.nodes.append([parent, op, arg])
        return self._node_index[key]

    def check(self, node: int, kind: str, arg: Any, expected: Any) -> None:
        record = [node, kind, arg, expected]
        key = repr(record)
        if key not in self._check_keys:
            self._check_keys.add(key)
            self.checks.append(record)

    def _registries(self) -> None:
        """A module's dict the trace did not iterate is a registry other models of the
        process add to (transformers' output-capture table has a key per model class a
        process built): its length is not checked, nor its keys but those the trace
        read an item of. Any other dict's keys and length are."""
        iterated = {self._dict(node, arg) for node, kind, arg, _ in self.checks if kind == "keys"}
        read = {(parent, arg) for parent, op, arg in self.nodes if op in ("item", "dict_item")}

        def registry(node: int, attr: Any) -> bool:
            return self._from_module(node) and self._dict(node, attr) not in iterated

        kept = []
        for record in self.checks:
            node, kind, attr, _ = record
            if kind == "len" and (node, attr) in self._dict_lengths and registry(node, attr):
                self.not_checked[COVERED_REGISTRY] += 1
            else:
                kept.append(record)
        self.checks = kept
        for node, key in sorted(self._present_keys, key=repr):
            if registry(node, None) and (node, key) not in read:
                self.not_checked[COVERED_REGISTRY] += 1
            else:
                self.check(node, "contains", key, True)

    def _dict(self, node: int, attr: Any) -> Any:
        """One name for a dict whether a check reads it as a node or as its attribute."""
        return node if attr is None else self._node_index.get((node, "attr", attr), (node, attr))

    def _routing_and_own_ops(self) -> None:
        """Move the checks of aotcache's attention routing and of its own ops (see the
        module's docstring) to the covered counts, by the path they read."""
        view = TracedState(self.nodes, [], {})
        kept = []
        for record in self.checks:
            node, kind, arg, expected = record
            path = state_mod.path_of(view, node) if node >= 0 else ""
            if arg is not None and kind in state_mod.READS_ATTR:
                path = f"{path}.{arg}"
            if hf_state.is_routing(path, kind, arg, expected):
                self.not_checked[hf_state.COVERED_ROUTING] += 1
            elif path.startswith(_OWN_OPS) or (kind == "is" and f"{expected}.".startswith(_OWN_NAMES)):
                self.not_checked[COVERED_OWN] += 1
            else:
                kept.append(record)
        self.checks = kept

    def _grouped(self) -> list[list[Any]]:
        """One record per (kind, arg, expected), on every node it holds for; a node's
        hook dicts are one `empty` check."""
        hooks: dict[int, list[str]] = collections.defaultdict(list)
        groups: dict[str, list[Any]] = {}
        for node, kind, arg, expected in self.checks:
            if kind == "empty":
                hooks[node].append(arg)
                continue
            self._group(groups, node, kind, arg, expected)
        for node, names in hooks.items():
            self._group(groups, node, "empty", sorted(names), None)
        records = sorted(_fields(list(groups.values())), key=lambda r: (r[0], repr(r[1]), repr(r[2])))
        for record in records:
            record[3].sort()
        return records

    @staticmethod
    def _group(groups: dict[str, list[Any]], node: int, kind: str, arg: Any, expected: Any) -> None:
        key = repr((kind, arg, expected))
        record = groups.setdefault(key, [kind, arg, expected, []])
        if node >= 0:
            record[3].append(node)

    def state(self) -> TracedState:
        """The recorded state. Global settings are read now, after the trace: Dynamo builds
        its guards with __torch_function__ disabled."""
        for name in sorted(self._settings):
            self.check(-1, "global", name, encode(state_mod.GLOBAL_SETTINGS[name]()))
        self._registries()
        self._routing_and_own_ops()
        if self.refused:
            shown = "; ".join(self.refused[:3]) + (
                f" (and {len(self.refused) - 3} more)" if len(self.refused) > 3 else ""
            )
            raise CompileError(
                f"{type(self.model).__qualname__}.forward depends on state aotcache cannot check when loading: {shown}",
                hint="keep what forward reads plain (numbers, strings, flags, classes, functions); an object read "
                "by identity has no check a serving process can make",
            )
        return TracedState(self.nodes, self._grouped(), dict(sorted(self.not_checked.items())))

    # -- Dynamo's guards ------------------------------------------------------------------

    def add_guards(self, entries: Sequence[Any]) -> None:
        for entry in entries:
            try:
                self._add_guard(entry)
            except _Covered as covered:
                self.not_checked[str(covered)] += 1
            except _Refused as refused:
                self.refused.append(f"{entry.name or entry.guard_type}: {refused} ({entry.guard_type})")

    def _add_guard(self, entry: Any) -> None:
        kind = entry.guard_type
        source = compat.guard_source(entry)
        if kind in _COVERED_KINDS:
            if kind in ("TENSOR_MATCH", "NOT_NONE_MATCH") and _kind_of(_root(source)) == "GlobalSource":
                raise _Refused("a tensor outside the model and the call's arguments")
            raise _Covered(_COVERED_KINDS[kind])
        if kind in _GLOBAL_STATE_CHECKS:
            self._settings.update(_GLOBAL_STATE_CHECKS[kind])  # read after the trace (see state())
            return
        if _kind_of(source) == "ConstDictKeySource":  # a dict's key at a position: present, by value
            key = _plain_key(list(dict.keys(self._value_at(source.base)))[source.index])
            self._present_keys.add((self._path(source.base), key))  # decided in state()
        elif kind == "DUPLICATE_INPUT":
            self._add_aliasing(entry, source)
        elif kind in _VALUE_KINDS:
            self._add_value(entry.value, source)
        elif kind in _IDENTITY_KINDS:
            self._add_identity(entry.value, source)
        elif kind == "TYPE_MATCH":
            node, attr = self._target(source)
            self.check(node, "type", attr, qualified(type(entry.value)))
        elif kind in _LENGTH_KINDS:
            self._add_length(entry, source)
        elif kind in _KEYS_KINDS:
            self._add_keys(entry.value, source)
        elif kind in _CONTAINS_KINDS:
            key, present = compat.contains_guard(entry, _CONTAINS_KINDS[kind])
            self.check(self._path(source), "contains", _plain_key(key), present)
        elif kind == "HASATTR":
            holder, name = compat.hasattr_guard(entry)
            self.check(self._path(holder), "hasattr", name, hasattr(self._value_at(holder), name))
        elif kind == "NOT_PRESENT_IN_GENERIC_DICT":
            self.check(self._path(source), "no_own", compat.guard_keyword(entry, "attr"), None)
        else:
            raise _Refused("a guard of this kind has no plain check")

    def _add_value(self, value: Any, source: Any) -> None:
        if isinstance(value, types.CodeType):  # Dynamo's guard on a closure: its code, i.e. its definition
            if _kind_of(source) != "AttrSource" or source.member != "__code__":
                raise _Refused("a code object reached other than as a function's __code__")
            self._add_identity(self._value_at(source.base), source.base)
            return
        try:
            expected = encode(value)
        except NotPlain as exc:
            raise _Refused(f"a constant that is {exc}") from None
        node, attr = self._target(source)
        self.check(node, "equals", attr, expected)

    def _add_identity(self, value: Any, source: Any) -> None:
        name = identity(value)
        if name is None:
            raise _Refused(f"the identity of a {qualified(type(value))} object")
        node, attr = self._target(source)
        self.check(node, "is", attr, name)

    def _add_length(self, entry: Any, source: Any) -> None:
        value = entry.value
        node, attr = self._target(source)
        if entry.guard_type == "EMPTY_NN_MODULE_HOOKS_DICT" and attr is not None:
            self.check(node, "empty", attr, None)
            return
        if isinstance(value, dict):
            self._dict_lengths.add((node, attr))  # a registry's is dropped in state()
        elif "TYPE_MATCH" in (entry.derived_guard_types or ()):
            self.check(node, "type", attr, qualified(type(value)))
        self.check(node, "len", attr, len(value))

    def _add_keys(self, value: Any, source: Any) -> None:
        keys = list(dict.keys(value)) if isinstance(value, dict) else list(value.keys())
        node, attr = self._target(source)
        self.check(node, "keys", attr, encode([_plain_key(k) for k in keys]))

    def _add_aliasing(self, entry: Any, source: Any) -> None:
        """Two paths the trace saw as one object (`self.marker is MARKER`, tied weights):
        they must still be one."""
        other = compat.guard_keyword(entry, "source_b")
        roots = {getattr(_root(source), "local_name", "model"), getattr(_root(other), "local_name", "model")}
        if roots != {"model"}:
            raise _Refused("two of the call's arguments were one object in the trace: pass distinct ones")
        self.check(self._path(source), "same", None, self._path(other))

    # -- sources -> nodes -----------------------------------------------------------------

    def _target(self, source: Any) -> tuple[int, str | None]:
        """(node, attribute) of a leaf read: a last attribute is read by the check itself,
        so that the hundreds of hook dicts and flags of a model add no node each."""
        if _kind_of(source) == "AttrSource" and _is_attr_name(source.member):
            return self._path(source.base), source.member
        return self._path(source), None

    def _path(self, source: Any) -> int:
        name = _kind_of(source)
        if name == "LocalSource":
            if source.local_name == "model":
                return self.node(-1, "model")
            raise _Covered(COVERED_ARGUMENTS)
        if name == "GlobalSource":
            return self._global(source.global_name)
        if name == "NNModuleSource":  # how Dynamo treats a module, not how it is reached
            return self._path(source.base)
        if name in ("AttrSource", "GenericAttrSource"):
            return self.node(self._path(source.base), "attr", source.member)
        if name == "TypeSource":
            return self.node(self._path(source.base), "type")
        if name == "TypeMROSource":
            return self.node(self._path(source.base), "attr", "__mro__")
        if name == "TypeDictSource":
            return self.node(self._path(source.base), "attr", "__dict__")
        if name == "ClosureSource":
            return self.node(self._path(source.base), "attr", "__closure__")
        if name == "DefaultsSource":
            field = "__kwdefaults__" if source.is_kw else "__defaults__"
            return self.node(self.node(self._path(source.base), "attr", field), "item", source.idx_key)
        if name in ("DictGetItemSource", "DictSubclassGetItemSource", "ODictGetItemSource", "GetItemSource"):
            return self._item(source, name)
        raise _Refused(f"reached through a {name}, which has no plain read")

    def _item(self, source: Any, name: str) -> int:
        index = source.index
        if _kind_of(index) == "ConstDictKeySource":  # the key at a position: read by the key itself
            index = list(dict.keys(self._value_at(index.base)))[index.index]
        if getattr(source, "index_is_slice", False) or isinstance(index, slice):
            raise _Refused("an item read by a slice")
        key = _plain_key(index)
        holder = source.base
        if name == "DictGetItemSource" and _kind_of(holder) == "AttrSource" and holder.member in _MODULE_DICTS:
            return self.node(self._path(holder.base), "child", [holder.member, key])  # a submodule: one node
        return self.node(self._path(holder), "dict_item" if name == "DictSubclassGetItemSource" else "item", key)

    def _global(self, name: str) -> int:
        if name.startswith("__builtins_dict__"):
            return self.node(-1, "builtins")
        value = self.frame_globals.get(name)
        if not isinstance(value, types.ModuleType):
            raise _Refused(f"a global of the trace's frame holding a {qualified(type(value))}")
        module = value.__name__
        if module.startswith(_TRACER_MODULES):
            raise _Covered(COVERED_TRACER)
        if module == "aotcache" or module.startswith(tuple(f"{m}." for m in _OWN_MODULES)):
            raise _Covered(COVERED_OWN)
        if value is sys.modules.get(type(self.model).__module__):
            return self.node(-1, "model_module", module)  # found as the model's module, whatever its name
        if sys.modules.get(module) is not value:
            raise _Refused(f"module {module} is not importable by its name")
        return self.node(-1, "module", module)

    def _from_module(self, node: int) -> bool:
        while self.nodes[node][0] >= 0:
            node = self.nodes[node][0]
        return self.nodes[node][1] != "model"

    def _value_at(self, source: Any) -> Any:
        """The value a source holds now (for translating a key position to its key)."""
        node = self._path(source)
        value = state_mod.resolve(TracedState(self.nodes[: node + 1], [], {}), self.model)[node]
        if isinstance(value, state_mod.Missing):
            raise _Refused(f"cannot be read here ({value.why})")
        return value


def _fields(records: list[list[Any]]) -> list[list[Any]]:
    """A node's many settings of its own (a transformers config's fields) as one
    `fields` record: one record costs a serving process about a microsecond."""
    own: dict[int, list[list[Any]]] = collections.defaultdict(list)
    for record in records:
        kind, arg, _, nodes = record
        if kind == "equals" and arg is not None and len(nodes) == 1:
            own[nodes[0]].append(record)
    folded = {id(r) for rs in own.values() if len(rs) >= _FIELDS_AT_LEAST for r in rs}
    kept = [r for r in records if id(r) not in folded]
    for node, rs in own.items():
        if len(rs) >= _FIELDS_AT_LEAST:
            rs.sort(key=lambda r: r[1])
            kept.append(["fields", [r[1] for r in rs], [r[2] for r in rs], [node]])
    return kept


_FIELDS_AT_LEAST = 3
_MODULE_DICTS = ("_modules", "_parameters", "_buffers")

# The kinds of Source this module reads, by class name: a subclass reads as its base
# (UnspecializedParamBufferSource and CellContentsSource are AttrSources; the
# Unspecialized*NNModuleSources are NNModuleSources, which add no step).
_SOURCE_KINDS = (
    "LocalSource",
    "GlobalSource",
    "NNModuleSource",
    "AttrSource",
    "GenericAttrSource",
    "TypeSource",
    "TypeMROSource",
    "TypeDictSource",
    "ClosureSource",
    "DefaultsSource",
    "ConstDictKeySource",
    "DictSubclassGetItemSource",
    "DictGetItemSource",
    "ODictGetItemSource",
    "GetItemSource",
)


def _kind_of(source: Any) -> str:
    for cls in type(source).__mro__:
        if cls.__name__ in _SOURCE_KINDS:
            return cls.__name__
    return type(source).__name__


_OWN_OPS = ("torch.ops.aotcache",)
# aotcache's ops, and its functions (aotcache.hf routes Falcon's attention modules'
# forward to one of its own: the entry computes what that function does).
_OWN_NAMES = ("op aotcache::", "op-namespace aotcache", "function aotcache.", "module aotcache.")


def _root(source: Any) -> Any:
    """The source a chain of reads starts at (a LocalSource, a GlobalSource...)."""
    while getattr(source, "base", None) is not None:
        source = source.base
    return source


def _is_attr_name(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier()


def _plain_key(key: Any) -> Any:
    if type(key) in (str, int, bool) or key is None:
        return key
    raise _Refused(f"a key that is a {qualified(type(key))}")


def frame_globals() -> dict[str, Any]:
    """The globals the trace's first frame runs with: nothing of the user's, so that
    every global Dynamo reads is reached through a module."""
    return {"__builtins__": builtins, "torch": torch}
