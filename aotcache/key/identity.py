"""What a model is, for the cache key, and how to reach its tensors by name.

Weights are never stored in an entry: the manifest names each graph input by its path
in the model (`layers.0.attn.qkv.weight`) and the loader binds the live model's tensor.
One entry therefore serves every checkpoint of the same architecture.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import torch

from .factors import Factor, digest
from .sources import portable_path


def class_name(model: torch.nn.Module) -> str:
    return type(model).__qualname__


def forward_file(model: torch.nn.Module) -> str | None:
    try:
        path = inspect.getsourcefile(type(model).forward)
    except (TypeError, OSError):
        return None
    return portable_path(path) if path else None


def tensor_attributes(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor, str]]:
    """(path, tensor, kind) for parameters, buffers and plain tensor attributes."""
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) not in seen:
            seen.add(id(param))
            yield name, param, "parameter"
    for name, buf in model.named_buffers(remove_duplicate=False):
        if id(buf) not in seen:
            seen.add(id(buf))
            yield name, buf, "buffer"
    for prefix, module in model.named_modules(remove_duplicate=False):
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor) and id(value) not in seen:
                seen.add(id(value))
                yield (f"{prefix}.{attr}" if prefix else attr), value, "attribute"


def resolve(model: torch.nn.Module, path: str) -> Any:
    """Follow a dotted path of attributes (and ModuleList indices) from the model."""
    target: Any = model
    for part in path.split("."):
        target = getattr(target, part)
    return target


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32: how manifests and errors name dtypes."""
    return str(dtype).removeprefix("torch.")


def describe(tensor: torch.Tensor) -> list[Any]:
    return [list(tensor.shape), dtype_name(tensor.dtype)]


def model_signature(model: torch.nn.Module) -> dict[str, Any]:
    """Class, file of forward, and every parameter and buffer with shape and dtype."""
    params = [[name, *describe(t)] for name, t in model.named_parameters()]
    buffers = [[name, *describe(t)] for name, t in model.named_buffers()]
    return {
        "class": class_name(model),
        "forward_file": forward_file(model),
        "parameters": params,
        "buffers": buffers,
    }


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's tensors live (its first parameter, else buffer, else the CPU)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def model_device_type(model: torch.nn.Module) -> str:
    return model_device(model).type


def model_factors(model: torch.nn.Module) -> list[Factor]:
    signature = model_signature(model)
    return [
        Factor("model.class", signature["class"]),
        Factor("model.forward_file", signature["forward_file"]),
        Factor("model.parameters", digest(signature["parameters"])[:16]),
        Factor("model.buffers", digest(signature["buffers"])[:16]),
    ]
