"""Split: cut the captured graph at the splitting ops, which stay opaque.

Pieces keep the symbolic size (split_module with keep_original_order keeps SymInt
placeholders in every piece). Each piece gets a digest of its canonical code and input
metadata, so that the identical pieces of a transformer's N layers compile once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx
from torch.fx.passes.split_module import split_module

from aotcache.errors import CompileError

from . import _torch_compat as compat


@dataclass
class Piece:
    name: str  # the submodule name in the stitching graph, e.g. "submod_2"
    graph: fx.GraphModule
    splitting_op: str | None  # the op's name for an opaque piece, else None
    digest: str
    single_output: bool


@dataclass
class SplitGraph:
    stitch: fx.GraphModule
    pieces: list[Piece]

    def compiled_pieces(self) -> list[Piece]:
        return [p for p in self.pieces if p.splitting_op is None]

    def unique_pieces(self) -> list[Piece]:
        """The first piece of each digest, in graph order."""
        seen: dict[str, Piece] = {}
        for piece in self.compiled_pieces():
            seen.setdefault(piece.digest, piece)
        return list(seen.values())


def _matches(target: Any, wanted: set[str]) -> str | None:
    """The splitting op a node's target matches, if any: "ns::op" matches every overload
    of the op, "ns::op.overload" that overload, with ".default" for the default one
    (torch names it "ns::op"; vLLM's should_split takes both)."""
    names = compat.op_names(target)
    for candidate in names:
        if candidate in wanted:
            return candidate
    base = names[0].split(".")[0] if names else None
    return base if base in wanted else None


def unused_splitting_ops(graph: fx.GraphModule, splitting_ops: list[str]) -> list[str]:
    """The splitting ops the traced graph never calls (a typo, or an op forward does not use)."""
    wanted = set(splitting_ops)
    used = {_matches(node.target, wanted) for node in graph.graph.nodes if node.op == "call_function"}
    return [name for name in splitting_ops if name not in used]


def split_graph(graph: fx.GraphModule, splitting_ops: list[str]) -> SplitGraph:
    wanted = set(splitting_ops)
    for node in graph.graph.nodes:
        if node.op == "get_attr":
            raise CompileError(
                f"the traced graph reads a tensor constant ({node.target}); constants are not supported yet",
                hint="register the tensor as a buffer (register_buffer) so it becomes a graph input",
            )
    partition_of: dict[fx.Node, int] = {}
    op_of_partition: dict[int, str] = {}
    index = 0
    for node in graph.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        name = compat.op_qualname(node.target) if node.op == "call_function" else None
        if node.op == "call_function" and _matches(node.target, wanted) is not None:
            index += 1
            partition_of[node] = index
            op_of_partition[index] = name
            index += 1
        else:
            partition_of[node] = index
    stitch = split_module(graph, None, lambda node: partition_of[node], keep_original_order=True)
    pieces = []
    for node in stitch.graph.nodes:
        if node.op != "call_module":
            continue
        sub = getattr(stitch, node.target)
        number = int(str(node.target).rsplit("_", 1)[1])
        pieces.append(
            Piece(
                name=str(node.target),
                graph=sub,
                splitting_op=op_of_partition.get(number),
                digest=piece_digest(sub),
                single_output=_single_output(sub),
            )
        )
    return SplitGraph(stitch, pieces)


def _single_output(graph: fx.GraphModule) -> bool:
    output = next(n for n in reversed(graph.graph.nodes) if n.op == "output")
    return not isinstance(output.args[0], (tuple, list))


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    qualified = compat.op_qualname(target)
    if qualified is not None:
        return qualified
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    return f"{module}.{name}"


def _placeholder_meta(node: fx.Node) -> str:
    value = node.meta.get("example_value")
    if isinstance(value, torch.Tensor):
        shape = [compat.dim_repr(d) for d in value.shape]
        stride = [compat.dim_repr(d) for d in value.stride()]
        return f"tensor{shape}{stride}:{value.dtype}:{value.device.type}:{value.requires_grad}"
    if isinstance(value, torch.SymInt):
        return f"symint:{value.node.expr}"
    return repr(value)


def piece_digest(graph: fx.GraphModule) -> str:
    """sha256 of the graph with node names replaced by positions, plus input metadata:
    two layers with different parameter names but the same code get the same digest."""
    position: dict[fx.Node, str] = {}
    lines = []
    for i, node in enumerate(graph.graph.nodes):
        position[node] = f"%{i}"
        args = fx.node.map_arg((node.args, node.kwargs), lambda n: position[n])
        if node.op == "placeholder":  # its target is its (layer-specific) name
            lines.append(f"placeholder|{_placeholder_meta(node)}")
        else:
            lines.append(f"{node.op}|{_target_name(node.target)}|{args!r}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def module_source(graph: fx.GraphModule) -> str:
    """Standalone Python source defining `forward(self, ...)` for an FX graph. Exec'd by
    the loader for stitching graphs, opaque splitting-op pieces and eager pieces."""
    return compat.fx_module_source(graph)
