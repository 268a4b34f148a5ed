"""vLLM's own tests, restated against aotcache's API (issue 36).

`CompilationConfig` claims vLLM's semantics, and so does the `CudagraphDispatcher`. Each
case below cites the vLLM test (file::function) or the vLLM source function it restates,
and expects what vLLM does, except where docs/configuration.md says aotcache
deliberately differs. There the case expects aotcache's documented refusal: a
ConfigError naming the field. The vLLM sources read are vllm/config/compilation.py
(CompilationConfig), vllm/config/vllm.py (VllmConfig: _set_cudagraph_sizes,
_set_compile_ranges, __post_init__), vllm/v1/cudagraph_dispatcher.py,
vllm/compilation/partition_rules.py (should_split) and
vllm/utils/argparse_utils.py (FlexibleArgumentParser's -O).

The cases for the issue's known disagreements expect the FIXED behaviour and fail until
it is fixed. The ids of the ones found apart from the issue begin with "extra-".

Config-level and dispatcher-level only: nothing here compiles a model.
"""

from __future__ import annotations

from typing import Any

import pytest

from aotcache.configuration import CompilationConfig, Range, from_dict, load_config
from aotcache.errors import ConfigError
from aotcache.modes import CompilationMode, CUDAGraphMode

NONE, PIECEWISE, FULL = CUDAGraphMode.NONE, CUDAGraphMode.PIECEWISE, CUDAGraphMode.FULL
FULL_DECODE_ONLY, FULL_AND_PIECEWISE = CUDAGraphMode.FULL_DECODE_ONLY, CUDAGraphMode.FULL_AND_PIECEWISE
# vLLM's tests split at their registered test op `silly::attention` (tests/compile/silly_attention.py);
# aotcache only checks the name's form here, so any qualified name stands for it.
ATTN = "silly::attention"


def _config(**fields: Any) -> CompilationConfig:
    """A config as vLLM's tests build one: piecewise modes get a splitting op, because
    vLLM's set_splitting_ops_for_v1 fills in the attention ops when splitting_ops is None
    and aotcache has no attention ops of its own to fill in."""
    mode = fields.get("cudagraph_mode")
    if mode is not None and CUDAGraphMode[str(getattr(mode, "name", mode)).upper()].requires_piecewise_compilation():
        fields.setdefault("splitting_ops", [ATTN])
    return CompilationConfig(**fields)


def _dispatcher(config: CompilationConfig) -> Any:
    from aotcache.serve.cudagraph import CudagraphDispatcher  # imports torch: only where it is needed

    return CudagraphDispatcher(config)


def _batch(num_tokens: int, uniform_decode: bool = False) -> Any:
    from aotcache.serve.cudagraph import BatchDescriptor

    return BatchDescriptor(num_tokens, uniform_decode)


# ---------------------------------------------------------------------------------------
# Capture sizes: tests/compile/test_config.py::test_cudagraph_sizes_post_init, whose rows
# go through vllm/config/vllm.py::VllmConfig._set_cudagraph_sizes. Its default maximum
# comes from max_num_seqs, which aotcache has not got (its default is min(512,
# max_num_batched_tokens)), so the rows that depend on max_num_seqs are left out.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capture_sizes", "max_size", "tokens", "cudagraph_mode", "expected_max"),
    [
        pytest.param([1, 2, 4], 4, 2048, FULL_AND_PIECEWISE, 4, id="consistent-max"),
        pytest.param([1, 256], None, 2048, FULL_AND_PIECEWISE, 256, id="max-from-list-256"),
        pytest.param(None, 257, 2048, FULL_AND_PIECEWISE, 256, id="truncated-to-stride"),
        pytest.param([1, 2, 4, 15], None, 2048, FULL_AND_PIECEWISE, 15, id="max-from-list-15"),
        # issue 36: vLLM's spellings of "no graphs" (rows ([], None, NONE, 0), (None, 0, NONE, 0))
        pytest.param([], None, 2048, NONE, 0, id="issue-empty-capture-sizes-with-NONE"),
        pytest.param(None, 0, 2048, NONE, 0, id="issue-max-0-with-NONE"),
    ],
)
def test_cudagraph_sizes_post_init(
    capture_sizes: list[int] | None, max_size: int | None, tokens: int, cudagraph_mode: CUDAGraphMode, expected_max: int
) -> None:
    """vllm tests/compile/test_config.py::test_cudagraph_sizes_post_init (accepted rows)."""
    config = _config(
        cudagraph_capture_sizes=capture_sizes,
        max_cudagraph_capture_size=max_size,
        max_num_batched_tokens=tokens,
        cudagraph_mode=cudagraph_mode,
    )
    assert config.max_cudagraph_capture_size == expected_max
    if expected_max == 0:  # VllmConfig._set_cudagraph_sizes: "no cudagraph in use" -> [] and 0
        assert config.cudagraph_capture_sizes == []
    else:
        assert (config.cudagraph_capture_sizes or [])[-1] == expected_max


@pytest.mark.parametrize(
    ("capture_sizes", "max_size", "cudagraph_mode", "fields"),
    [
        # issue 36: accepted today, then an IndexError in the padding table; vLLM raises
        # "customized max_cudagraph_capture_size(=8) should be consistent with the max value
        # of cudagraph_capture_sizes(=4)" (VllmConfig._set_cudagraph_sizes)
        pytest.param(
            [1, 2, 4],
            8,
            FULL_AND_PIECEWISE,
            {"cudagraph_capture_sizes", "max_cudagraph_capture_size"},
            id="issue-max-8-past-sizes-1-2-4",
        ),
        pytest.param([1, 2, 4], 8, FULL, {"cudagraph_capture_sizes", "max_cudagraph_capture_size"}, id="issue-FULL"),
        # "the list should contain at least 1 element when use cudagraph"
        pytest.param([], None, FULL_AND_PIECEWISE, {"cudagraph_capture_sizes"}, id="empty-list-with-graphs"),
        # "the max capturing size should be >= 1 when use cudagraph"
        pytest.param(None, 0, FULL_AND_PIECEWISE, {"max_cudagraph_capture_size"}, id="max-0-with-graphs"),
    ],
)
def test_cudagraph_sizes_post_init_refused(
    capture_sizes: list[int] | None, max_size: int | None, cudagraph_mode: CUDAGraphMode, fields: set[str]
) -> None:
    """vllm tests/compile/test_config.py::test_cudagraph_sizes_post_init (ValidationError rows):
    refused when the config is built, never later in the dispatcher's padding table."""
    with pytest.raises(ConfigError) as raised:
        _config(
            cudagraph_capture_sizes=capture_sizes,
            max_cudagraph_capture_size=max_size,
            max_num_batched_tokens=2048,
            cudagraph_mode=cudagraph_mode,
        )
    assert raised.value.field in fields


