"""From a forward call to the graph's inputs: bind the call's arguments by name, find
the dynamic size, check the arguments against what the graph was built for, and fill
in the live model's tensors (weights are never stored; they are bound by name)."""

from __future__ import annotations

from typing import Any

import torch

from aotcache.errors import DispatchError
from aotcache.key.identity import dtype_name, resolve

from .inputs import InputSpec

_data_ptr = torch.Tensor.data_ptr


class GraphBinder:
    def __init__(self, model: torch.nn.Module, graph_inputs: list[dict[str, Any]], spec: InputSpec) -> None:
        self.model = model
        self.graph_inputs = graph_inputs
        self.spec = spec
        self._params = spec.params
        self._template: list[Any] = []
        self._arg_slots: list[tuple[int, str]] = []
        self._size_slots: list[int] = []
        self.rebind()

    def rebind(self) -> None:
        """Bind the model's current tensors (needed after replacing a parameter object;
        in-place updates such as load_state_dict need no rebind)."""
        template: list[Any] = []
        self._arg_slots, self._size_slots = [], []
        for index, item in enumerate(self.graph_inputs):
            kind, source = item["kind"], item["source"]
            if kind == "size":
                self._size_slots.append(index)
                template.append(None)
            elif kind == "arg":
                self._arg_slots.append((index, source))
                template.append(None)
            else:
                tensor = resolve(self.model, source)
                _check_bound_tensor(source, tensor, item)
                template.append(tensor)
        self._template = template
        self._bound = [t for t in template if isinstance(t, torch.Tensor)]

    def bound_values(self) -> list[Any]:
        """One item per graph input: the bound model tensor, or None (an argument, the size)."""
        return list(self._template)

    def bound_tensors(self) -> list[torch.Tensor]:
        """The model tensors bound as graph inputs (weights, buffers)."""
        return list(self._bound)

    def bound_addresses(self) -> tuple[int, ...]:
        """Where the bound model tensors live now (CUDA graphs read them at these addresses)."""
        return tuple(map(_data_ptr, self._bound))

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not kwargs and len(args) == len(self._params):  # the common case, on every call
            return dict(zip(self._params, args, strict=True))
        if len(args) > len(self._params):
            raise DispatchError(f"forward takes {len(self._params)} arguments, got {len(args)}")
        arguments = dict(zip(self._params, args, strict=False))
        for name, value in kwargs.items():
            if name not in self._params:
                raise DispatchError(f"forward has no argument {name!r}")
            if name in arguments:
                raise DispatchError(f"argument {name!r} given twice")
            arguments[name] = value
        for spec in self.spec.args:
            if spec.name not in arguments:
                arguments[spec.name] = spec.value
        return arguments

    def size(self, arguments: dict[str, Any]) -> int:
        """The dynamic size of a call, after checking every argument against the spec."""
        source = arguments.get(self.spec.size_arg)
        if not isinstance(source, torch.Tensor):
            raise DispatchError(f"argument {self.spec.size_arg!r} must be a tensor")
        size = int(source.shape[self.spec.size_dim])
        self.spec.check(arguments, size)
        return size

    def values(self, arguments: dict[str, Any], size: int) -> list[Any]:
        """The graph's inputs for a call: bound tensors, arguments, the size."""
        values = list(self._template)
        for index, name in self._arg_slots:
            values[index] = arguments[name]
        for index in self._size_slots:
            values[index] = size
        return values


def _check_bound_tensor(source: str, tensor: Any, item: dict[str, Any]) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise DispatchError(f"model attribute {source!r} is not a tensor any more")
    dtype = dtype_name(tensor.dtype)
    if list(tensor.shape) != item["shape"] or dtype != item["dtype"]:
        raise DispatchError(
            f"model tensor {source!r} is {dtype}{list(tensor.shape)}, "
            f"the entry was built for {item['dtype']}{item['shape']}"
        )


def load_treespec(text: str | None) -> Any:
    if text is None:
        return None
    return torch.utils._pytree.treespec_loads(text)


def unflatten(outputs: Any, treespec: Any) -> Any:
    """Rebuild forward's return value (tensor, tuple, dict...) from the graph outputs."""
    if treespec is None:
        return outputs
    if treespec.is_leaf():  # forward returned one tensor: the common case, on every call
        return outputs[0]
    return torch.utils._pytree.tree_unflatten(list(outputs), treespec)
