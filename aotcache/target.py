"""TARGET: what `aotcache precompile` and `verify --run` compile or check.

A TARGET is `package.module:attr`, `path/to/file.py:attr`, or `hf:PATH` for a Hugging
Face checkpoint directory (see aotcache.hf). The attribute is one of:

* a `ModelSpec`: the model (or a factory), example inputs, and optionally the config
  and dynamic dims it should be precompiled with;
* an `nn.Module` subclass or a factory function taking no arguments, returning a
  ModelSpec or an nn.Module; a module must then define `example_inputs(num_tokens)`;
* an `nn.Module` instance, with the same `example_inputs` method.

A file inside the working directory is imported as the package path it has there
(`examples/tiny_llama.py` -> `examples.tiny_llama`), so its traced-source names match
those of a serving process that imports it as a package.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

import torch

from aotcache.errors import TargetError
from aotcache.model_spec import ModelSpec, call_user

__all__ = ["ModelSpec", "as_spec", "call_user", "import_target", "portable_target", "target_module_file"]


def import_target(target: str) -> Any:
    """The object named by TARGET (`hf:PATH` names a transformers checkpoint directory)."""
    if target.startswith("hf:"):
        from aotcache.hf import spec

        return spec(target)
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise TargetError(f"TARGET {target!r} is not of the form package.module:attr or path/to/file.py:attr")
    module = _import_module(module_part, target)
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise TargetError(f"{module_part} has no attribute {attr!r}", hint="check the name after the colon")
        value = getattr(value, part)
    return value


def target_module_file(target: str) -> str | None:
    """The source file of the module an imported TARGET was taken from."""
    name = target.rpartition(":")[0]
    module = sys.modules.get(_module_name_for_file(Path(name), target) if _is_file(name) else name)
    return getattr(module, "__file__", None)


def portable_target(target: str) -> str:
    """TARGET as an entry records it: an absolute path (of a file, or of an `hf:`
    checkpoint) made relative to the working directory, so that two runners that check
    the project out in other places record the same bytes; anything else as given."""
    if target.startswith("hf:"):
        rest = target[3:]
        path, at, rest_class = rest.partition("@") if "@" in rest else (rest, "", "")
        return "hf:" + _relative(path) + at + rest_class
    module_part, sep, attr = target.rpartition(":")
    if sep and _is_file(module_part):
        return f"{_relative(module_part)}:{attr}"
    return target


def _relative(path: str) -> str:
    suffix = "+whole" if path.endswith("+whole") else ""
    path = path.removesuffix(suffix)
    if os.path.isabs(path):
        path = os.path.relpath(path)
    return Path(path).as_posix() + suffix


def _is_file(name: str) -> bool:
    return name.endswith(".py") or "/" in name or os.sep in name


def _import_module(name: str, target: str) -> Any:
    if _is_file(name):
        name = _module_name_for_file(Path(name), target)
    elif "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise TargetError(
                f"cannot import {name!r} from TARGET {target!r}: {exc}",
                hint="check the module path, or run from the project root",
            ) from exc
        raise TargetError(f"importing {name!r} failed: {exc}", hint="install what the module needs") from exc
    except Exception as exc:
        raise TargetError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from exc


def _module_name_for_file(path: Path, target: str) -> str:
    if not path.is_file():
        raise TargetError(f"TARGET file {str(path)!r} does not exist")
    full = path.resolve()
    cwd = Path.cwd().resolve()
    if full.is_relative_to(cwd):
        root, parts = cwd, full.relative_to(cwd).with_suffix("").parts
    else:
        root, parts = full.parent, (full.stem,)
    if not all(p.isidentifier() for p in parts):
        root, parts = full.parent, (full.stem,)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return ".".join(parts)


def as_spec(value: Any, *, origin: str = "model") -> ModelSpec:
    """Bring a ModelSpec, module, module class or factory to a ModelSpec."""
    if isinstance(value, ModelSpec):
        return value
    if isinstance(value, torch.nn.Module):
        return _module_spec(value, origin)
    if callable(value):
        try:
            inspect.signature(value).bind()
        except TypeError as exc:
            raise TargetError(
                f"{origin} must be callable without arguments: {exc}",
                hint="export a ModelSpec or a no-argument factory",
            ) from exc
        except ValueError:  # no signature to inspect (a builtin): just call it
            pass
        made = call_user(value, origin)
        if isinstance(made, ModelSpec):
            return made
        if isinstance(made, torch.nn.Module):
            return _module_spec(made, origin)
        raise TargetError(f"{origin} returned a {type(made).__name__}, not a ModelSpec or nn.Module")
    raise TargetError(f"{origin} is a {type(value).__name__}; expected a ModelSpec, an nn.Module or a factory")


def _module_spec(model: torch.nn.Module, origin: str) -> ModelSpec:
    builder = getattr(model, "example_inputs", None)
    if not callable(builder):
        raise TargetError(
            f"{origin} is a model without example inputs",
            hint="define example_inputs(num_tokens) on the model, or export an aotcache.ModelSpec",
        )
    dims = getattr(type(model), "_aotcache_dynamic_arg_dims", None)
    config = getattr(type(model), "_aotcache_config", None)
    return ModelSpec(model=model, example_inputs=builder, config=config, dynamic_arg_dims=dims)