def test_inconsistent_max_capture_size_never_reaches_the_padding_table_as_an_index_error() -> None:
    """issue 36, the same pair with cudagraph_mode NONE: vLLM's VllmConfig._set_cudagraph_sizes
    sets [] and 0 when no graph is used, so nothing can fail later. aotcache may refuse the
    pair (naming a field) or keep a consistent pair; what it may not do is build a table
    that fails with an IndexError."""
    try:
        config = CompilationConfig(cudagraph_capture_sizes=[1, 2, 4], max_cudagraph_capture_size=8)
    except ConfigError as refused:
        assert refused.field in {"cudagraph_capture_sizes", "max_cudagraph_capture_size"}
        return
    sizes = config.cudagraph_capture_sizes or []
    assert not sizes or sizes[-1] == config.max_cudagraph_capture_size
    if sizes:
        config.compute_bs_to_padded_graph_size()
    _dispatcher(config).dispatch(_batch(5))


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(
            {"cudagraph_capture_sizes": [], "max_cudagraph_capture_size": 0}, id="as-vllm-dumps-an-eager-config"
        ),
        pytest.param({"cudagraph_capture_sizes": []}, id="empty-list"),
        pytest.param({"max_cudagraph_capture_size": 0}, id="max-0"),
    ],
)
def test_no_graphs_spelling_loads_from_a_vllm_dict_and_dispatches_nothing(fields: dict[str, Any]) -> None:
    """issue 36. vLLM writes an eager config as `"cudagraph_capture_sizes": [],
    "max_cudagraph_capture_size": 0` (VllmConfig._set_cudagraph_sizes, the "no cudagraph in
    use" branch), so a config copied from vLLM holds this spelling."""
    config = from_dict({**fields, "cudagraph_mode": "NONE"})
    assert config.cudagraph_capture_sizes == [] and config.max_cudagraph_capture_size == 0
    dispatcher = _dispatcher(config)
    assert dispatcher.dispatch(_batch(1)) == (NONE, None)
    assert dispatcher.all_keys() == []


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"cudagraph_capture_sizes": [], "max_cudagraph_capture_size": 0}, id="issue-empty-and-0"),
        pytest.param({"cudagraph_capture_sizes": []}, id="issue-empty"),
        pytest.param({"max_cudagraph_capture_size": 0}, id="issue-0"),
        # passes today: graphs are off, so the padding rule does not apply
        pytest.param({"cudagraph_capture_sizes": [1, 2, 4, 8], "max_cudagraph_capture_size": 8}, id="sizes-but-NONE"),
    ],
)
def test_no_graphs_keeps_explicit_compile_sizes(fields: dict[str, Any]) -> None:
    """vllm tests/compile/test_config.py::test_compile_sizes_padding_validation, its last two
    blocks: "When cudagraphs are disabled (max_cudagraph_capture_size=0), padding validation
    should be skipped" and "When cudagraph_mode is NONE but capture_sizes is non-empty,
    padding validation should still be skipped": compile_sizes [3, 5, 7] are kept."""
    config = CompilationConfig(**fields, compile_sizes=[3, 5, 7], cudagraph_mode="NONE")
    assert sorted(config.compile_sizes) == [3, 5, 7]
    assert _dispatcher(config).dispatch(_batch(3)) == (NONE, None)


# ---------------------------------------------------------------------------------------
# compile_sizes and "cudagraph_capture_sizes": vllm/config/compilation.py::
# CompilationConfig.post_init_cudagraph_sizes (a list of ints and/or the string).
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [CompilationConfig, lambda **f: from_dict(f)], ids=["constructor", "from_dict"])
def test_compile_sizes_list_form_of_the_capture_sizes_alias(build: Any) -> None:
    """issue 36: vllm tests/compile/test_config.py::test_compile_sizes_padding_validation:
    compile_sizes=["cudagraph_capture_sizes"] with captures [1, 2, 4, 8] (FULL) resolves to
    [1, 2, 4, 8]. aotcache refuses the list form (it takes only the bare string)."""
    config = build(
        compile_sizes=["cudagraph_capture_sizes"],
        cudagraph_capture_sizes=[1, 2, 4, 8],
        max_cudagraph_capture_size=8,
        cudagraph_mode="FULL",
    )
    assert sorted(config.compile_sizes) == [1, 2, 4, 8]


def test_compile_sizes_alias_mixed_with_ints() -> None:
    """issue 36: post_init_cudagraph_sizes takes ints and the string in one list: each int is
    kept and the string adds the capture sizes (16 is past the largest capture size, so the
    dispatcher's padding check leaves it alone)."""
    config = _config(
        compile_sizes=[16, "cudagraph_capture_sizes"],
        cudagraph_capture_sizes=[1, 2, 4],
        cudagraph_mode="FULL",
    )
    assert sorted(set(config.compile_sizes)) == [1, 2, 4, 16]


def test_compile_sizes_alias_with_no_graphs_is_empty() -> None:
    """issue 36: with cudagraph_mode NONE, VllmConfig._set_cudagraph_sizes sets
    cudagraph_capture_sizes = [], so post_init_cudagraph_sizes resolves
    ["cudagraph_capture_sizes"] to []. aotcache (today: refused as a list; as the bare
    string it compiles all 51 default sizes) must compile no size for it."""
    assert CompilationConfig(compile_sizes=["cudagraph_capture_sizes"], cudagraph_mode="NONE").compile_sizes == []


@pytest.mark.parametrize("value", [["all"], ["cudagraph_capture_size"], [1, "2"]])
def test_compile_sizes_other_strings_refused(value: list[Any]) -> None:
    """post_init_cudagraph_sizes asserts "Unrecognized size type in compile_sizes, expect
    'cudagraph_capture_sizes'": any other string is refused (aotcache: ConfigError)."""
    with pytest.raises(ConfigError) as raised:
        CompilationConfig(compile_sizes=value, cudagraph_capture_sizes=[1, 2], cudagraph_mode="FULL")
    assert raised.value.field == "compile_sizes"


# ---------------------------------------------------------------------------------------
# A compile size that padding would change: vllm/v1/cudagraph_dispatcher.py::
# CudagraphDispatcher._compute_bs_to_padded_graph_size raises ValueError("compile_sizes
# contains 3 which would be padded to 4. All compile_sizes must be values that won't be
# changed by cudagraph padding...") when cudagraphs are used (cudagraph_mode != NONE) and
# the size is at most the largest capture size. vLLM raises it when the dispatcher's keys
# are initialised (at engine start), not in CompilationConfig; aotcache validates a config
# when it is built, so either place passes here, as a ConfigError naming compile_sizes.
# ---------------------------------------------------------------------------------------


