"""What a manifest must look like: every field the loader, the checks and the reports
read, with its type and bounds, and the references between fields (every path it
points at is a listed file inside the entry, every unit names stored artifacts)."""

from __future__ import annotations

import json
import posixpath
from typing import Any

import torch

from aotcache.configuration import from_dict
from aotcache.errors import ConfigError
from aotcache.formats import INDUCTOR, KNOWN_FORMATS, NATIVE, Artifact
from aotcache.key.factors import EntryKey, factors_from_json
from aotcache.key.sources import ROOT_KINDS, SourceFile, sources_digest
from aotcache.store import traced_state as state_mod
from aotcache.store.traced_state import TracedState

from .structure import (
    MAX_SIZE,
    Check,
    SchemaError,
    boolean,
    either,
    integer,
    items,
    json_value,
    mapping,
    number,
    one_of,
    optional,
    record,
    string,
)

# Top-level names an entry may hold besides the manifest and its signature.
ENTRY_FOLDERS = ("graph.py", "pieces", "artifacts", "kernels")
HEX64 = string(r"[0-9a-f]{64}")
ENTRY_ID = string(r"[0-9a-f]{16}-[0-9a-f]{16}")
TEXT = string()


def safe_path(path: Any, where: str = "path") -> None:
    """A relative, normalised path inside the entry: no '..', no absolute, no oddities."""
    if not isinstance(path, str) or not path or len(path) > 4096 or "\\" in path or "\0" in path:
        raise SchemaError(where, f"bad path {str(path)[:60]!r}")
    if posixpath.isabs(path) or posixpath.normpath(path) != path or path.split("/")[0] in ("..", "."):
        raise SchemaError(where, f"path {path!r} leaves the entry")
    if path.split("/")[0] not in ENTRY_FOLDERS:
        raise SchemaError(where, f"path {path!r} is outside the entry's folders")


def dtype(value: Any, where: str) -> None:
    if not isinstance(value, str) or not isinstance(getattr(torch, value, None), torch.dtype):
        raise SchemaError(where, f"{str(value)[:40]!r} is not a torch dtype")


def _config(value: Any, where: str) -> None:
    json_value(value, where)
    try:
        from_dict(dict(value) if isinstance(value, dict) else value)
    except ConfigError as exc:
        raise SchemaError(where, exc.message) from None
    except TypeError as exc:
        raise SchemaError(where, str(exc)) from None


def _treespec(value: Any, where: str) -> None:
    """torch's serialized pytree spec: checked as JSON of the right shape. (It is read
    back at load, where the output types it names, e.g. transformers' ModelOutput
    classes, are importable; a report must not need them.)"""
    if value is None:
        return
    TEXT(value, where)
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        raise SchemaError(where, "an unreadable output structure") from None
    json_value(parsed, where)
    if not (
        isinstance(parsed, list) and len(parsed) == 2 and isinstance(parsed[0], int) and isinstance(parsed[1], dict)
    ):
        raise SchemaError(where, "an unreadable output structure")


FACTOR = record({"name": TEXT, "value": json_value})
SIZE = integer(0, MAX_SIZE)
SCALAR = either(boolean, number, TEXT)

