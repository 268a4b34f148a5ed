"""Where a config comes from: a dict of fields (vLLM's names read too), pyproject's
[tool.aotcache], a TOML file, a JSON string (`--compilation-config`, vLLM's `-O`) and
keyword overrides, merged field by field."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from aotcache.errors import ConfigError

from .compilation import CompilationConfig, _from_fields, check_field_names

# Fields of vLLM's CompilationConfig that aotcache does not implement yet, with the value
# that means "not used" there: a config copied from vLLM with them at that value loads;
# any other value is a ConfigError, never silently dropped (docs/configuration.md).
NOT_IMPLEMENTED: dict[str, tuple[Any, ...]] = {
    "pass_config": ({}, None),  # vLLM's own fusion passes: aotcache has none (inductor_passes takes yours)
    "cudagraph_specialize_lora": (True, False, None),  # no LoRA in aotcache: either is the same
    # how vLLM saves its own compile cache; an entry is stored as artifact_format says
    "compile_cache_save_format": ("binary", "unpacked", None),
}
UNUSED_BECAUSE = {
    "compile_cache_save_format": "vLLM's values (how vLLM saves its own cache; aotcache stores entries as "
    "artifact_format says)",
}
# Fields aotcache fills in (as vLLM does), never given: a config copied from vLLM loads
# with them at their initial value; any other value is a ConfigError.
FILLED_IN: dict[str, tuple[Any, ...]] = {"local_cache_dir": (None,), "compilation_time": (0, 0.0, None)}


def _vllm_only_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The config without vLLM's deprecated `level` (its name for `mode`) and without
    vLLM fields at their unused value; ConfigError for one set to anything else."""
    data = dict(data)
    _read_endpoints(data)
    level = data.pop("level", None)  # None: vLLM's "unset"
    if level is not None:
        if "mode" in data and data["mode"] is not None and data["mode"] != level:
            raise ConfigError("level", level, f"the same as mode ({data['mode']!r}): level is vLLM's old name for mode")
        data["mode"] = level
    for name, unused in {**NOT_IMPLEMENTED, **FILLED_IN}.items():
        if name in data:
            value = data.pop(name)
            if not any(value == u and type(value) is type(u) for u in unused):
                allowed = " or ".join(repr(u) for u in unused)
                why = (
                    "aotcache fills it in"
                    if name in FILLED_IN
                    else UNUSED_BECAUSE.get(name, f"aotcache does not implement {name} yet")
                )
                raise ConfigError(name, value, f"{allowed}: {why}")
    return data


def _read_endpoints(data: dict[str, Any]) -> None:
    """Current vLLM's `compile_ranges_endpoints`, read as compile_ranges_split_points (its
    old name). vLLM prints it with max_num_batched_tokens appended: that end is dropped."""
    if "compile_ranges_endpoints" not in data:
        return
    endpoints = data.pop("compile_ranges_endpoints")
    if endpoints is None:
        return
    top = data.get("max_num_batched_tokens") or CompilationConfig.max_num_batched_tokens
    if isinstance(endpoints, list):
        endpoints = [p for p in endpoints if p != top]
    points = data.get("compile_ranges_split_points")
    if points is not None and points != endpoints:
        raise ConfigError(
            "compile_ranges_endpoints",
            endpoints,
            f"the same as compile_ranges_split_points ({points!r}): it is vLLM's new name for them",
        )
    data["compile_ranges_split_points"] = endpoints


def from_dict(data: dict[str, Any], *, source: str | None = None) -> CompilationConfig:
    """A config from a dict of fields, vLLM's names included (`level`, and its fields
    at their unused value)."""
    if not isinstance(data, dict):
        raise ConfigError(source or "config", data, "a table/object of config fields")
    return _from_fields(_vllm_only_fields(data))


OPTIMIZATION_LEVELS = (0, 1, 2, 3)


def parse_json(text: str) -> dict[str, Any]:
    """A `--compilation-config` value: a JSON object, or a bare number, read as vLLM's
    `-O` reads it now: the optimization level (0: no compilation; 1-3: VLLM_COMPILE).
    The CUDA-graph mode vLLM's levels also set is aotcache's default (NONE): set
    cudagraph_mode for graphs. (vLLM's -O once meant the mode: `{"mode": 1}` says that.)"""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("compilation_config", text, f"valid JSON ({exc.msg} at char {exc.pos})") from None
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in OPTIMIZATION_LEVELS:
            raise ConfigError("-O", value, "an optimization level 0-3, or a JSON object such as '{\"mode\": 1}'")
        return {"mode": "NONE" if value == 0 else "VLLM_COMPILE"}
    if not isinstance(value, dict):
        raise ConfigError("compilation_config", text, "a JSON object such as '{\"compile_sizes\": [1, 2]}'")
    return value


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A config file: top-level fields, or a [tool.aotcache] table as in pyproject.toml."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("config", str(path), "no such file", hint="check the path given to --config") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("config", str(path), f"valid TOML ({exc})") from None
    table = data.get("tool", {}).get("aotcache")
    if path.name == "pyproject.toml":
        return dict(table or {})
    return dict(table) if table is not None else data


def find_pyproject(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest pyproject.toml at or above `start` (default: the working directory)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


JSON_SOURCE = "the JSON config (--compilation-config or AOTCACHE_COMPILATION_CONFIG)"


def load_config(
    *,
    base: CompilationConfig | dict[str, Any] | None = None,
    pyproject: str | os.PathLike[str] | bool | None = None,
    config_file: str | os.PathLike[str] | None = None,
    json_text: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> CompilationConfig:
    """Merge config sources; later sources win field by field:
    base (e.g. the model's own defaults) < pyproject [tool.aotcache] < config file
    < JSON string < keyword overrides. `pyproject=True` finds the nearest one."""
    merged: dict[str, Any] = {}
    if isinstance(base, CompilationConfig):
        merged.update(base.to_dict())
    elif base:
        merged.update(_named(base, "the model's own config"))
    if pyproject is True:
        pyproject = find_pyproject()
    if pyproject:
        merged.update(_named(read_toml(pyproject), f"{pyproject} [tool.aotcache]"))
    if config_file:
        merged.update(_named(read_toml(config_file), str(config_file)))
    if json_text:
        merged.update(
            _named(parse_json(json_text), "the JSON config (--compilation-config or AOTCACHE_COMPILATION_CONFIG)")
        )
    if overrides:
        merged.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(merged)


def _named(data: dict[str, Any], source: str) -> dict[str, Any]:
    """`data`, once every field it names is one a config has (vLLM's names too), so that
    a misspelt field is reported with the source it came from."""
    if isinstance(data, dict):
        check_field_names(data, source, also_known=("level", "compile_ranges_endpoints", *NOT_IMPLEMENTED, *FILLED_IN))
    return data
