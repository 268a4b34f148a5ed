"""CompilationConfig: what to compile, for which sizes, and how (vLLM's semantics).
Its fields' values go through values.py; sources.py builds one from dicts and files.

A config is validated when it is built: every invalid value raises ConfigError naming
the field, the value and what is allowed. Nothing is silently dropped: unknown fields
and duplicate sizes are errors; the only normalisation is sorting, and de-duplicating
split points (which are boundaries, so a repeat means nothing).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from aotcache.errors import ConfigError
from aotcache.modes import CompilationMode, CUDAGraphMode, parse_enum

from . import values

CAPTURE_SIZES_ALIAS = "cudagraph_capture_sizes"
DEFAULT_MAX_CAPTURE_SIZE = 512
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
        self._fill_unset()
        self._given = {name: getattr(self, name) for name in _DERIVED_FIELDS}
        self.mode = parse_enum(CompilationMode, "mode", self.mode)
        self.cudagraph_mode = parse_enum(CUDAGraphMode, "cudagraph_mode", self.cudagraph_mode)
        self.max_num_batched_tokens = values.positive_int("max_num_batched_tokens", self.max_num_batched_tokens)
        self.uniform_decode_query_len = values.positive_int("uniform_decode_query_len", self.uniform_decode_query_len)
        self.cudagraph_num_of_warmups = values.int_at_least(
            "cudagraph_num_of_warmups", self.cudagraph_num_of_warmups, minimum=0
        )
        self.cudagraph_copy_inputs = values.boolean("cudagraph_copy_inputs", self.cudagraph_copy_inputs)
        self.compile_mm_encoder = values.boolean("compile_mm_encoder", self.compile_mm_encoder)
        self.use_inductor_graph_partition = values.boolean(
            "use_inductor_graph_partition", self.use_inductor_graph_partition
        )
        if self.backend not in ("inductor", "eager"):
            raise ConfigError("backend", self.backend, 'one of "inductor", "eager"')
        if self.artifact_format not in ARTIFACT_FORMATS:
            raise ConfigError("artifact_format", self.artifact_format, "one of " + ", ".join(ARTIFACT_FORMATS))
        self.splitting_ops = values.op_names(self.splitting_ops)
        self.inductor_compile_config = values.json_dict("inductor_compile_config", self.inductor_compile_config)
        self.inductor_passes = values.inductor_passes(self.inductor_passes)
        self.custom_ops = values.custom_op_rules(self.custom_ops)
        self.dynamic_shapes_config = values.dynamic_shapes(self.dynamic_shapes_config)
        self.cache_dir = values.optional_str("cache_dir", self.cache_dir)
        self.debug_dump_path = values.optional_str("debug_dump_path", self.debug_dump_path)
        self.compile_ranges_split_points = self._split_points()
        self._init_cudagraph_sizes()
        self.compile_sizes = self._compile_sizes(self.compile_sizes)
        self._check_compile_sizes_unpadded()
        self._check_modes()

    # -- validation ---------------------------------------------------------------------

    def _fill_unset(self) -> None:
        """vLLM's "unset": None for these fields (and "" for backend and cache_dir) is
        the default, as vLLM fills them in, so a config dict vLLM printed loads."""
        for name, default in UNSET_MEANS_DEFAULT.items():
            if getattr(self, name) is None:
                setattr(self, name, list(default) if isinstance(default, list) else default)
        if self.backend == "":
            self.backend = "inductor"  # vLLM: current_platform.get_compile_backend(), inductor on CPU and CUDA
        if self.cache_dir == "":
            self.cache_dir = None

    def _split_points(self) -> list[int]:
        points = values.int_list("compile_ranges_split_points", self.compile_ranges_split_points)
        limit = self.max_num_batched_tokens
        for point in points:
            if not 1 <= point < limit:
                raise ConfigError(
                    "compile_ranges_split_points",
                    point,
                    f"each split point must satisfy 1 <= point < max_num_batched_tokens ({limit})",
                )
        # 1 is dropped, as vLLM does: every range starts at 1 already ([1, 1] is compile_sizes=[1])
        return sorted({p for p in points if p > 1})

    def _init_cudagraph_sizes(self) -> None:
        limit = self.max_num_batched_tokens
        graphs = self.cudagraph_mode != CUDAGraphMode.NONE
        if not graphs and (self.cudagraph_capture_sizes == [] or self.max_cudagraph_capture_size == 0):
            # vLLM's spellings of "no graphs" (sizes [] or maximum 0), with cudagraph_mode NONE
            self._no_capture_sizes()
            return
        if self.max_cudagraph_capture_size is not None:
            self.max_cudagraph_capture_size = values.positive_int(
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
            if limit <= top and limit not in self.cudagraph_capture_sizes:
                self.cudagraph_capture_sizes.append(limit)  # vLLM: the largest batch is captured too
            # The largest default size at or below the limit is the real maximum.
            self.max_cudagraph_capture_size = self.cudagraph_capture_sizes[-1]
            return
        sizes = values.size_list("cudagraph_capture_sizes", self.cudagraph_capture_sizes, limit)
        if not sizes:
            raise ConfigError(
                "cudagraph_capture_sizes",
                sizes,
                f"a non-empty list with cudagraph_mode {self.cudagraph_mode.name} (or leave it unset for the "
                "defaults; [] means no graphs only with cudagraph_mode NONE)",
            )
        if self.max_cudagraph_capture_size is None:
            self.max_cudagraph_capture_size = sizes[-1]
        elif sizes[-1] != self.max_cudagraph_capture_size:
            raise ConfigError(
                "max_cudagraph_capture_size",
                self.max_cudagraph_capture_size,
                f"the largest of cudagraph_capture_sizes ({sizes[-1]}) when both are given, as vLLM requires",
            )
        self.cudagraph_capture_sizes = sizes

    def _no_capture_sizes(self) -> None:
        sizes, top = self.cudagraph_capture_sizes, self.max_cudagraph_capture_size
        if sizes:
            raise ConfigError("max_cudagraph_capture_size", top, f"the largest of cudagraph_capture_sizes ({sizes})")
        if top:
            raise ConfigError("cudagraph_capture_sizes", sizes, f"sizes up to max_cudagraph_capture_size ({top})")
        self.cudagraph_capture_sizes, self.max_cudagraph_capture_size = [], 0

    def _compile_sizes(self, value: Any) -> list[int]:
        """vLLM's compile_sizes: ints, and "cudagraph_capture_sizes" for the capture sizes
        in use (none with cudagraph_mode NONE, as in vLLM); the bare string is aotcache's
        short form of ["cudagraph_capture_sizes"]."""
        if names_capture_sizes(value):
            given = values.size_list(
                "compile_sizes",
                [] if value == CAPTURE_SIZES_ALIAS else [v for v in value if v != CAPTURE_SIZES_ALIAS],
                self.max_num_batched_tokens,
            )
            in_use = self.cudagraph_capture_sizes if self.cudagraph_mode != CUDAGraphMode.NONE else []
            return sorted(set(given) | set(in_use or []))
        if isinstance(value, str):
            raise ConfigError("compile_sizes", value, f'a list of ints and "{CAPTURE_SIZES_ALIAS}"')
        return values.size_list("compile_sizes", value, self.max_num_batched_tokens)

    def _check_compile_sizes_unpadded(self) -> None:
        """vLLM's CudagraphDispatcher: with graphs, a compile size up to the largest capture
        size must be a capture size, or padding sends its batches to another size and its
        compile never runs."""
        if self.cudagraph_mode == CUDAGraphMode.NONE or not self.cudagraph_capture_sizes:
            return
        capture = self.cudagraph_capture_sizes
        for size in self.compile_sizes:
            if size <= capture[-1] and size not in capture:
                padded = min(s for s in capture if s >= size)
                raise ConfigError(
                    "compile_sizes",
                    size,
                    f"a capture size or above {capture[-1]}: with cudagraph_mode {self.cudagraph_mode.name} a batch "
                    f"of {size} is padded to {padded}, so its compile would never run",
                    hint="use values from cudagraph_capture_sizes",
                )

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
            old_torch = torch_without_partition_wrappers() if self.use_inductor_graph_partition else None
            if self.use_inductor_graph_partition and old_torch:
                raise ConfigError(
                    "use_inductor_graph_partition",
                    True,
                    f"False with cudagraph_mode {self.cudagraph_mode.name} on torch {old_torch}, whose Inductor has "
                    "no set_customized_partition_wrappers to capture a CUDA graph per partition; use FX splitting, "
                    "cudagraph_mode FULL or NONE, or torch 2.9 or newer",
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
        return values.custom_op_enabled(self.effective_custom_ops(), name)

    def adjust_cudagraph_sizes_for_spec_decode(self, uniform_decode_query_len: int, tensor_parallel_size: int) -> None:
        """vLLM's: every capture size rounded up to a multiple of the decode query length
        (a speculative-decoding step verifies that many tokens per request), those past
        max_cudagraph_capture_size dropped, and the maximum set to the largest left.
        tensor_parallel_size matters to vLLM only with sequence parallelism, which
        aotcache has no pass for, so only its value is checked."""
        multiple = values.positive_int("uniform_decode_query_len", uniform_decode_query_len)
        values.positive_int("tensor_parallel_size", tensor_parallel_size)
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
        if names_capture_sizes(self._given.get("compile_sizes")):
            self.compile_sizes = self._compile_sizes(self._given["compile_sizes"])

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
        if not sizes:
            return []
        top = self.max_cudagraph_capture_size or 0
        table = [0]  # an empty batch pads to nothing (vLLM)
        index = 0
        for batch_size in range(1, top + 1):
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

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        data = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
        data["mode"] = self.mode.name
        data["cudagraph_mode"] = self.cudagraph_mode.name
        return data

    def replace(self, **overrides: Any) -> CompilationConfig:
        return _from_fields({**self.to_dict(), **self._given, **overrides})


_DERIVED_FIELDS = ("compile_sizes", "cudagraph_capture_sizes", "max_cudagraph_capture_size")
# vLLM's fields whose None means "fill in the default" (aotcache's defaults; vLLM's own for
# mode and cudagraph_mode depend on its optimization level, which aotcache has not got).
UNSET_MEANS_DEFAULT: dict[str, Any] = {
    "mode": CompilationMode.VLLM_COMPILE,
    "cudagraph_mode": CUDAGraphMode.NONE,
    "use_inductor_graph_partition": False,
    "splitting_ops": [],
    "compile_sizes": [],
    "compile_ranges_split_points": [],
}


def names_capture_sizes(compile_sizes: Any) -> bool:
    """Whether compile_sizes uses the capture-sizes alias: vLLM's list form, or aotcache's
    bare string."""
    return compile_sizes == CAPTURE_SIZES_ALIAS or (
        isinstance(compile_sizes, list) and CAPTURE_SIZES_ALIAS in compile_sizes
    )


def default_capture_sizes(max_size: int) -> list[int]:
    """vLLM's defaults: 1, 2, 4, multiples of 8 up to 256, then multiples of 16."""
    sizes = [1, 2, 4, *range(8, 257, 8), *range(272, max_size + 1, 16)]
    return [s for s in sizes if s <= max_size]