def _config_and_dispatcher(**fields: Any) -> CompilationConfig:
    config = _config(**fields)
    _dispatcher(config)
    return config


@pytest.mark.parametrize(
    ("compile_sizes", "cudagraph_mode"),
    [
        pytest.param([3], FULL, id="issue-3-padded-to-4-FULL"),
        pytest.param([5], FULL, id="issue-5-padded-to-8-FULL"),
        pytest.param([3], PIECEWISE, id="issue-3-PIECEWISE"),
        pytest.param([3], FULL_DECODE_ONLY, id="issue-3-FULL_DECODE_ONLY"),
        pytest.param([3], FULL_AND_PIECEWISE, id="issue-3-FULL_AND_PIECEWISE"),
        pytest.param([1, 3, 8], FULL, id="issue-one-bad-size-among-good"),
    ],
)
def test_compile_sizes_padding_validation_refused(compile_sizes: list[int], cudagraph_mode: CUDAGraphMode) -> None:
    """vllm tests/compile/test_config.py::test_compile_sizes_padding_validation (raising blocks)."""
    with pytest.raises(ConfigError) as raised:
        _config_and_dispatcher(
            cudagraph_capture_sizes=[1, 2, 4, 8],
            max_cudagraph_capture_size=8,
            compile_sizes=compile_sizes,
            cudagraph_mode=cudagraph_mode,
        )
    assert raised.value.field == "compile_sizes"


@pytest.mark.parametrize(
    ("compile_sizes", "expected"),
    [
        pytest.param([1, 2, 4, 8], [1, 2, 4, 8], id="capture-sizes-themselves"),
        pytest.param([16, 64], [16, 64], id="past-the-largest-capture-size"),  # size <= max_capture_size only
    ],
)
def test_compile_sizes_padding_validation_accepted(compile_sizes: list[int], expected: list[int]) -> None:
    """vllm tests/compile/test_config.py::test_compile_sizes_padding_validation ("Should not
    raise"), and _compute_bs_to_padded_graph_size checking only sizes <= max_capture_size."""
    config = _config_and_dispatcher(
        cudagraph_capture_sizes=[1, 2, 4, 8],
        max_cudagraph_capture_size=8,
        compile_sizes=compile_sizes,
        cudagraph_mode=FULL,
    )
    assert sorted(config.compile_sizes) == expected


# ---------------------------------------------------------------------------------------
# Compile ranges: tests/compile/test_compile_ranges.py and vllm/config/vllm.py::
# VllmConfig._set_compile_ranges (keeps a point x only when 1 < x < max_num_batched_tokens,
# asserts x > 0, appends max_num_batched_tokens) + CompilationConfig.get_compile_ranges
# (sorted(set(points)) -> [1, p1], [p1+1, p2], ...). Newer vLLM calls the field
# compile_ranges_endpoints; the ranges are the same.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "tokens", "expected"),
    [
        # test_compile_ranges.py::test_compile_config_get_compile_ranges
        pytest.param([8, 32], 8192, [Range(1, 8), Range(9, 32), Range(33, 8192)], id="get_compile_ranges"),
        # test_compile_ranges.py::test_inductor_cache_compile_ranges
        pytest.param([8], 8192, [Range(1, 8), Range(9, 8192)], id="one-point"),
        pytest.param([32, 8, 32], 64, [Range(1, 8), Range(9, 32), Range(33, 64)], id="sorted-set"),
        pytest.param([], 64, [Range(1, 64)], id="no-points"),
        # issue 36: _set_compile_ranges keeps x only when x > 1: a point of 1 is dropped
        pytest.param([1], 64, [Range(1, 64)], id="issue-point-1-dropped"),
        pytest.param([1, 8], 64, [Range(1, 8), Range(9, 64)], id="issue-point-1-dropped-among-others"),
    ],
)
def test_compile_ranges(points: list[int], tokens: int, expected: list[Range]) -> None:
    config = CompilationConfig(compile_ranges_split_points=points, max_num_batched_tokens=tokens)
    assert config.get_compile_ranges() == expected


@pytest.mark.parametrize(
    ("points", "sizes", "expected"),
    [
        # test_compile_ranges.py::test_compile_ranges: "3 compile ranges + 3 compile sizes"
        pytest.param(
            [8, 32],
            [16, 64, 128],
            {Range(1, 8), Range(16, 16), Range(9, 32), Range(64, 64), Range(128, 128), Range(33, 8192)},
            id="test_compile_ranges",
        ),
        # test_compile_ranges.py::test_compile_sizes_produce_static_shapes: Range(1,8), Range(9,8192), 16
        pytest.param([8], [16], {Range(1, 8), Range(9, 8192), Range(16, 16)}, id="static-shapes"),
        # issue 36: with the point 1 dropped, size 1 is a compile size of its own again
        pytest.param([1, 8], [1], {Range(1, 8), Range(9, 8192), Range(1, 1)}, id="issue-point-1-and-size-1"),
    ],
)
def test_compile_units_are_ranges_plus_sizes(points: list[int], sizes: list[int], expected: set[Range]) -> None:
    """The unit count is vLLM's compilation_counter num_backend_compilations in these tests."""
    config = CompilationConfig(compile_ranges_split_points=points, compile_sizes=sizes, max_num_batched_tokens=8192)
    units = config.get_compile_units()
    assert set(units) == expected and len(units) == len(expected)


