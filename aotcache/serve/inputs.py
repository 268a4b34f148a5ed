"""Call arguments: which dimensions are dynamic, what an entry was built for, and how
to make inputs of another size from one example.

`dynamic_arg_dims` follows vLLM's `support_torch_compile`: argument name -> an int, a
list of ints (negative allowed) or {dim: shape_id}; when omitted, every argument
annotated `torch.Tensor` or `Optional[torch.Tensor]` gets dim 0.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from aotcache.errors import ConfigError, DispatchError, TargetError
from aotcache.key.identity import dtype_name, model_device
from aotcache.target import call_user

DynamicDims = dict[str, int | list[int] | dict[int, str | None]]
NormalizedDims = dict[str, dict[int, str | None]]

_TENSOR_ANNOTATIONS = (torch.Tensor, torch.Tensor | None)


def infer_dynamic_dims(forward: Callable[..., Any]) -> dict[str, int]:
    """Dim 0 of every argument annotated torch.Tensor or Optional[torch.Tensor]."""
    try:
        hints = typing.get_type_hints(forward)
    except Exception as exc:  # an annotation that does not resolve (a typo, a missing import)
        raise ConfigError(
            "dynamic_arg_dims",
            None,
            f"explicit dims: the annotations of {forward.__qualname__} cannot be resolved to infer them "
            f"({type(exc).__name__}: {exc}); fix the annotation or pass dynamic_arg_dims",
        ) from None
    return {name: 0 for name, hint in hints.items() if name != "return" and hint in _TENSOR_ANNOTATIONS}


def normalize_dynamic_dims(dims: DynamicDims | None, signature: inspect.Signature, owner: str) -> NormalizedDims:
    """Validate against forward's signature and bring every value to {dim: shape_id}."""
    if dims is None:
        raise ConfigError("dynamic_arg_dims", None, f"explicit dims, or Tensor annotations on {owner}.forward")
    if not dims:
        raise ConfigError(
            "dynamic_arg_dims",
            dims,
            f"at least one dynamic dimension; none found in the forward method of {owner}: "
            "annotate a tensor argument as torch.Tensor or pass dynamic_arg_dims explicitly",
        )
    normalized: NormalizedDims = {}
    for name, value in dims.items():
        if name not in signature.parameters or name == "self":
            raise ConfigError("dynamic_arg_dims", name, f"an argument of {owner}.forward: argument {name} not found")
        if isinstance(value, bool):
            raise ConfigError("dynamic_arg_dims", value, "an int, a list of ints or {dim: shape_id}")
        if isinstance(value, int):
            normalized[name] = {value: None}
        elif isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            normalized[name] = {int(v): None for v in value}
        elif isinstance(value, dict) and all(isinstance(k, int) for k in value):
            normalized[name] = {int(k): (None if v is None else str(v)) for k, v in value.items()}
        else:
            raise ConfigError("dynamic_arg_dims", {name: value}, "an int, a list of ints or {dim: shape_id}")
    return normalized


@dataclass(frozen=True)
class ArgSpec:
    """What one forward argument was when the entry was built."""

    name: str
    kind: str  # "tensor" | "none" | "value"
    dtype: str | None = None
    shape: tuple[int | None, ...] = ()  # None marks a dynamic dimension
    value: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "value": self.value,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArgSpec:
        return cls(data["name"], data["kind"], data.get("dtype"), tuple(data.get("shape") or ()), data.get("value"))