# -- loading ---------------------------------------------------------------------------

FIELD_NAMES = tuple(f.name for f in dataclasses.fields(CompilationConfig) if f.init)


def _from_fields(data: dict[str, Any]) -> CompilationConfig:
    """A config of aotcache's own field names (sources.from_dict also reads vLLM's)."""
    check_field_names(data, "")
    return CompilationConfig(**data)


def check_field_names(data: dict[str, Any], source: str, also_known: tuple[str, ...] = ()) -> None:
    """ConfigError for the first field `data` names that a config does not have: where it
    came from (`source`, e.g. "pyproject.toml [tool.aotcache]") and the nearest real name."""
    unknown = sorted(set(data) - set(FIELD_NAMES) - set(also_known))
    if not unknown:
        return
    name = unknown[0]
    near = difflib.get_close_matches(name, FIELD_NAMES, n=1)
    where = f" in {source}" if source else ""
    raise ConfigError(
        name,
        data[name],
        f"unknown field{where}; valid fields are " + ", ".join(FIELD_NAMES),
        hint=f"did you mean {near[0]}?" if near else None,
    )


PARTITION_WRAPPERS_SINCE = (2, 9)  # torch._inductor.utils.set_customized_partition_wrappers


def torch_without_partition_wrappers() -> str | None:
    """The installed torch's version where its Inductor predates partition wrappers (CUDA
    graphs per Inductor partition), else None. Read from the distribution's metadata, so
    that validating a config never imports Inductor."""
    import re
    from importlib import metadata

    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None or (int(found.group(1)), int(found.group(2))) >= PARTITION_WRAPPERS_SINCE:
        return None
    return version
