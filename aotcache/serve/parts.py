"""A model served as parts (vLLM's multimodal models): which submodules are its parts,
and the example each part is compiled and checked with.

The model class is not decorated; its parts are its outermost @support_compile
submodules that compile under their config. Each part's example comes from one eager
run of the whole model on its example inputs: inside recording_calls() every decorated
model runs eagerly and the arguments of its first call are recorded. The part's own
dynamic size (an encoder's patch count, a language model's token count) need not be
the model's: the build resizes the recorded example along the part's dynamic dims.
backend/parts.py precompiles the parts; `verify --run` of a part's entry uses this too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, NamedTuple

import torch

from aotcache.configuration import CompilationConfig
from aotcache.errors import TargetError
from aotcache.modes import CompilationMode

from .inputs import bind_call, example_arguments

IGNORE_KEY = "_aotcache_ignore_compile"  # set by ignore_compile
# id(module) -> its first call's arguments, while recording_calls() is active
_RECORDED_CALLS: ContextVar[dict[int, dict[str, Any]] | None] = ContextVar("aotcache_recorded_calls", default=None)


class Part(NamedTuple):
    path: str  # in the model, e.g. "vision"
    module: torch.nn.Module
    config: CompilationConfig  # the part class's own fields under the config given


def is_decorated(cls: type) -> bool:
    return hasattr(cls, "_aotcache_dynamic_arg_dims")


def compiles_under(cls: type, config: CompilationConfig) -> bool:
    """Whether a decorated class compiles under `config` (its mode, ignore_compile and
    enable_if), rather than running eagerly."""
    enable_if = getattr(cls, "_aotcache_enable_if", None)
    return not (
        config.mode in (CompilationMode.NONE, CompilationMode.STOCK_TORCH_COMPILE)
        or getattr(cls, IGNORE_KEY, False)
        or (enable_if is not None and not enable_if(config))
    )


def compiled_parts(model: torch.nn.Module, config_of: Callable[[dict[str, Any]], CompilationConfig]) -> list[Part]:
    """The parts of an undecorated model: its outermost decorated submodules that
    compile under their config, `config_of(the class's own config fields)` (as a served
    part's is: its class's fields under everything given). [] for a decorated model,
    whose own trace holds its decorated submodules."""
    if is_decorated(type(model)):
        return []
    parts: list[Part] = []
    for path, module in model.named_modules():
        if not path or not is_decorated(type(module)) or any(path.startswith(f"{p.path}.") for p in parts):
            continue
        config = config_of(dict(getattr(type(module), "_aotcache_config", None) or {}))
        if compiles_under(type(module), config):
            parts.append(Part(path, module, config))
    return parts


@contextlib.contextmanager
def recording_calls() -> Iterator[dict[int, dict[str, Any]]]:
    calls: dict[int, dict[str, Any]] = {}
    token = _RECORDED_CALLS.set(calls)
    try:
        yield calls
    finally:
        _RECORDED_CALLS.reset(token)


def record_call(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Inside recording_calls(): record the call's arguments (the first call of each
    module wins; tensors cloned, so that later in-place changes do not reach them) and
    say so; the caller then runs the module eagerly."""
    calls = _RECORDED_CALLS.get()
    if calls is None:
        return False
    if id(module) not in calls:
        arguments = bind_call(type(module).forward, module, args, kwargs)
        calls[id(module)] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in arguments.items()}
    return True


def part_examples(model: torch.nn.Module, example_inputs: Any, paths: list[str]) -> dict[str, dict[str, Any]]:
    """Each part's example (its forward's arguments by name), from one eager run of the
    model (in eval mode) on its example inputs at their own (or the default) size."""
    arguments = example_arguments(model.eval(), example_inputs, None, None)
    with recording_calls() as calls, torch.no_grad():
        model(**arguments)
    examples = {}
    for path in paths:
        part = find_part(model, path)
        if id(part) not in calls:
            raise TargetError(
                f"{type(model).__qualname__}.forward did not call its part {path!r} on its example inputs",
                hint="make the example inputs reach every compiled part",
            )
        examples[path] = calls[id(part)]
    return examples


def find_part(model: torch.nn.Module, path: str) -> torch.nn.Module:
    try:
        part = model.get_submodule(path)
    except AttributeError:
        part = None
    if part is None or not is_decorated(type(part)):
        raise TargetError(f"{type(model).__qualname__} has no decorated part {path!r}", hint="precompile it again")
    return part


def part_path(model: torch.nn.Module, part_of: str) -> str:
    """The path in `model` of a part recorded as "Model.path" (an entry's part_of)."""
    prefix = f"{type(model).__qualname__}."
    if not part_of.startswith(prefix):
        raise TargetError(f"the entry is a part of {part_of!r}, not of {type(model).__qualname__}")
    return part_of[len(prefix) :]
