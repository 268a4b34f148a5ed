"""Turn an entry's verified bytes into callables: the stitching graph, the opaque and
eager pieces, and the compiled artifacts with their kernels.

Everything executed here comes from bytes whose checksums `store.checks.open_entry` checked;
no file is read again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

import aotcache.ops  # noqa: F401  (registers aotcache::attention, which stored graphs may call)
from aotcache.formats import Artifact, loader_for, native
from aotcache.store.manifest import Manifest
from aotcache.store.records import Piece

Runnable = Callable[..., Any]


def fx_forward(blobs: dict[str, bytes], path: str, label: str) -> Runnable:
    """The `forward(self, ...)` defined by an FX module source file of the entry."""
    return native.exec_source(blobs[path], f"<aotcache {label}:{path}>")["forward"]


def artifact_call(blobs: dict[str, bytes], artifact: Artifact, label: str) -> Runnable:
    """An artifact's `call(args)`, by the format its manifest record names."""
    return loader_for(artifact.format)(blobs, artifact, label)


def piece_runner(call: Runnable, single_output: bool) -> Runnable:
    """Adapt Inductor's `call(list) -> tuple` to the piece's own calling convention (its
    graph partitions, if any, stay reachable as `.partitions`)."""
    if single_output:

        def run_single(*args: Any) -> Any:
            return call(list(args))[0]

        runner = run_single
    else:

        def run(*args: Any) -> Any:
            return call(list(args))

        runner = run
    runner.partitions = getattr(call, "partitions", [])  # type: ignore[attr-defined]
    return runner


def partition_slots(variants: list[SimpleNamespace]) -> list[Any]:
    """Every graph partition slot of the loaded artifacts, each once, in load order."""
    slots: dict[int, Any] = {}
    for variant in variants:
        for runner in vars(variant).values():
            for slot in getattr(runner, "partitions", []):
                slots.setdefault(id(slot), slot)
    return list(slots.values())


def eager_runner(forward: Runnable) -> Runnable:
    def run(*args: Any) -> Any:
        return forward(None, *args)

    return run


def piece_order(names: Iterable[str]) -> list[str]:
    """Piece names in the order forward runs them: split_module numbers its submodules in
    that order (`submod_2` before `submod_10`; the manifest stores them sorted as text)."""
    return sorted(names, key=lambda name: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)])


def build_variants(manifest: Manifest, blobs: dict[str, bytes]) -> list[SimpleNamespace]:
    """One namespace per compile unit, holding the runnable of every piece for that unit,
    in the order forward runs them. The stitching graph's `forward(self, ...)` is called
    with one of them as `self`."""
    shared: dict[str, Runnable] = {}
    per_unit_pieces: dict[str, Piece] = {}
    for name in piece_order(manifest.pieces):
        piece = manifest.pieces[name]
        if piece.kind == "compiled":
            per_unit_pieces[name] = piece
        else:
            shared[name] = eager_runner(fx_forward(blobs, piece.code, name))
    calls: dict[str, Runnable] = {}
    variants = []
    for unit in manifest.units:
        if not unit.served:  # never dispatched to: the dispatcher refuses its size
            variants.append(SimpleNamespace())
            continue
        members = dict(shared)
        for name, piece in per_unit_pieces.items():
            artifact_name = unit.artifacts[piece.digest]
            if artifact_name not in calls:
                calls[artifact_name] = artifact_call(blobs, manifest.artifacts[artifact_name], artifact_name)
            members[name] = piece_runner(calls[artifact_name], piece.single_output)
        variants.append(SimpleNamespace(**{name: members[name] for name in piece_order(members)}))
    return variants