def test_a_compile_size_is_preferred_over_the_range_that_holds_it() -> None:
    """vllm/config/compilation.py, compile_ranges_split_points' docstring: "if we have a range
    [1, 8] and a compile size 4, graph for compile size 4 will be compiled and used instead
    of the graph for range [1, 8]" (PiecewiseBackend)."""
    from aotcache.serve.dispatch import SizeDispatcher

    config = CompilationConfig(compile_ranges_split_points=[8], compile_sizes=[4], max_num_batched_tokens=64)
    units = config.get_compile_units()
    pick = SizeDispatcher(units)
    assert units[pick(4)] == Range(4, 4)
    assert units[pick(3)] == Range(1, 8) and units[pick(9)] == Range(9, 64)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"compile_ranges_endpoints": [8, 32], "max_num_batched_tokens": 8192},
            [Range(1, 8), Range(9, 32), Range(33, 8192)],
            id="issue-endpoints-is-the-new-name",
        ),
        pytest.param(
            {"compile_ranges_endpoints": [8], "compile_ranges_split_points": [8], "max_num_batched_tokens": 64},
            [Range(1, 8), Range(9, 64)],
            id="issue-both-names-same-value",
        ),
        # vLLM prints the resolved config with max_num_batched_tokens as the last endpoint
        # ('compile_ranges_endpoints': [8192]); _set_compile_ranges drops x >= max, so a
        # config copied from vLLM's log loads with the same ranges.
        pytest.param(
            {"compile_ranges_endpoints": [2048], "max_num_batched_tokens": 2048},
            [Range(1, 2048)],
            id="extra-endpoints-as-vllm-prints-them",
        ),
    ],
)
def test_compile_ranges_endpoints(fields: dict[str, Any], expected: list[Range]) -> None:
    """issue 36: current vLLM's CompilationConfig.compile_ranges_endpoints (renamed from
    compile_ranges_split_points; tests/compile/test_compile_ranges.py builds with
    compile_ranges_endpoints=[8, 32]). aotcache reads it as it reads `level` for `mode`."""
    assert from_dict(fields).get_compile_ranges() == expected


def test_compile_ranges_endpoints_from_the_json_config() -> None:
    """issue 36: the same through --compilation-config / -O JSON (load_config checks field names)."""
    config = load_config(json_text='{"compile_ranges_endpoints": [8, 32], "max_num_batched_tokens": 64}')
    assert config.get_compile_ranges() == [Range(1, 8), Range(9, 32), Range(33, 64)]


def test_compile_ranges_endpoints_and_split_points_that_differ_are_refused() -> None:
    """issue 36: as `level` and `mode` given with different values (docs/configuration.md)."""
    with pytest.raises(ConfigError) as raised:
        from_dict({"compile_ranges_endpoints": [8], "compile_ranges_split_points": [16], "max_num_batched_tokens": 64})
    assert raised.value.field in {"compile_ranges_endpoints", "compile_ranges_split_points"}


@pytest.mark.parametrize("value", ["binary", "unpacked"])
def test_compile_cache_save_format_is_accepted(value: str) -> None:
    """issue 36: vllm/config/compilation.py::CompilationConfig.compile_cache_save_format
    (Literal["binary", "unpacked"], default VLLM_COMPILE_CACHE_SAVE_FORMAT). How vLLM writes
    its cache; aotcache has its own format, so the field must load and change nothing."""
    config = from_dict({"compile_cache_save_format": value, "compile_sizes": [2]})
    assert config.compile_sizes == [2]
    assert load_config(json_text=f'{{"compile_cache_save_format": "{value}"}}').compile_sizes == []


def test_compile_cache_save_format_outside_vllms_values_is_refused() -> None:
    """vllm/config/compilation.py::CompilationConfig.validate_compile_cache_save_format:
    "compile_cache_save_format must be 'binary' or 'unpacked'"."""
    with pytest.raises(ConfigError) as raised:
        from_dict({"compile_cache_save_format": "zip"})
    assert raised.value.field == "compile_cache_save_format"


# ---------------------------------------------------------------------------------------
# None is vLLM's "unset": its fields default to None and are filled in later
# (CompilationConfig._skip_none_validation for level, mode, cudagraph_mode,
# use_inductor_graph_partition; splitting_ops, compile_sizes and compile_ranges_split_points
# are `list | None = None`). A vLLM config dict holds these Nones.
# ---------------------------------------------------------------------------------------

NONE_MEANS_DEFAULT = [
    "splitting_ops",  # set_splitting_ops_for_v1: None -> the attention ops or []; aotcache's default is []
    "compile_sizes",  # post_init_cudagraph_sizes: None -> []
    "compile_ranges_split_points",  # get_compile_ranges / _set_compile_ranges: None -> no point
    "cudagraph_mode",  # the optimization level's default; aotcache's default is NONE
    "mode",  # VllmConfig.__post_init__: VLLM_COMPILE at -O1 and above
    "use_inductor_graph_partition",  # the optimization level's default: False
]


@pytest.mark.parametrize("name", NONE_MEANS_DEFAULT)
@pytest.mark.parametrize("build", [CompilationConfig, lambda **f: from_dict(f)], ids=["constructor", "from_dict"])
def test_none_means_the_default(build: Any, name: str) -> None:
    """issue 36: None for each field is the default, not a ConfigError."""
    default = CompilationConfig()
    config = build(**{name: None})
    assert getattr(config, name) == getattr(default, name)
    assert config.get_compile_ranges() == default.get_compile_ranges()


def test_level_none_beside_mode_is_unset() -> None:
    """vllm/config/compilation.py::CompilationConfig.__post_init__ reads `level` only when it
    is not None ("if self.level is not None"): {"level": None, "mode": 3} is mode 3. aotcache
    refuses it today as a level that differs from mode (the None-is-unset rule, issue 36)."""
    assert from_dict({"level": None, "mode": 3}).mode == CompilationMode.VLLM_COMPILE
    assert from_dict({"level": None}).mode == CompilationConfig().mode


def test_a_vllm_default_compilation_config_dict_loads_with_aotcaches_defaults() -> None:
    """vllm/config/compilation.py: the fields of CompilationConfig() at their declared
    defaults, as a vLLM config dict holds them (issue 36: every None, backend "",
    compile_cache_save_format)."""
    vllm_defaults = {
        "level": None,
        "mode": None,
        "debug_dump_path": None,
        "cache_dir": "",
        "compile_cache_save_format": "binary",
        "backend": "",
        "custom_ops": [],
        "splitting_ops": None,
        "compile_mm_encoder": False,
        "compile_sizes": None,
        "compile_ranges_split_points": None,
        "inductor_compile_config": {},
        "inductor_passes": {},
        "cudagraph_mode": None,
        "cudagraph_num_of_warmups": 0,
        "cudagraph_capture_sizes": None,
        "cudagraph_copy_inputs": False,
        "cudagraph_specialize_lora": True,
        "use_inductor_graph_partition": None,
        "pass_config": {},
        "max_cudagraph_capture_size": None,
        "dynamic_shapes_config": {"type": "backed", "evaluate_guards": False, "assume_32_bit_indexing": False},
        "local_cache_dir": None,
        "compilation_time": 0.0,
    }
    config = from_dict(vllm_defaults)
    default = CompilationConfig()
    for name in ("mode", "backend", "splitting_ops", "compile_sizes", "cudagraph_mode", "use_inductor_graph_partition"):
        assert getattr(config, name) == getattr(default, name), name
    assert config.get_compile_ranges() == default.get_compile_ranges()
    assert config.graph_factors() == default.graph_factors()


