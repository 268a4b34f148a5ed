"""The Inductor settings a build's compiles run with beyond inductor_compile_config:
the config's inductor_passes, each imported and set in its slot,
dynamic_shapes_config.assume_32_bit_indexing, and use_inductor_graph_partition's
graph_partition with the splitting ops as the ops Inductor partitions at.

A pass is a torch CustomGraphPass (its own uuid()) or a plain function taking the
torch.fx.Graph (its uuid: the sha256 of its source file). Its source file becomes a
traced source of the entry, so an edit to the pass makes the entry stale, naming the
file; its uuid goes into every unit's key (through the Inductor settings digest), so a
unit compiled with one version of a pass is never reused for another. Loading never
imports a pass: its effect is in the compiled code.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from aotcache.configuration import CompilationConfig, pass_target
from aotcache.errors import ConfigError, TargetError
from aotcache.key.sources import file_sha256
from aotcache.target import import_target, target_module_file

from . import _torch_compat as compat


@dataclass
class InductorPasses:
    settings: dict[str, Any] = field(default_factory=dict)  # Inductor setting -> value (a slot -> its pass)
    uuids: dict[str, str] = field(default_factory=dict)  # slot -> the pass's uuid
    files: set[str] = field(default_factory=set)  # the passes' source files


def resolve(config: CompilationConfig) -> InductorPasses:
    passes = InductorPasses()
    if config.dynamic_shapes_config["assume_32_bit_indexing"]:
        if not compat.inductor_setting("assume_32bit_indexing")[0]:
            name = "dynamic_shapes_config.assume_32_bit_indexing"
            raise ConfigError(name, True, "False: this torch's Inductor has no assume_32bit_indexing")
        passes.settings["assume_32bit_indexing"] = True
    if config.use_inductor_graph_partition:
        for setting in ("graph_partition", "custom_should_partition_ops"):
            if not compat.inductor_setting(setting)[0]:
                raise ConfigError(
                    "use_inductor_graph_partition", True, f"False: this torch's Inductor has no {setting}"
                )
        passes.settings["graph_partition"] = True
        passes.settings["custom_should_partition_ops"] = list(config.splitting_ops)
    for slot, target in config.inductor_passes.items():
        name = f"inductor_passes.{slot}"
        if not compat.inductor_setting(slot)[0]:
            raise ConfigError(name, target, "a slot this torch's Inductor has (it has no such setting)")
        as_target = pass_target(target)
        try:
            value = import_target(as_target)
        except TargetError as exc:
            raise ConfigError(name, target, f"a pass that imports: {exc}") from None
        is_pass_object = compat.is_graph_pass(value)
        if not (is_pass_object or inspect.isfunction(value)):
            raise ConfigError(name, target, "a torch CustomGraphPass, or a function taking the torch.fx.Graph")
        source = _source_file(value, name, target)
        pass_object = value if is_pass_object else compat.graph_pass(value, file_sha256(source))
        passes.files.add(target_module_file(as_target) or "")  # where an instance is made and configured
        try:
            passes.uuids[slot] = compat.graph_pass_uuid(pass_object)
        except ValueError as exc:
            raise ConfigError(name, target, f"a pass with a uuid: {exc}") from None
        passes.settings[slot] = pass_object
        passes.files.add(source)
    return passes


def _source_file(value: Any, name: str, target: str) -> str:
    owner = value if inspect.isfunction(value) else type(value)
    try:
        path = inspect.getsourcefile(owner)
    except TypeError:
        path = None
    if not path:
        raise ConfigError(name, target, "a pass defined in a Python source file")
    return path