RECORDED = record(
    {
        "device_type": one_of("cpu", "cuda"),
        "threads": integer(1, 1 << 20),
        "kernels": boolean,
        "march": TEXT,
        "vec_isa": optional(TEXT),
        "vec_isa_flags": TEXT,
        "cpu_flags": items(TEXT),
        "runtime_versions": mapping(items(TEXT), TEXT),
        "target": optional(TEXT),
    },
    # part_of: "Model.path" of an entry precompiled as a part of a model (backend/parts.py)
    # cuda_device_name: the GPU it was built on, for people (the capability is what is keyed)
    {"compiler": TEXT, "torch_key": TEXT, "inductor_config": TEXT, "part_of": TEXT, "cuda_device_name": TEXT},
)
ARG = record(
    {
        "name": TEXT,
        "kind": one_of("tensor", "none", "value"),
        "dtype": optional(dtype),
        "shape": items(optional(SIZE)),
        "value": optional(SCALAR),
    }
)
INPUT_SPEC = record({"params": items(TEXT), "args": items(ARG), "size_arg": TEXT, "size_dim": integer(0, 64)})
GRAPH_INPUT = record(
    {
        "name": TEXT,
        "kind": one_of("parameter", "buffer", "attribute", "arg", "size"),
        "source": TEXT,
        "shape": items(either(SIZE, TEXT)),
        "dtype": optional(dtype),
    }
)
MODEL = record(
    {"class": TEXT, "forward_file": optional(TEXT), "parameters": items(json_value), "buffers": items(json_value)}
)
PIECE = record(
    {
        "kind": one_of("compiled", "eager", "splitting_op"),
        "digest": HEX64,
        "code": safe_path,
        "single_output": boolean,
        "op": optional(TEXT),
    }
)
UNIT = record(
    {"range": items(integer(1, MAX_SIZE), length=2), "artifacts": mapping(HEX64, HEX64)},
    {"refused": TEXT},  # a size the trace does not hold at: served by nothing, a clear error instead
)
GUARDS = {"guards": optional(TEXT)}  # Inductor's shape guards, read when an artifact is reused
NATIVE_ARTIFACT = record({"format": one_of(NATIVE), "wrapper": safe_path, "kernels": mapping(safe_path, HEX64)}, GUARDS)
INDUCTOR_ARTIFACT = record(
    {"format": one_of(INDUCTOR), "binary": safe_path, "device_types": items(one_of("cpu", "cuda", "xpu", "mps"))},
    # Its Triton kernels, and those torch's static launcher cannot take (Triton's own
    # launcher then builds a C stub at load: see formats.load_needs).
    # partitions: how many CUDA-graph partitions Inductor cut (use_inductor_graph_partition);
    # the last is partitions - 1. A load checks that Inductor hands over as many.
    {**GUARDS, "triton_kernels": integer(0, 1 << 20), "dynamic_launch": items(TEXT), "partitions": integer(0, 4096)},
)


def ARTIFACT(value: Any, where: str) -> None:
    """An artifact record, by the format it names."""
    known = {NATIVE: NATIVE_ARTIFACT, INDUCTOR: INDUCTOR_ARTIFACT}
    kind = value.get("format") if isinstance(value, dict) else None
    if kind not in known:
        raise SchemaError(f"{where}.format", f"{str(kind)[:40]!r} is not one of {', '.join(KNOWN_FORMATS)}")
    known[kind](value, where)


FILE = record({"sha256": HEX64, "bytes": integer(0, 1 << 40)})

_KEY = either(TEXT, integer(-(1 << 53), 1 << 53), boolean)  # an item's key: a plain scalar
_NODE_ARGS: dict[str, Check] = {
    "model": optional(TEXT),
    "builtins": optional(TEXT),
    "type": optional(TEXT),
    "module": TEXT,
    "model_module": TEXT,
    "attr": TEXT,
    "item": optional(_KEY),
    "dict_item": optional(_KEY),
    "child": items(_KEY, length=2),
}
_CHECK_ARGS: dict[str, Check] = {
    **{kind: optional(TEXT) for kind in state_mod.READS_ATTR},
    "empty": items(TEXT),
    "fields": items(TEXT),
    "contains": optional(_KEY),
    "hasattr": TEXT,
    "no_own": TEXT,
    "same": optional(TEXT),
    "global": TEXT,
}


def traced_state(value: Any, where: str) -> None:
    """The traced state's table (store/traced_state.py): every node read from an earlier one, a
    root with no parent, every check on nodes that exist, with arguments of its kind."""
    record(
        {
            "nodes": items(items(json_value, length=3)),
            "checks": items(items(json_value, length=4)),
            "not_checked": mapping(integer(0, 1 << 30), TEXT),
        }
    )(value, where)
    for index, (parent, op, arg) in enumerate(value["nodes"]):
        at = f"{where}.nodes[{index}]"
        if op not in _NODE_ARGS:
            raise SchemaError(at, f"{str(op)[:40]!r} is not a read aotcache makes")
        is_root = op in state_mod.ROOTS
        integer(-1, -1)(parent, at) if is_root else integer(0, index - 1)(parent, at)
        _NODE_ARGS[op](arg, at)
    count = len(value["nodes"])
    for index, (kind, arg, expected, nodes) in enumerate(value["checks"]):
        at = f"{where}.checks[{index}]"
        if kind not in _CHECK_ARGS:
            raise SchemaError(at, f"{str(kind)[:40]!r} is not a check aotcache makes")
        _CHECK_ARGS[kind](arg, at)
        items(integer(0, count - 1))(nodes, at)
        if kind == "same":
            integer(0, count - 1)(expected, at)
        if kind == "fields":
            items(json_value, length=len(arg))(expected, at)