@dataclass(frozen=True)
class InputSpec:
    params: tuple[str, ...]  # forward's parameters after self, in order
    args: tuple[ArgSpec, ...]
    size_arg: str
    size_dim: int

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any], dims: NormalizedDims) -> InputSpec:
        specs = []
        size_source: tuple[str, int] | None = None
        for name, value in arguments.items():
            if name in dims and value is not None and not isinstance(value, torch.Tensor):
                raise ConfigError(
                    "dynamic_arg_dims",
                    {name: sorted(dims[name])},
                    f"dims of tensor arguments: argument {name!r} is a {type(value).__name__}, not a tensor",
                )
            if value is None:
                specs.append(ArgSpec(name, "none"))
            elif isinstance(value, torch.Tensor):
                dynamic = {d % value.ndim for d in dims.get(name, {})}
                shape = tuple(None if i in dynamic else int(s) for i, s in enumerate(value.shape))
                specs.append(ArgSpec(name, "tensor", dtype_name(value.dtype), shape))
                if dynamic and size_source is None:
                    size_source = (name, min(dynamic))
            elif isinstance(value, (bool, int, float, str)):
                specs.append(ArgSpec(name, "value", value=value))
            else:
                raise ConfigError(
                    "example_inputs", name, f"tensors, None, or plain numbers/strings (got {type(value).__name__})"
                )
        if size_source is None:
            raise ConfigError("dynamic_arg_dims", dict(dims), "at least one tensor argument with a dynamic dimension")
        return cls(tuple(arguments), tuple(specs), *size_source)

    def to_json(self) -> dict[str, Any]:
        return {
            "params": list(self.params),
            "args": [a.to_json() for a in self.args],
            "size_arg": self.size_arg,
            "size_dim": self.size_dim,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputSpec:
        return cls(
            tuple(data["params"]),
            tuple(ArgSpec.from_json(a) for a in data["args"]),
            data["size_arg"],
            int(data["size_dim"]),
        )

    @functools.cached_property
    def _tensor_checks(self) -> list[tuple[str, torch.dtype, int, list[tuple[int, int]], list[int], ArgSpec]]:
        checks = []
        for spec in self.args:
            if spec.kind == "tensor":
                static = [(i, d) for i, d in enumerate(spec.shape) if d is not None]
                dynamic = [i for i, d in enumerate(spec.shape) if d is None]
                checks.append((spec.name, getattr(torch, spec.dtype or ""), len(spec.shape), static, dynamic, spec))
        return checks

    @functools.cached_property
    def _other_specs(self) -> list[ArgSpec]:
        return [spec for spec in self.args if spec.kind != "tensor"]

    def check(self, arguments: dict[str, Any], size: int) -> None:
        """Refuse arguments the entry was not built for: a compiled graph would give wrong
        answers or crash where Dynamo's guards would have re-traced. This runs on every
        call, so the common case is a few identity and int comparisons."""
        for name, dtype, ndim, static, dynamic, spec in self._tensor_checks:
            value = arguments.get(name)
            if not isinstance(value, torch.Tensor):
                _check_tensor(spec, value, size)  # raises with the full story
                continue
            shape = value.shape
            if value.dtype is not dtype or len(shape) != ndim:
                _check_tensor(spec, value, size)
            for dim, expected in static:
                if shape[dim] != expected:
                    _check_tensor(spec, value, size)
            for dim in dynamic:
                if shape[dim] != size:
                    _check_tensor(spec, value, size)
        for spec in self._other_specs:
            value = arguments.get(spec.name)
            if spec.kind == "none":
                if value is not None:
                    raise DispatchError(f"argument {spec.name!r} was None when the entry was built; it must stay None")
            elif spec.kind == "value":
                if value != spec.value:
                    raise DispatchError(
                        f"argument {spec.name!r} was {spec.value!r} when the entry was built, got {value!r}"
                    )


def _check_tensor(spec: ArgSpec, value: Any, size: int) -> None:
    if not isinstance(value, torch.Tensor):
        raise DispatchError(f"argument {spec.name!r} must be a tensor, got {type(value).__name__}")
    dtype = dtype_name(value.dtype)
    if dtype != spec.dtype or value.ndim != len(spec.shape):
        raise DispatchError(
            f"argument {spec.name!r} must be {spec.dtype} with {len(spec.shape)} dims, "
            f"got {dtype} with shape {list(value.shape)}"
        )
    for dim, (expected, actual) in enumerate(zip(spec.shape, value.shape, strict=True)):
        wanted = size if expected is None else expected
        if actual != wanted:
            raise DispatchError(f"argument {spec.name!r} has size {actual} at dim {dim}, expected {wanted}")


def resize(arguments: dict[str, Any], spec: InputSpec, size: int) -> dict[str, Any]:
    """Make arguments of another dynamic size from an example: shorter ones are cut,
    longer ones repeat the example's values (so token ids stay valid ids)."""
    resized = dict(arguments)
    for arg in spec.args:
        value = arguments.get(arg.name)
        if arg.kind != "tensor" or not isinstance(value, torch.Tensor):
            continue
        for dim, expected in enumerate(arg.shape):
            if expected is not None:
                continue
            length = value.shape[dim]
            if size <= length:
                value = value.narrow(dim, 0, size)
            else:
                index = torch.arange(size, device=value.device) % length
                value = value.index_select(dim, index)
        resized[arg.name] = value.contiguous()
    return resized


def bind_call(forward: Callable[..., Any], model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Forward's arguments after self, by name, with defaults applied: the one binder of
    a call to its parameters (capture, the decorator and example inputs use it)."""
    signature = inspect.signature(forward)
    bound = signature.bind(model, *args, **kwargs)
    bound.apply_defaults()
    arguments = dict(list(bound.arguments.items())[1:])
    for name, parameter in signature.parameters.items():  # **kwargs: its items by name
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in arguments:
            arguments.update(arguments.pop(name))
    return arguments


def bind_arguments(forward: Callable[..., Any], model: Any, example: Any) -> dict[str, Any]:
    """Forward's arguments (after self) from example inputs given as a tuple, a dict of
    keyword arguments or a single tensor."""
    if isinstance(example, dict):
        args, kwargs = (), example
    elif isinstance(example, (tuple, list)):
        args, kwargs = tuple(example), {}
    else:
        args, kwargs = (example,), {}
    try:
        return bind_call(forward, model, args, kwargs)
    except TypeError as exc:
        raise TargetError(f"the example inputs do not match {forward.__qualname__}: {exc}") from None


def example_arguments(model: Any, example_inputs: Any, size: int | None, spec: InputSpec | None) -> dict[str, Any]:
    """Forward's arguments of a given dynamic size, from a builder `size -> inputs` or
    from one fixed example (resized along the dynamic dims; `spec` says which), on the
    model's device. size None means the example's own size (or the default trace size
    for a builder)."""
    forward = type(model).forward
    if callable(example_inputs):
        wanted = DEFAULT_TRACE_SIZE if size is None else size
        made = call_user(example_inputs, f"example_inputs({wanted})", wanted)
        return on_device(bind_arguments(forward, model, made), model_device(model))
    arguments = on_device(bind_arguments(forward, model, example_inputs), model_device(model))
    if size is None:
        return arguments
    if spec is None:
        raise ValueError("resizing a fixed example needs the input spec")
    return resize(arguments, spec, size)


def on_device(arguments: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The arguments with every tensor on `device` (example inputs are often made on the
    CPU for a model that lives on a GPU)."""
    return {
        name: value.to(device) if isinstance(value, torch.Tensor) and value.device != device else value
        for name, value in arguments.items()
    }


DEFAULT_TRACE_SIZE = 8
