"""An Inductor post-grad pass: addmm(bias, x, w) -> mm(x, w) + bias, so the bias add is
a kernel of Inductor's own (fused with what follows) and the matmul a plain mm: seen in
the compiled wrapper as extern_kernels.mm where Inductor alone calls addmm."""

from __future__ import annotations

import torch

aten = torch.ops.aten


def split_addmm(graph: torch.fx.Graph) -> None:
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.addmm.default or node.kwargs:
            continue
        bias, x, w = node.args
        with graph.inserting_before(node):
            mm = graph.call_function(aten.mm.default, (x, w))
            add = graph.call_function(aten.add.Tensor, (mm, bias))
        mm.meta["val"] = aten.mm.default(x.meta["val"], w.meta["val"])
        add.meta = dict(node.meta)
        node.replace_all_uses_with(add)
        graph.erase_node(node)