@pytest.mark.parametrize("build", [CompilationConfig, lambda **f: from_dict(f)], ids=["constructor", "from_dict"])
def test_empty_backend_is_the_default_backend(build: Any) -> None:
    """issue 36: vllm/config/compilation.py::CompilationConfig.__post_init__: `if self.backend
    == "": self.backend = current_platform.get_compile_backend()`, which is
    Platform.simple_compile_backend, "inductor", on CUDA and CPU. The custom-op default is
    then decided with "inductor" (VllmConfig.__post_init__ appends "none")."""
    config = build(backend="")
    assert config.backend == "inductor"
    assert config.effective_custom_ops() == ("none",)


def test_empty_cache_dir_is_unset() -> None:
    """vllm/config/compilation.py: `cache_dir: str = ""` ("By default, it will use
    model-related information to generate a cache directory")."""
    assert from_dict({"cache_dir": ""}).cache_dir is None


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_a_backend_vllm_refuses_for_piecewise_compilation_is_refused(mode: int) -> None:
    """CompilationConfig.__post_init__: "Invalid backend for piecewise compilation" for
    VLLM_COMPILE and a backend other than "", "eager", "inductor". vLLM takes any torch
    backend for modes 1 and 2; aotcache takes only "inductor" or "eager" in every mode
    (docs/configuration.md: `backend` | `inductor` or `eager`)."""
    with pytest.raises(ConfigError) as raised:
        CompilationConfig(mode=mode, backend="tvm")
    assert raised.value.field == "backend"


# ---------------------------------------------------------------------------------------
# -O: vllm/utils/argparse_utils.py::FlexibleArgumentParser.parse_args turns "-O3", "-O=3"
# and "-O 3" into "--optimization-level 3" (it used to mean -O.mode / -O.level). vLLM's
# OptimizationLevel (vllm/config/vllm.py): O0 no compilation, no cudagraphs; O1-O3
# VLLM_COMPILE ("if self.compilation_config.mode is None: if self.optimization_level > O0:
# mode = VLLM_COMPILE else NONE"). aotcache's -O is --compilation-config's short name
# (aotcache/cli/options.py ConfigJson), read by configuration.sources.parse_json, which
# reads a bare number as the mode: the old meaning.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "mode"),
    [
        pytest.param("0", CompilationMode.NONE, id="O0"),
        pytest.param("1", CompilationMode.VLLM_COMPILE, id="issue-O1"),  # today: STOCK_TORCH_COMPILE
        pytest.param("2", CompilationMode.VLLM_COMPILE, id="issue-O2"),  # today: DYNAMO_TRACE_ONCE
        pytest.param("3", CompilationMode.VLLM_COMPILE, id="O3"),
    ],
)
def test_dash_O_number_is_vllms_optimization_level(flag: str, mode: CompilationMode) -> None:
    assert load_config(json_text=flag).mode == mode


def test_dash_O0_uses_no_cudagraphs() -> None:
    """vllm/config/vllm.py::OPTIMIZATION_LEVEL_00: cudagraph_mode NONE."""
    assert load_config(json_text="0").cudagraph_mode == NONE


def test_a_json_mode_is_still_the_mode() -> None:
    """vLLM's `-cc '{"mode": 1}'` (--compilation-config) keeps meaning the compilation mode."""
    assert load_config(json_text='{"mode": 1}').mode == CompilationMode.STOCK_TORCH_COMPILE


# ---------------------------------------------------------------------------------------
# custom_ops: vllm/config/compilation.py::CompilationConfig.__post_init__ (syntax, and
# `assert count_none + count_all <= 1`), VllmConfig.__post_init__ (appends "none" when
# backend == "inductor" and mode != NONE, else "all") and is_custom_op_enabled.
# ---------------------------------------------------------------------------------------


def test_custom_op_syntax() -> None:
    """vllm tests/compile/test_config.py::test_custom_op."""
    CompilationConfig(custom_ops=["+quant_fp8", "-silu_and_mul"])
    with pytest.raises(ConfigError) as raised:
        CompilationConfig(custom_ops=["quant_fp8"])
    assert raised.value.field == "custom_ops"


@pytest.mark.parametrize(
    ("rules", "name", "enabled"),
    [
        pytest.param(["+rms_norm", "+rms_norm"], "rms_norm", True, id="issue-repeated-enable"),
        pytest.param(["all", "-rms_norm", "-rms_norm"], "rms_norm", False, id="issue-repeated-disable"),
        pytest.param(["none", "+rms_norm", "+rms_norm", "-silu_and_mul"], "silu_and_mul", False, id="issue-mixed"),
    ],
)
def test_a_repeated_custom_op_rule_is_accepted(rules: list[str], name: str, enabled: bool) -> None:
    """issue 36: vLLM checks the syntax and that "all"/"none" appear at most once; a
    repeated "+name" or "-name" is accepted and means what it says once."""
    assert from_dict({"custom_ops": rules}).is_custom_op_enabled(name) is enabled
    assert CompilationConfig(custom_ops=rules).is_custom_op_enabled(name) is enabled


@pytest.mark.parametrize("rules", [["all", "all"], ["none", "none"], ["all", "none"]])
def test_all_or_none_at_most_once(rules: list[str]) -> None:
    """CompilationConfig.__post_init__: assert count_none + count_all <= 1, "Can only specify
    'none' or 'all'"."""
    with pytest.raises(ConfigError) as raised:
        from_dict({"custom_ops": rules})
    assert raised.value.field == "custom_ops"


@pytest.mark.parametrize(
    ("mode", "backend", "default"),
    [
        (CompilationMode.VLLM_COMPILE, "inductor", "none"),
        (CompilationMode.DYNAMO_TRACE_ONCE, "inductor", "none"),
        (CompilationMode.STOCK_TORCH_COMPILE, "inductor", "none"),
        (CompilationMode.NONE, "inductor", "all"),
        (CompilationMode.VLLM_COMPILE, "eager", "all"),
    ],
)
def test_custom_ops_default(mode: CompilationMode, backend: str, default: str) -> None:
    """vllm/config/vllm.py::VllmConfig.__post_init__: `if backend == "inductor" and mode !=
    CompilationMode.NONE: custom_ops.append("none") else: custom_ops.append("all")`."""
    config = CompilationConfig(mode=mode, backend=backend)
    assert config.effective_custom_ops() == (default,)
    assert config.is_custom_op_enabled("rms_norm") is (default == "all")


