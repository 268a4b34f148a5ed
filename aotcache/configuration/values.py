"""The checks every field's value goes through when a config is built: each returns
the value normalised (sorted, de-duplicated split points) or raises ConfigError naming
the field, the value and what is allowed. Nothing is silently dropped."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from aotcache.errors import ConfigError

_OP_NAME = re.compile(r"^[A-Za-z_]\w*::[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$")
_CUSTOM_OP_RULE = re.compile(r"^(all|none|[+-][A-Za-z_]\w*)$")

# Inductor's custom-pass slots a pass may be put in: each runs on the graph as a
# torch.fx.Graph (joint: before the forward/backward split; post_grad: after it).
INDUCTOR_PASS_SLOTS = (
    "joint_custom_pre_pass",
    "joint_custom_post_pass",
    "post_grad_custom_pre_pass",
    "post_grad_custom_post_pass",
)

# Fields whose value changes the compiled artifacts. Everything else (where the cache
# lives, debug output, CUDA-graph capture at run time) is left out of the hash, so that
# moving the cache or changing capture settings never causes a miss.


def int_at_least(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, f"an integer >= {minimum}")
    if value < minimum:
        raise ConfigError(name, value, f"an integer >= {minimum}")
    return value


def positive_int(name: str, value: Any) -> int:
    return int_at_least(name, value, minimum=1)


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, value, "true or false")
    return value


def optional_str(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if not isinstance(value, str):
        raise ConfigError(name, value, "a path string")
    return value


def int_list(name: str, value: Any) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(name, value, "a list of integers")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ConfigError(name, value, f"a list of integers ({item!r} is not one)")
    return list(value)


def size_list(name: str, value: Any, limit: int) -> list[int]:
    sizes = int_list(name, value)
    for size in sizes:
        if not 1 <= size <= limit:
            raise ConfigError(name, size, f"each size must satisfy 1 <= size <= max_num_batched_tokens ({limit})")
    duplicates = sorted({s for s in sizes if sizes.count(s) > 1})
    if duplicates:
        raise ConfigError(name, sizes, f"sizes without repeats ({duplicates} appear more than once)")
    return sorted(sizes)


def op_names(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError("splitting_ops", value, 'a list of qualified op names such as "myns::attention"')
    names = []
    for item in value:
        if not isinstance(item, str) or not _OP_NAME.match(item.strip()):
            raise ConfigError("splitting_ops", item, 'qualified op names such as "myns::attention"')
        names.append(item.strip())
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError("splitting_ops", names, f"op names without repeats ({duplicates} appear more than once)")
    return names


def json_dict(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(name, value, "a table/object with string keys")
    try:
        json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        raise ConfigError(name, value, "JSON-serialisable values (numbers, strings, bools, lists, tables)") from None
    return dict(value)


def inductor_passes(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError("inductor_passes", value, 'a table of Inductor pass slot -> "pkg.module:attr"')
    for slot, target in value.items():
        if slot not in INDUCTOR_PASS_SLOTS:
            allowed = "an Inductor pass slot: one of " + ", ".join(INDUCTOR_PASS_SLOTS)
            raise ConfigError(f"inductor_passes.{slot}", target, allowed)
        if not isinstance(target, str) or not _pass_target(target):
            allowed = 'the pass as "pkg.module:attr", "path/to/file.py:attr" or vLLM\'s "pkg.module.attr"'
            raise ConfigError(f"inductor_passes.{slot}", target, allowed)
        if os.path.isabs(target.rpartition(":")[0]):  # in the lookup key: it would name this host's layout
            allowed = 'a pass named by module ("pkg.module:attr") or by a path relative to the working directory'
            raise ConfigError(f"inductor_passes.{slot}", target, allowed)
    return dict(sorted(value.items()))


def pass_target(target: str) -> str:
    """An inductor_passes value as a TARGET: vLLM's qualified name "pkg.module.attr"
    becomes "pkg.module:attr"; a TARGET is kept."""
    return _pass_target(target) or target


def _pass_target(target: str) -> str | None:
    module, sep, attr = target.rpartition(":")
    if module and sep and attr:
        return target
    module, sep, attr = target.rpartition(".")
    return f"{module}:{attr}" if module and sep and attr.isidentifier() else None


def custom_op_rules(value: Any) -> list[str]:
    """vLLM's grammar: "all" or "none" (one of them, once), "+name" or "-name" (not both);
    a rule repeated means what it says once (vLLM accepts it too)."""
    if not isinstance(value, list):
        raise ConfigError("custom_ops", value, 'a list of "all", "none", "+name" or "-name"')
    for rule in value:
        if not isinstance(rule, str) or not _CUSTOM_OP_RULE.match(rule):
            raise ConfigError(
                "custom_ops", rule, '"all", "none", "+name" or "-name" (name: a CustomOp\'s registered name)'
            )
    if value.count("all") + value.count("none") > 1:
        raise ConfigError("custom_ops", value, '"all" or "none" at most once, and not both')
    both = sorted({r[1:] for r in value if r[0] == "+"} & {r[1:] for r in value if r[0] == "-"})
    if both:
        raise ConfigError("custom_ops", value, f"{both[0]} enabled (+) or disabled (-), not both")
    return sorted(set(value))  # neither order nor repeats mean anything: one key for all of them


DYNAMIC_SHAPE_TYPES = ("backed", "unbacked", "backed_size_oblivious")
_DYNAMIC_SHAPES_DEFAULTS = {"type": "backed", "evaluate_guards": False, "assume_32_bit_indexing": False}


def dynamic_shapes(value: Any) -> dict[str, Any]:
    """vLLM's DynamicShapesConfig, every field filled in (None: the defaults)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError("dynamic_shapes_config", value, "a table of type, evaluate_guards, assume_32_bit_indexing")
    unknown = sorted(set(value) - set(_DYNAMIC_SHAPES_DEFAULTS))
    if unknown:
        fields = ", ".join(_DYNAMIC_SHAPES_DEFAULTS)
        raise ConfigError(f"dynamic_shapes_config.{unknown[0]}", value[unknown[0]], f"unknown field; valid: {fields}")
    result = {**_DYNAMIC_SHAPES_DEFAULTS, **value}
    if str(result["type"]).lower() not in DYNAMIC_SHAPE_TYPES:
        raise ConfigError("dynamic_shapes_config.type", result["type"], "one of " + ", ".join(DYNAMIC_SHAPE_TYPES))
    result["type"] = str(result["type"]).lower()
    for name in ("evaluate_guards", "assume_32_bit_indexing"):
        result[name] = boolean(f"dynamic_shapes_config.{name}", result[name])
    if result["type"] == "unbacked" and result["evaluate_guards"]:
        raise ConfigError("dynamic_shapes_config.evaluate_guards", True, "False with type unbacked (it adds no guards)")
    return result


def custom_op_enabled(rules: tuple[str, ...] | list[str], name: str) -> bool:
    """vLLM's precedence: "-name" disables, "+name" enables, else the default ("all"
    enables every op, "none" none)."""
    if f"-{name}" in rules:
        return False
    return f"+{name}" in rules or "all" in rules
