"""What the parts of a model served as parts are called with (see backend/parts.py).

A part's inputs come from running the whole model eagerly on its example inputs: inside
recording_calls() every @support_compile model runs eagerly and the arguments of its
first call are recorded. The serving side uses it too: `verify --run` of a part's entry
compares the part with eager on the inputs the model gives it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import torch

from aotcache.errors import TargetError

from .inputs import bind_call, example_arguments

# id(module) -> its first call's arguments, while recording_calls() is active
_RECORDED_CALLS: ContextVar[dict[int, dict[str, Any]] | None] = ContextVar("aotcache_recorded_calls", default=None)


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
    module wins) and say so; the caller then runs the module eagerly."""
    calls = _RECORDED_CALLS.get()
    if calls is None:
        return False
    calls.setdefault(id(module), bind_call(type(module).forward, module, args, kwargs))
    return True


def part_inputs(
    model: torch.nn.Module, example_inputs: Any, path: str, part: torch.nn.Module
) -> Callable[[int], dict[str, Any]]:
    """size -> the arguments `part` (the submodule at `path`) is called with when the
    model runs on its example inputs of that size."""
    if not callable(example_inputs):
        raise TargetError(
            f"{type(model).__qualname__} is served as parts ({path}, ...), whose inputs come from running it: "
            "its example inputs must be a function of the size",
            hint="give example_inputs(num_tokens)",
        )

    def at(size: int) -> dict[str, Any]:
        arguments = example_arguments(model, example_inputs, size, None)
        with recording_calls() as calls, torch.no_grad():
            model(**arguments)
        if id(part) not in calls:
            raise TargetError(
                f"{type(model).__qualname__}.forward did not call its part {path!r} on example_inputs({size})",
                hint="make the example inputs reach every compiled part",
            )
        return calls[id(part)]

    return at