@pytest.mark.parametrize(
    ("rules", "name", "enabled"),
    [
        (["all"], "rms_norm", True),
        (["all", "-rms_norm"], "rms_norm", False),
        (["all", "-rms_norm"], "silu_and_mul", True),
        (["none"], "rms_norm", False),
        (["none", "+rms_norm"], "rms_norm", True),
        (["none", "+rms_norm"], "silu_and_mul", False),
        (["+quant_fp8"], "quant_fp8", True),  # default "none" (Inductor compiles) + "+quant_fp8"
    ],
)
def test_is_custom_op_enabled(rules: list[str], name: str, enabled: bool) -> None:
    """vllm/config/compilation.py::CompilationConfig.is_custom_op_enabled: with "all", enabled
    unless "-op"; with "none", enabled only with "+op"."""
    assert CompilationConfig(custom_ops=rules).is_custom_op_enabled(name) is enabled


def test_enabling_and_disabling_one_op_is_refused_as_documented() -> None:
    """vLLM accepts ["+rms_norm", "-rms_norm"] in the config and fails later, in
    CustomOp.enabled() ("Cannot enable and disable"). aotcache refuses it when the config is
    built (docs/configuration.md, Custom ops: `+x` with `-x` is a ConfigError)."""
    with pytest.raises(ConfigError) as raised:
        from_dict({"custom_ops": ["+rms_norm", "-rms_norm"]})
    assert raised.value.field == "custom_ops"


# ---------------------------------------------------------------------------------------
# splitting_ops named with an overload: vllm tests/compile/test_config.py::test_should_split
# (vllm/compilation/partition_rules.py::should_split). An OpOverloadPacket node matches
# its "ns::op" name; an OpOverload node matches "ns::op" and "ns::op.<overload>", with
# "<overload>" "default" for the default overload. torch's OpOverload.name() leaves out
# ".default", so aotcache's op_qualname gives "aten::add" for aten.add.default and
# backend/split.py::_matches never sees "aten::add.default".
# ---------------------------------------------------------------------------------------

_PARITY_LIB: list[Any] = []


def _silly_attention() -> Any:
    """vLLM's tests/compile/silly_attention.py registers torch.ops.silly.attention; this is
    the same kind of op (torch.library.Library, as vLLM's direct_register_custom_op)."""
    import torch

    if not _PARITY_LIB:
        lib = torch.library.Library("aotcache_vllm_parity", "DEF")
        lib.define("attention(Tensor q) -> Tensor")
        lib.impl("attention", lambda q: q.clone(), "CompositeExplicitAutograd")
        _PARITY_LIB.append(lib)
    return torch.ops.aotcache_vllm_parity.attention


def _graph_calling(target: Any, nargs: int) -> Any:
    import torch
    from torch import fx

    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_function(target, (x,) * nargs))
    return fx.GraphModule(torch.nn.Module(), graph)


def _target(which: str) -> tuple[Any, int]:
    import torch

    if which == "aten.add.default":
        return torch.ops.aten.add.default, 2
    if which == "silly.attention":
        return _silly_attention(), 1
    return _silly_attention().default, 1


@pytest.mark.parametrize(
    ("node", "splitting_op", "splits"),
    [
        pytest.param("aten.add.default", "aten::add", True, id="overload-node-packet-name"),
        pytest.param("aten.add.default", "aten::add.default", True, id="issue-aten-add-default"),
        pytest.param("aten.add.default", "aten::add.Tensor", False, id="other-overload"),
        pytest.param("silly.attention", "aotcache_vllm_parity::attention", True, id="packet-node-packet-name"),
        pytest.param("silly.attention.default", "aotcache_vllm_parity::attention", True, id="overload-node"),
        pytest.param(
            "silly.attention.default", "aotcache_vllm_parity::attention.default", True, id="issue-ns-op-default"
        ),
    ],
)
def test_should_split(node: str, splitting_op: str, splits: bool) -> None:
    """vllm tests/compile/test_config.py::test_should_split, case by case, through the
    function aotcache's split uses to match a node (unused_splitting_ops and split_graph
    share backend/split.py::_matches)."""
    from aotcache.backend.split import unused_splitting_ops

    target, nargs = _target(node)
    config = CompilationConfig(splitting_ops=[splitting_op])  # the name is accepted as written
    unused = unused_splitting_ops(_graph_calling(target, nargs), config.splitting_ops)
    assert (unused == []) is splits, unused


@pytest.mark.parametrize("name", ["aten::add.default", "vllm::unified_attention.default", "ns::op.default"])
def test_splitting_ops_with_an_overload_are_accepted(name: str) -> None:
    """vLLM's splitting_ops are "namespace::name" or "namespace::name.overload"
    (partition_rules.should_split); the config accepts both."""
    assert len(CompilationConfig(splitting_ops=[name]).splitting_ops) == 1


# ---------------------------------------------------------------------------------------
# The dispatcher: vllm tests/v1/cudagraph/test_cudagraph_dispatch.py::
# TestCudagraphDispatcher.test_dispatcher (capture sizes [1, 8], uniform_decode_query_len 1)
# and vllm/v1/cudagraph_dispatcher.py::CudagraphDispatcher (initialize_cudagraph_keys,
# dispatch: pad, then FULL exact, FULL relaxed to non-uniform, PIECEWISE relaxed, NONE).
# ---------------------------------------------------------------------------------------

_DISPATCH_MODES = [
    pytest.param(FULL, CompilationMode.NONE, id="case0-FULL"),
    pytest.param(FULL_AND_PIECEWISE, CompilationMode.VLLM_COMPILE, id="case1-FULL_AND_PIECEWISE"),
    pytest.param(FULL_DECODE_ONLY, CompilationMode.NONE, id="case2-FULL_DECODE_ONLY"),
    pytest.param(PIECEWISE, CompilationMode.VLLM_COMPILE, id="case3-PIECEWISE"),
]