MANIFEST: Check = record(
    {
        "format_version": integer(1, 1 << 16),
        "checksum": HEX64,
        "entry_id": ENTRY_ID,
        "tool_version": TEXT,
        "created": optional(TEXT),  # SOURCE_DATE_EPOCH's; null without it (see entry.py)
        "lookup": items(FACTOR),
        "build": items(FACTOR),
        "recorded": RECORDED,
        "config": _config,
        "model": MODEL,
        "input_spec": INPUT_SPEC,
        "graph_inputs": items(GRAPH_INPUT),
        "output_spec": _treespec,
        "output_dims": items(items(integer(0, 64))),
        "sources": items(record({"path": TEXT, "sha256": HEX64}, {"root": one_of(*ROOT_KINDS)})),
        "stitch": safe_path,
        "pieces": mapping(PIECE, TEXT),
        "units": items(UNIT),
        "artifacts": mapping(ARTIFACT, HEX64),
        "files": mapping(FILE, safe_path),
        "stats": mapping(json_value, TEXT),
    },
    # unit key -> the artifact built for it: what a remote reuse trusts (backend/reuse.py);
    # traced_state: what the trace read of the model and the process (format 3 on)
    {"unit_keys": mapping(HEX64, HEX64), "traced_state": traced_state},
)


def check_structure(body: dict[str, Any]) -> None:
    """Raise SchemaError unless the manifest body is whole and consistent."""
    MANIFEST(body, "")
    if body["format_version"] >= 3:
        _check_id_covers_the_manifest(body)
    files = body["files"]
    paths = [body["stitch"], *(p["code"] for p in body["pieces"].values())]
    for artifact in body["artifacts"].values():  # each record checked above: from_json cannot fail
        paths += Artifact.from_json(artifact).paths()
    unlisted = [p for p in paths if p not in files]
    if unlisted:
        raise SchemaError("files", f"it refers to {unlisted[0]!r}, which it does not list")
    _check_bound_names(body)
    compiled = {p["digest"] for p in body["pieces"].values() if p["kind"] == "compiled"}
    for index, unit in enumerate(body["units"]):
        start, end = unit["range"]
        if start > end:
            raise SchemaError(f"units[{index}].range", f"[{start}, {end}] is empty")
        if "refused" in unit:
            if start != end or unit["artifacts"]:
                raise SchemaError(f"units[{index}]", "a refused unit is one size with no artifacts")
            continue
        if set(unit["artifacts"]) != compiled:
            raise SchemaError(f"units[{index}].artifacts", "does not name an artifact for every compiled piece")
        missing = [name for name in unit["artifacts"].values() if name not in body["artifacts"]]
        if missing:
            raise SchemaError(f"units[{index}].artifacts", f"names artifact {missing[0][:12]} the entry lacks")
    for key, name in body.get("unit_keys", {}).items():
        if name not in body["artifacts"]:
            raise SchemaError(f"unit_keys.{key[:12]}", f"names artifact {name[:12]} the entry lacks")


def _check_id_covers_the_manifest(body: dict[str, Any]) -> None:
    """The entry id is the hash of the factors the manifest lists, and the factors that
    summarize a part of the manifest (its traced sources, its traced state, the model it
    is a part of) summarize what it holds: a manifest edited in one place (sources
    emptied, a part's record dropped) without the others is not an entry at all."""
    if "traced_state" not in body:
        raise SchemaError("traced_state", "missing: an entry of this format records what its trace read")
    lookup, build = factors_from_json(body["lookup"]), factors_from_json(body["build"])
    if EntryKey(lookup, build).entry_id != body["entry_id"]:
        raise SchemaError("entry_id", "is not the hash of the factors the manifest lists")
    named = {factor.name: factor.value for factor in build}
    summaries = {
        "sources": sources_digest([SourceFile.from_json(s) for s in body["sources"]]),
        "traced_state": TracedState.from_json(body["traced_state"]).digest,
        "part_of": body["recorded"].get("part_of"),
    }
    for name, actual in summaries.items():
        if named.get(name) != actual:
            raise SchemaError(f"build.{name}", "does not summarize what the manifest holds")


def _check_bound_names(body: dict[str, Any]) -> None:
    """Graph inputs bound to parameters and buffers name ones the model identity lists."""
    named = {
        "parameter": {item[0] for item in body["model"]["parameters"] if isinstance(item, list) and item},
        "buffer": {item[0] for item in body["model"]["buffers"] if isinstance(item, list) and item},
    }
    for index, item in enumerate(body["graph_inputs"]):
        if item["kind"] in named and item["source"] not in named[item["kind"]]:
            raise SchemaError(
                f"graph_inputs[{index}].source", f"{item['source'][:60]!r} is no {item['kind']} of the model"
            )
