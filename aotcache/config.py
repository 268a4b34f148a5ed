"""CompilationConfig: what to compile, for which sizes, and how (vLLM's semantics).

A config is validated when it is built: every invalid value raises ConfigError naming
the field, the value and what is allowed. Nothing is silently dropped: unknown fields
and duplicate sizes are errors; the only normalisation is sorting, and de-duplicating
split points (which are boundaries, so a repeat means nothing).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aotcache.envs as envs
from aotcache.errors import ConfigError
from aotcache.modes import CompilationMode, CUDAGraphMode, parse_enum

CAPTURE_SIZES_ALIAS = "cudagraph_capture_sizes"
DEFAULT_MAX_CAPTURE_SIZE = 512
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
GRAPH_FIELDS = (
    "mode",
    "backend",
    "splitting_ops",
    "compile_sizes",
    "compile_ranges_split_points",
    "max_num_batched_tokens",
    "inductor_compile_config",
    "inductor_passes",
    "custom_ops",
    "dynamic_shapes_config",
    "use_inductor_graph_partition",
    "artifact_format",
)
# Graph fields added after entries existed: in the key only away from this default.
KEYED_WHEN_SET: dict[str, Any] = {"use_inductor_graph_partition": False}
# How compiled pieces are stored (see aotcache.formats): "native" is compiler-free and
# CPU-only; "inductor" is torch's own CompiledArtifact (any device; loading imports
# Inductor and, on CPU, needs a C++ compiler); "auto" picks native where it can.
ARTIFACT_FORMATS = ("auto", "native", "inductor")


@dataclass(frozen=True, order=True)
class Range:
    """An inclusive range of sizes, [start, end]."""

    start: int
    end: int

    def __contains__(self, size: object) -> bool:
        return isinstance(size, int) and self.start <= size <= self.end

    def is_single_size(self) -> bool:
        return self.start == self.end

    def __str__(self) -> str:
        return f"[{self.start}, {self.end}]"


@dataclass
class CompilationConfig:
    mode: CompilationMode = CompilationMode.VLLM_COMPILE
    compile_sizes: list[int] = field(default_factory=list)
    compile_ranges_split_points: list[int] = field(default_factory=list)
    max_num_batched_tokens: int = 8192
    splitting_ops: list[str] = field(default_factory=list)
    backend: str = "inductor"
    inductor_compile_config: dict[str, Any] = field(default_factory=dict)
    # Inductor pass slot -> the pass, named as a TARGET is ("pkg.module:attr")
    inductor_passes: dict[str, str] = field(default_factory=dict)
    # vLLM's rules for CustomOp layers: "all", "none", "+name", "-name"
    custom_ops: list[str] = field(default_factory=list)
    # vLLM's DynamicShapesConfig as a table: type, evaluate_guards, assume_32_bit_indexing
    dynamic_shapes_config: dict[str, Any] = field(default_factory=dict)
    artifact_format: str = "auto"
    # vLLM's: a submodule decorated with enable_if=should_compile_mm_encoder (a vision
    # encoder) compiles as an entry of its own; otherwise it runs eagerly
    compile_mm_encoder: bool = False
    # vLLM's: the graph is not cut before Inductor; Inductor compiles it whole, with the
    # splitting ops as its partition points (graph_partition, custom_should_partition_ops)
    use_inductor_graph_partition: bool = False
    cudagraph_mode: CUDAGraphMode = CUDAGraphMode.NONE
    cudagraph_capture_sizes: list[int] | None = None
    max_cudagraph_capture_size: int | None = None
    cudagraph_num_of_warmups: int = 0
    cudagraph_copy_inputs: bool = False
    uniform_decode_query_len: int = 1
    cache_dir: str | None = None
    debug_dump_path: str | None = None
    # Filled in by aotcache, as vLLM does, never given (init=False: in no key, no manifest,
    # no to_dict): the directory of the entry this config last built or loaded, and the
    # seconds its builds spent tracing and compiling (a cache hit adds nothing).
    local_cache_dir: str | None = field(default=None, init=False, compare=False)
    compilation_time: float = field(default=0.0, init=False, compare=False)
    # The values given for fields that get derived defaults, so that replace() derives
    # them again instead of carrying stale ones (e.g. capture sizes past a new maximum).
    _given: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._given = {name: getattr(self, name) for name in _DERIVED_FIELDS}
        self.mode = parse_enum(CompilationMode, "mode", self.mode)
        self.cudagraph_mode = parse_enum(CUDAGraphMode, "cudagraph_mode", self.cudagraph_mode)
        self.max_num_batched_tokens = _positive_int("max_num_batched_tokens", self.max_num_batched_tokens)
        self.uniform_decode_query_len = _positive_int("uniform_decode_query_len", self.uniform_decode_query_len)
        self.cudagraph_num_of_warmups = _int("cudagraph_num_of_warmups", self.cudagraph_num_of_warmups, minimum=0)
        self.cudagraph_copy_inputs = _bool("cudagraph_copy_inputs", self.cudagraph_copy_inputs)
        self.compile_mm_encoder = _bool("compile_mm_encoder", self.compile_mm_encoder)
        self.use_inductor_graph_partition = _bool("use_inductor_graph_partition", self.use_inductor_graph_partition)
        if self.backend not in ("inductor", "eager"):
            raise ConfigError("backend", self.backend, 'one of "inductor", "eager"')
        if self.artifact_format not in ARTIFACT_FORMATS:
            raise ConfigError("artifact_format", self.artifact_format, "one of " + ", ".join(ARTIFACT_FORMATS))
        self.splitting_ops = _op_names(self.splitting_ops)
        self.inductor_compile_config = _json_dict("inductor_compile_config", self.inductor_compile_config)
        self.inductor_passes = _inductor_passes(self.inductor_passes)
        self.custom_ops = _custom_op_rules(self.custom_ops)
        self.dynamic_shapes_config = _dynamic_shapes(self.dynamic_shapes_config)
        self.cache_dir = _optional_str("cache_dir", self.cache_dir)
        self.debug_dump_path = _optional_str("debug_dump_path", self.debug_dump_path)
        self.compile_ranges_split_points = self._split_points()
        self._init_cudagraph_sizes()
        self.compile_sizes = self._compile_sizes()
        self._check_modes()

    # -- validation ---------------------------------------------------------------------

    def _split_points(self) -> list[int]:
        points = _int_list("compile_ranges_split_points", self.compile_ranges_split_points)
        limit = self.max_num_batched_tokens
        for point in points:
            if not 1 <= point < limit:
                raise ConfigError(
                    "compile_ranges_split_points",
                    point,
                    f"each split point must satisfy 1 <= point < max_num_batched_tokens ({limit})",
                )
        return sorted(set(points))

    def _init_cudagraph_sizes(self) -> None:
        limit = self.max_num_batched_tokens
        if self.max_cudagraph_capture_size is not None:
            self.max_cudagraph_capture_size = _positive_int(
                "max_cudagraph_capture_size", self.max_cudagraph_capture_size
            )
            if self.max_cudagraph_capture_size > limit:
                raise ConfigError(
                    "max_cudagraph_capture_size",
                    self.max_cudagraph_capture_size,
                    f"at most max_num_batched_tokens ({limit})",
                )
        if self.cudagraph_capture_sizes is None:
            top = self.max_cudagraph_capture_size or min(DEFAULT_MAX_CAPTURE_SIZE, limit)
            self.cudagraph_capture_sizes = default_capture_sizes(top)
            # The largest default size at or below the limit is the real maximum.
            self.max_cudagraph_capture_size = self.cudagraph_capture_sizes[-1]
            return
        sizes = _size_list("cudagraph_capture_sizes", self.cudagraph_capture_sizes, limit)
        if not sizes:
            raise ConfigError("cudagraph_capture_sizes", sizes, "a non-empty list (or leave it unset for the defaults)")
        if self.max_cudagraph_capture_size is None:
            self.max_cudagraph_capture_size = sizes[-1]
        elif sizes[-1] > self.max_cudagraph_capture_size:
            raise ConfigError(
                "cudagraph_capture_sizes",
                sizes,
                f"sizes at most max_cudagraph_capture_size ({self.max_cudagraph_capture_size})",
            )
        self.cudagraph_capture_sizes = sizes

    def _compile_sizes(self) -> list[int]:
        value = self.compile_sizes
        if isinstance(value, str):
            if value != CAPTURE_SIZES_ALIAS:
                raise ConfigError("compile_sizes", value, f'a list of ints or the string "{CAPTURE_SIZES_ALIAS}"')
            return list(self.cudagraph_capture_sizes or [])
        return _size_list("compile_sizes", value, self.max_num_batched_tokens)

    def _check_modes(self) -> None:
        if self.cudagraph_mode.requires_piecewise_compilation():
            if self.mode != CompilationMode.VLLM_COMPILE:
                raise ConfigError(
                    "cudagraph_mode",
                    self.cudagraph_mode.name,
                    "piecewise CUDA graphs need mode VLLM_COMPILE; use FULL or NONE otherwise",
                )
            if not self.splitting_ops:
                raise ConfigError(
                    "cudagraph_mode",
                    self.cudagraph_mode.name,
                    "piecewise CUDA graphs need splitting_ops to split the graph at; set splitting_ops or use FULL",
                )
            if self.use_inductor_graph_partition:
                raise ConfigError(
                    "use_inductor_graph_partition",
                    True,
                    f"False with cudagraph_mode {self.cudagraph_mode.name}: aotcache does not yet capture a CUDA "
                    "graph per Inductor partition; use FX splitting, or cudagraph_mode FULL or NONE",
                )
        if self.use_inductor_graph_partition and self.backend != "inductor":
            raise ConfigError("use_inductor_graph_partition", True, 'False with backend "eager" (Inductor partitions)')

    # -- derived values -----------------------------------------------------------------

    def effective_custom_ops(self) -> tuple[str, ...]:
        """custom_ops with vLLM's default added where it names neither "all" nor "none":
        "none" (native PyTorch, which Inductor fuses) when Inductor compiles, else "all"."""
        rules = tuple(self.custom_ops)
        if "all" in rules or "none" in rules:
            return rules
        compiled = self.backend == "inductor" and self.mode != CompilationMode.NONE
        return (*rules, "none" if compiled else "all")

    def is_custom_op_enabled(self, name: str) -> bool:
        return custom_op_enabled(self.effective_custom_ops(), name)

    def adjust_cudagraph_sizes_for_spec_decode(self, uniform_decode_query_len: int, tensor_parallel_size: int) -> None:
        """vLLM's: every capture size rounded up to a multiple of the decode query length
        (a speculative-decoding step verifies that many tokens per request), those past
        max_cudagraph_capture_size dropped, and the maximum set to the largest left.
        tensor_parallel_size matters to vLLM only with sequence parallelism, which
        aotcache has no pass for, so only its value is checked."""
        multiple = _positive_int("uniform_decode_query_len", uniform_decode_query_len)
        _positive_int("tensor_parallel_size", tensor_parallel_size)
        if not self.cudagraph_capture_sizes or multiple <= 1:
            return
        top = self.max_cudagraph_capture_size or self.cudagraph_capture_sizes[-1]
        rounded_up = {-(-size // multiple) * multiple for size in self.cudagraph_capture_sizes}
        rounded = sorted(s for s in rounded_up if s <= top) or ([multiple] if multiple <= top else [])
        if not rounded:
            raise ConfigError(
                "uniform_decode_query_len",
                multiple,
                f"at most max_cudagraph_capture_size ({top}): no capture size is left after rounding up to it",
            )
        self.cudagraph_capture_sizes = rounded
        self.max_cudagraph_capture_size = rounded[-1]
        self.uniform_decode_query_len = multiple  # what the dispatcher's uniform-decode batches hold
        self._given.update(cudagraph_capture_sizes=rounded, max_cudagraph_capture_size=rounded[-1])
        if self._given.get("compile_sizes") == CAPTURE_SIZES_ALIAS:
            self.compile_sizes = list(rounded)

    def get_compile_ranges(self) -> list[Range]:
        """[1, p1], [p1+1, p2], ..., [pk+1, max_num_batched_tokens], both ends inclusive."""
        ranges = []
        start = 1
        for point in self.compile_ranges_split_points:
            ranges.append(Range(start, point))
            start = point + 1
        ranges.append(Range(start, self.max_num_batched_tokens))
        return ranges

    def get_compile_units(self) -> list[Range]:
        """Every range compiled: the compile ranges, then one single-size range per compile
        size that is not already a range of its own (vLLM's PiecewiseBackend)."""
        ranges = self.get_compile_ranges()
        singles = [Range(s, s) for s in self.compile_sizes if Range(s, s) not in ranges]
        return ranges + singles

    def compute_bs_to_padded_graph_size(self) -> list[int]:
        """For every batch size 0..max_cudagraph_capture_size, the smallest capture size >= it."""
        sizes = self.cudagraph_capture_sizes or []
        top = self.max_cudagraph_capture_size or 0
        table = []
        index = 0
        for batch_size in range(top + 1):
            while sizes[index] < batch_size:
                index += 1
            table.append(sizes[index])
        return table

    def graph_factors(self) -> dict[str, Any]:
        """The fields that change the compiled graph, as JSON-ready values. A field added
        after entries exist is keyed only away from its default, so that those entries
        keep their keys."""
        data = self.to_dict()
        return {
            name: data[name]
            for name in GRAPH_FIELDS
            if name not in KEYED_WHEN_SET or data[name] != KEYED_WHEN_SET[name]
        }

    def compute_hash(self) -> str:
        payload = json.dumps(self.graph_factors(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        data = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
        data["mode"] = self.mode.name
        data["cudagraph_mode"] = self.cudagraph_mode.name
        return data

    def replace(self, **overrides: Any) -> CompilationConfig:
        return from_dict({**self.to_dict(), **self._given, **overrides})


_DERIVED_FIELDS = ("compile_sizes", "cudagraph_capture_sizes", "max_cudagraph_capture_size")


def default_capture_sizes(max_size: int) -> list[int]:
    """vLLM's defaults: 1, 2, 4, multiples of 8 up to 256, then multiples of 16."""
    sizes = [1, 2, 4, *range(8, 257, 8), *range(272, max_size + 1, 16)]
    return [s for s in sizes if s <= max_size]


# -- loading ---------------------------------------------------------------------------

FIELD_NAMES = tuple(f.name for f in dataclasses.fields(CompilationConfig) if f.init)


# Fields of vLLM's CompilationConfig that aotcache does not implement yet, with the value
# that means "not used" there: a config copied from vLLM with them at that value loads;
# any other value is a ConfigError, never silently dropped (docs/configuration.md).
NOT_IMPLEMENTED: dict[str, tuple[Any, ...]] = {
    "pass_config": ({}, None),  # vLLM's own fusion passes: aotcache has none (inductor_passes takes yours)
    "cudagraph_specialize_lora": (True, False, None),  # no LoRA in aotcache: either is the same
}
# Fields aotcache fills in (as vLLM does), never given: a config copied from vLLM loads
# with them at their initial value; any other value is a ConfigError.
FILLED_IN: dict[str, tuple[Any, ...]] = {"local_cache_dir": (None,), "compilation_time": (0, 0.0, None)}


def _vllm_only_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The config without vLLM's deprecated `level` (its name for `mode`) and without
    vLLM fields at their unused value; ConfigError for one set to anything else."""
    data = dict(data)
    if "level" in data:
        level = data.pop("level")
        if "mode" in data and data["mode"] != level:
            raise ConfigError("level", level, f"the same as mode ({data['mode']!r}): level is vLLM's old name for mode")
        data["mode"] = level
    for name, unused in {**NOT_IMPLEMENTED, **FILLED_IN}.items():
        if name in data:
            value = data.pop(name)
            if not any(value == u and type(value) is type(u) for u in unused):
                allowed = " or ".join(repr(u) for u in unused)
                why = "aotcache fills it in" if name in FILLED_IN else f"aotcache does not implement {name} yet"
                raise ConfigError(name, value, f"{allowed}: {why}")
    return data


def from_dict(data: dict[str, Any], *, source: str | None = None) -> CompilationConfig:
    if not isinstance(data, dict):
        raise ConfigError(source or "config", data, "a table/object of config fields")
    data = _vllm_only_fields(data)
    unknown = sorted(set(data) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(unknown[0], data[unknown[0]], "unknown field; valid fields are " + ", ".join(FIELD_NAMES))
    return CompilationConfig(**data)


def parse_json(text: str) -> dict[str, Any]:
    """A `--compilation-config` value: a JSON object, or a bare mode number as vLLM's -O."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("compilation_config", text, f"valid JSON ({exc.msg} at char {exc.pos})") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return {"mode": value}
    if not isinstance(value, dict):
        raise ConfigError("compilation_config", text, "a JSON object such as '{\"compile_sizes\": [1, 2]}'")
    return value


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A config file: top-level fields, or a [tool.aotcache] table as in pyproject.toml."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("config", str(path), "an existing TOML file") from None
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
        merged.update(base)
    if pyproject is True:
        pyproject = find_pyproject()
    if pyproject:
        merged.update(read_toml(pyproject))
    if config_file:
        merged.update(read_toml(config_file))
    if json_text:
        merged.update(parse_json(json_text))
    if overrides:
        merged.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(merged)


# -- value checks ----------------------------------------------------------------------


def _int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, f"an integer >= {minimum}")
    if value < minimum:
        raise ConfigError(name, value, f"an integer >= {minimum}")
    return value


def _positive_int(name: str, value: Any) -> int:
    return _int(name, value, minimum=1)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, value, "true or false")
    return value


def _optional_str(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if not isinstance(value, str):
        raise ConfigError(name, value, "a path string")
    return value


def _int_list(name: str, value: Any) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(name, value, "a list of integers")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ConfigError(name, value, f"a list of integers ({item!r} is not one)")
    return list(value)


def _size_list(name: str, value: Any, limit: int) -> list[int]:
    sizes = _int_list(name, value)
    for size in sizes:
        if not 1 <= size <= limit:
            raise ConfigError(name, size, f"each size must satisfy 1 <= size <= max_num_batched_tokens ({limit})")
    duplicates = sorted({s for s in sizes if sizes.count(s) > 1})
    if duplicates:
        raise ConfigError(name, sizes, f"sizes without repeats ({duplicates} appear more than once)")
    return sorted(sizes)


def _op_names(value: Any) -> list[str]:
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


def _json_dict(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(name, value, "a table/object with string keys")
    try:
        json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        raise ConfigError(name, value, "JSON-serialisable values (numbers, strings, bools, lists, tables)") from None
    return dict(value)


def _inductor_passes(value: Any) -> dict[str, str]:
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


def _custom_op_rules(value: Any) -> list[str]:
    """vLLM's grammar: "all" or "none" (at most one), "+name" or "-name" (not both)."""
    if not isinstance(value, list):
        raise ConfigError("custom_ops", value, 'a list of "all", "none", "+name" or "-name"')
    for rule in value:
        if not isinstance(rule, str) or not _CUSTOM_OP_RULE.match(rule):
            raise ConfigError(
                "custom_ops", rule, '"all", "none", "+name" or "-name" (name: a CustomOp\'s registered name)'
            )
    if "all" in value and "none" in value:
        raise ConfigError("custom_ops", value, 'one of "all" and "none", not both')
    both = sorted({r[1:] for r in value if r[0] == "+"} & {r[1:] for r in value if r[0] == "-"})
    if both:
        raise ConfigError("custom_ops", value, f"{both[0]} enabled (+) or disabled (-), not both")
    if len(set(value)) != len(value):
        raise ConfigError("custom_ops", value, "each rule once")
    return sorted(value)  # the order means nothing: one key for any order


DYNAMIC_SHAPE_TYPES = ("backed", "unbacked", "backed_size_oblivious")
_DYNAMIC_SHAPES_DEFAULTS = {"type": "backed", "evaluate_guards": False, "assume_32_bit_indexing": False}


def _dynamic_shapes(value: Any) -> dict[str, Any]:
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
        result[name] = _bool(f"dynamic_shapes_config.{name}", result[name])
    if result["type"] == "unbacked" and result["evaluate_guards"]:
        raise ConfigError("dynamic_shapes_config.evaluate_guards", True, "False with type unbacked (it adds no guards)")
    return result


def custom_op_enabled(rules: tuple[str, ...] | list[str], name: str) -> bool:
    """vLLM's precedence: "-name" disables, "+name" enables, else the default ("all"
    enables every op, "none" none)."""
    if f"-{name}" in rules:
        return False
    return f"+{name}" in rules or "all" in rules


# -- the current config (for @support_compile models) -----------------------------------

CONFIG_ENV = envs.AOTCACHE_COMPILATION_CONFIG


@dataclass(frozen=True)
class _InEffect:
    """What `with aotcache.config(...)` blocks set: a whole config given positionally
    (replacing everything outside), and the fields given by name, innermost last."""

    replacement: CompilationConfig | None
    fields: dict[str, Any]
    effective: CompilationConfig


_current: contextvars.ContextVar[_InEffect | None] = contextvars.ContextVar("aotcache_config", default=None)


def _defaults(base: dict[str, Any] | None) -> CompilationConfig:
    return load_config(base=base, pyproject=True, json_text=envs.get(CONFIG_ENV) or None)


def current_config(base: dict[str, Any] | None = None) -> CompilationConfig:
    """The config in effect: `base` (a model class's own fields) under the nearest
    pyproject's [tool.aotcache], under AOTCACHE_COMPILATION_CONFIG (JSON), under the
    fields the enclosing `with aotcache.config(...)` blocks set by name, the innermost
    winning; a config given to a block positionally replaces all but the fields of the
    blocks inside it."""
    state = _current.get()
    if state is None:
        return _defaults(base)
    if state.replacement is not None or not base:
        return state.effective
    return _defaults(base).replace(**state.fields)


@contextlib.contextmanager
def use_config(
    config: CompilationConfig | dict[str, Any] | None = None, /, **fields: Any
) -> Iterator[CompilationConfig]:
    """`with aotcache.config(compile_sizes=[1, 2]):` - fields apply over the config in
    effect; a CompilationConfig (or dict) given positionally replaces it first."""
    outer = _current.get()
    if config is not None:
        replacement = config if isinstance(config, CompilationConfig) else from_dict(dict(config))
        named = dict(fields)
    else:
        replacement = outer.replacement if outer else None
        named = {**(outer.fields if outer else {}), **fields}
    start = replacement if replacement is not None else _defaults(None)
    effective = start.replace(**named) if named else start
    token = _current.set(_InEffect(replacement, named, effective))
    try:
        yield effective
    finally:
        _current.reset(token)