@pytest.mark.parametrize(("cudagraph_mode", "mode"), _DISPATCH_MODES)
def test_dispatcher(cudagraph_mode: CUDAGraphMode, mode: CompilationMode) -> None:
    dispatcher = _dispatcher(_config(cudagraph_mode=cudagraph_mode, mode=mode, cudagraph_capture_sizes=[1, 8]))
    piecewise = cudagraph_mode in (FULL_AND_PIECEWISE, PIECEWISE)
    assert len(dispatcher.keys[PIECEWISE]) == (2 if piecewise else 0)
    assert len(dispatcher.keys[FULL]) == (0 if cudagraph_mode == PIECEWISE else 2)

    # 1. non-uniform batch, size in cudagraph size list
    exact = _batch(8, False)
    if cudagraph_mode == FULL:
        assert dispatcher.dispatch(exact) == (FULL, exact)
    elif piecewise:
        assert dispatcher.dispatch(exact) == (PIECEWISE, exact)
    else:
        assert dispatcher.dispatch(exact)[0] == NONE

    # 2. uniform decode batch, size in cudagraph size list
    uniform = _batch(8, True)
    if cudagraph_mode == FULL:
        assert dispatcher.dispatch(uniform) == (FULL, uniform.non_uniform)
    elif cudagraph_mode in (FULL_DECODE_ONLY, FULL_AND_PIECEWISE):
        assert dispatcher.dispatch(uniform) == (FULL, uniform)
    else:
        assert dispatcher.dispatch(uniform) == (PIECEWISE, uniform.non_uniform)

    # 3. no key match
    assert dispatcher.dispatch(_batch(15, False)) == (NONE, None)


@pytest.mark.parametrize(("cudagraph_mode", "mode"), _DISPATCH_MODES)
def test_dispatch_pads_to_the_capture_size(cudagraph_mode: CUDAGraphMode, mode: CompilationMode) -> None:
    """CudagraphDispatcher.dispatch pads num_tokens through _bs_to_padded_graph_size before
    looking the key up: 5 tokens dispatch as the graph of 8 wherever 8 has one."""
    dispatcher = _dispatcher(_config(cudagraph_mode=cudagraph_mode, mode=mode, cudagraph_capture_sizes=[1, 8]))
    for uniform in (False, True):
        assert dispatcher.dispatch(_batch(5, uniform)) == dispatcher.dispatch(_batch(8, uniform))


def test_dispatch_past_the_largest_capture_size_runs_without_a_graph() -> None:
    """CudagraphDispatcher.dispatch: `num_tokens > self.max_capture_size` -> NONE."""
    dispatcher = _dispatcher(_config(cudagraph_mode=FULL, cudagraph_capture_sizes=[10, 20]))
    assert dispatcher.dispatch(_batch(20))[0] == FULL
    assert dispatcher.dispatch(_batch(21)) == (NONE, None)


# ---------------------------------------------------------------------------------------
# The padding table: vllm/v1/cudagraph_dispatcher.py::_compute_bs_to_padded_graph_size
# (formerly CompilationConfig.post_init_cudagraph_sizes): for end, start in zip(sizes +
# [max + 1], [0] + sizes): bs == start -> start, else end.
# ---------------------------------------------------------------------------------------


def _vllm_padding_table(sizes: list[int], max_size: int) -> list[int]:
    table = [0] * (max_size + 1)
    for end, start in zip([*sizes, max_size + 1], [0, *sizes], strict=True):
        for bs in range(start, end):
            table[bs] = start if bs == start else end
    return table


@pytest.mark.parametrize(
    ("sizes", "max_size"),
    [([1, 2, 4, 8], 8), ([1, 8], 8), ([10, 20], 20), (None, 512)],
    ids=["1-2-4-8", "1-8", "10-20", "defaults-512"],
)
def test_bs_to_padded_graph_size(sizes: list[int] | None, max_size: int) -> None:
    config = CompilationConfig(cudagraph_capture_sizes=sizes, max_cudagraph_capture_size=max_size)
    expected = _vllm_padding_table(config.cudagraph_capture_sizes or [], max_size)
    table = config.compute_bs_to_padded_graph_size()
    assert len(table) == max_size + 1
    assert table[1:] == expected[1:]


def test_bs_to_padded_graph_size_maps_zero_to_zero() -> None:
    """extra: vLLM's table maps batch size 0 to 0 (the start of the first segment is 0);
    aotcache's gives the smallest capture size."""
    config = CompilationConfig(cudagraph_capture_sizes=[1, 2, 4, 8])
    assert config.compute_bs_to_padded_graph_size()[0] == 0


# ---------------------------------------------------------------------------------------
# adjust_cudagraph_sizes_for_spec_decode: vllm/config/compilation.py (round_up of every
# size to a multiple of uniform_decode_query_len, those past max dropped, else [multiple]
# if it fits, else ValueError; max set to the largest left).
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "max_size", "q", "expected"),
    [
        ([1, 2, 4, 8, 16], 16, 3, [3, 6, 9]),  # round_up(16, 3) = 18 > 16: dropped
        ([1, 2, 3, 4, 8], 8, 2, [2, 4, 8]),
        ([1, 2, 4], 4, 1, [1, 2, 4]),  # multiple_of <= 1: unchanged
        ([1, 2], 2, 2, [2]),
        ([5], 5, 4, [4]),  # "if one valid but would be round_down use that"
    ],
)
def test_adjust_cudagraph_sizes_for_spec_decode(sizes: list[int], max_size: int, q: int, expected: list[int]) -> None:
    config = CompilationConfig(cudagraph_capture_sizes=sizes, max_cudagraph_capture_size=max_size)
    config.adjust_cudagraph_sizes_for_spec_decode(q, 1)
    assert config.cudagraph_capture_sizes == expected
    assert config.max_cudagraph_capture_size == expected[-1]


def test_adjust_cudagraph_sizes_for_spec_decode_with_no_size_left() -> None:
    """vLLM: ValueError "No valid cudagraph sizes after rounding to multiple of 4"."""
    config = CompilationConfig(cudagraph_capture_sizes=[1, 2], max_cudagraph_capture_size=2)
    with pytest.raises(ConfigError):
        config.adjust_cudagraph_sizes_for_spec_decode(4, 1)


# ---------------------------------------------------------------------------------------
# Modes: vllm/config/compilation.py::CUDAGraphMode and CompilationMode, and the combinations
# of tests/v1/cudagraph/test_cudagraph_mode.py::test_cudagraph_compilation_combo
# (combo_cases_2: piecewise cudagraphs need piecewise compilation).
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cudagraph_mode", "decode", "mixed", "separate", "full", "piecewise"),
    [
        (NONE, NONE, NONE, False, False, False),
        (PIECEWISE, PIECEWISE, PIECEWISE, False, False, True),
        (FULL, FULL, FULL, False, True, False),
        (FULL_DECODE_ONLY, FULL, NONE, True, True, False),
        (FULL_AND_PIECEWISE, FULL, PIECEWISE, True, True, True),
    ],
)
def test_cudagraph_mode_helpers(
    cudagraph_mode: CUDAGraphMode,
    decode: CUDAGraphMode,
    mixed: CUDAGraphMode,
    separate: bool,
    full: bool,
    piecewise: bool,
) -> None:
    assert cudagraph_mode.decode_mode() == decode and cudagraph_mode.mixed_mode() == mixed
    assert cudagraph_mode.separate_routine() is separate
    assert cudagraph_mode.has_full_cudagraphs() is full
    assert cudagraph_mode.has_piecewise_cudagraphs() is piecewise
    assert cudagraph_mode.requires_piecewise_compilation() is piecewise


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, CompilationMode.NONE),
        ("STOCK_TORCH_COMPILE", CompilationMode.STOCK_TORCH_COMPILE),
        ("dynamo_trace_once", CompilationMode.DYNAMO_TRACE_ONCE),
        (3, CompilationMode.VLLM_COMPILE),
    ],
)
def test_mode_parsed_from_names_and_ints(value: Any, expected: CompilationMode) -> None:
    """CompilationConfig.validate_mode_before: "Accepts both integers (0-3) and string names"."""
    assert CompilationConfig(mode=value).mode == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("full_and_piecewise", FULL_AND_PIECEWISE, id="name-any-case"),
        pytest.param(0, NONE, id="extra-int-0"),
        pytest.param(2, FULL, id="extra-int-2"),
        pytest.param(1, PIECEWISE, id="extra-int-1"),
    ],
)
def test_cudagraph_mode_parsed_from_names_and_values(value: Any, expected: CUDAGraphMode) -> None:
    """CompilationConfig.validate_cudagraph_mode_before takes a string name (any case); any
    other input goes to pydantic's enum validation, which takes the enum's values (0, 1, 2).
    extra: aotcache's parse_enum takes ints only for IntEnums, so 0-2 are refused."""
    config = from_dict({"cudagraph_mode": value, "splitting_ops": [ATTN]})
    assert config.cudagraph_mode == expected


@pytest.mark.parametrize(
    ("cudagraph_mode", "mode", "supported"),
    [
        ("FULL", 0, True),  # no compilation + full cudagraph
        ("FULL", 3, True),  # piecewise compilation + full cudagraph
        ("PIECEWISE", 0, False),  # no compilation + piecewise cudagraph
        ("PIECEWISE", 3, True),
        ("FULL_AND_PIECEWISE", 0, False),  # piecewise cudagraph not supported without piecewise compilation
        ("FULL_AND_PIECEWISE", 3, True),
        ("FULL_DECODE_ONLY", 0, True),
        ("FULL_DECODE_ONLY", 3, True),
        ("NONE", 0, True),
        ("NONE", 3, True),
    ],
)
def test_cudagraph_compilation_combo(cudagraph_mode: str, mode: int, supported: bool) -> None:
    fields = {"cudagraph_mode": cudagraph_mode, "mode": mode, "splitting_ops": [ATTN]}
    if supported:
        assert CompilationConfig(**fields).cudagraph_mode == CUDAGraphMode[cudagraph_mode]
    else:
        with pytest.raises(ConfigError) as raised:
            CompilationConfig(**fields)
        assert raised.value.field == "cudagraph_mode"


# ---------------------------------------------------------------------------------------
# Where aotcache deliberately differs, as docs/configuration.md says ("Every invalid value
# (a size of 0 or above max_num_batched_tokens, a split point out of range, an unknown
# field, a wrong type, a duplicate size) raises ConfigError ... nothing else is changed or
# dropped"): vLLM de-duplicates, filters, clamps or drops; aotcache refuses, naming the field.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        # post_init_cudagraph_sizes: compile_sizes = list(set(compile_sizes))
        pytest.param({"compile_sizes": [4, 1, 4]}, "compile_sizes", id="duplicate-compile-size"),
        # _set_cudagraph_sizes: dedup_sizes = list(set(cudagraph_capture_sizes))
        pytest.param({"cudagraph_capture_sizes": [1, 2, 2]}, "cudagraph_capture_sizes", id="duplicate-capture-size"),
        # test_cudagraph_sizes_post_init row "limited by the max_tokens": [1, 2, 4, 15] with 8 tokens -> 4
        pytest.param(
            {"cudagraph_capture_sizes": [1, 2, 4, 15], "max_num_batched_tokens": 8},
            "cudagraph_capture_sizes",
            id="capture-size-past-max-tokens",
        ),
        # _set_cudagraph_sizes: max_cudagraph_capture_size = min(max_num_tokens, ...)
        pytest.param(
            {"max_cudagraph_capture_size": 2048, "max_num_batched_tokens": 257},
            "max_cudagraph_capture_size",
            id="max-capture-size-past-max-tokens",
        ),
        # _set_compile_ranges: a point >= max_num_batched_tokens is dropped
        pytest.param(
            {"compile_ranges_split_points": [64], "max_num_batched_tokens": 64},
            "compile_ranges_split_points",
            id="split-point-at-max",
        ),
        # _set_compile_ranges: assert x > 0 (vLLM refuses too)
        pytest.param({"compile_ranges_split_points": [0]}, "compile_ranges_split_points", id="split-point-0"),
        pytest.param(
            {"compile_sizes": [65], "max_num_batched_tokens": 64}, "compile_sizes", id="compile-size-past-max"
        ),
    ],
)
def test_documented_refusals(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_dict(fields)
    assert raised.value.field == field


def test_level_and_mode_that_differ_are_refused_as_documented() -> None:
    """vLLM: "If both level and mode are given, only mode will be used" (a warning);
    docs/configuration.md: `level` and `mode` both given and different is a ConfigError."""
    with pytest.raises(ConfigError) as raised:
        from_dict({"level": 3, "mode": 0})
    assert raised.value.field == "level"


# ---------------------------------------------------------------------------------------
# extra: newest vLLM's default capture sizes (vllm/config/vllm.py::_set_cudagraph_sizes):
# "ensure max_num_tokens is captured if within max capture size": when
# max_num_batched_tokens <= the capture maximum, max_num_batched_tokens itself is appended
# (tests/compile/test_config.py::test_cudagraph_sizes_post_init row (None, 2048, ..., 257)
# -> 257). Older vLLM did not; aotcache stops at the last default stride. vLLM's default
# maximum is min(max_num_seqs * 2, 512); aotcache's is 512, i.e. vLLM with max_num_seqs >= 256.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tokens", "expected_max"), [(100, 100), (257, 257)], ids=["extra-100", "extra-257"])
def test_default_capture_sizes_reach_max_num_batched_tokens(tokens: int, expected_max: int) -> None:
    config = CompilationConfig(max_num_batched_tokens=tokens, cudagraph_mode="FULL")
    assert config.max_cudagraph_capture_size == expected_max
    assert (config.cudagraph_capture_sizes or [])[-1] == expected_max
