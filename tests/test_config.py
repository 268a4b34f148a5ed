from __future__ import annotations

import json
from typing import Any

import pytest

from aotcache.configuration import CompilationConfig, Range, default_capture_sizes, from_dict, load_config, parse_json
from aotcache.errors import ConfigError
from aotcache.modes import CompilationMode, CUDAGraphMode


def _keyed(config: CompilationConfig) -> str:
    """The hash of the config's part of the lookup key: the one path a config is hashed by."""
    from aotcache.key.factors import lookup_hash
    from aotcache.key.lookup import config_factors

    return lookup_hash(config_factors(config))


@pytest.mark.parametrize("value", [0, 1, 2, 3, "none", "STOCK_TORCH_COMPILE", "dynamo_trace_once", "Vllm_Compile", "3"])
def test_mode_accepts_ints_and_names(value: object) -> None:
    assert isinstance(CompilationConfig(mode=value).mode, CompilationMode)  # type: ignore[arg-type]


def test_mode_names_and_ints_agree() -> None:
    assert CompilationConfig(mode=2).mode == CompilationConfig(mode="dynamo_trace_once").mode == CompilationMode(2)


@pytest.mark.parametrize("value", [4, -1, "fast", True, 2.0])  # None is vLLM's "unset": the default
def test_bad_mode_lists_valid_values(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        CompilationConfig(mode=value)  # type: ignore[arg-type]
    message = str(info.value)
    assert "mode" in message and "VLLM_COMPILE" in message and "0-3" in message
    assert info.value.field == "mode"


def test_compile_ranges_sorted_deduplicated_inclusive() -> None:
    config = CompilationConfig(compile_ranges_split_points=[32, 8, 32], max_num_batched_tokens=64)
    assert config.compile_ranges_split_points == [8, 32]
    assert config.get_compile_ranges() == [Range(1, 8), Range(9, 32), Range(33, 64)]


def test_no_split_points_is_one_range() -> None:
    assert CompilationConfig(max_num_batched_tokens=16).get_compile_ranges() == [Range(1, 16)]


def test_range_contains_both_ends() -> None:
    r = Range(9, 32)
    assert 9 in r and 32 in r and 8 not in r and 33 not in r


def test_compile_units_add_single_sizes_not_already_ranges() -> None:
    config = CompilationConfig(compile_sizes=[1, 4], compile_ranges_split_points=[1, 8], max_num_batched_tokens=16)
    # a split point of 1 is dropped, as vLLM drops it; sizes 1 and 4 get units of their own
    assert config.get_compile_units() == [Range(1, 8), Range(9, 16), Range(1, 1), Range(4, 4)]
    ranged = CompilationConfig(compile_sizes=[9], compile_ranges_split_points=[8, 9], max_num_batched_tokens=16)
    assert ranged.get_compile_units() == [Range(1, 8), Range(9, 9), Range(10, 16)]  # [9, 9] is a range already


@pytest.mark.parametrize("points", [[0], [64], [65], [-3]])
def test_split_point_out_of_range(points: list[int]) -> None:
    with pytest.raises(ConfigError, match="compile_ranges_split_points"):
        CompilationConfig(compile_ranges_split_points=points, max_num_batched_tokens=64)


@pytest.mark.parametrize("sizes", [[0], [-1], [65]])
def test_compile_size_out_of_range(sizes: list[int]) -> None:
    with pytest.raises(ConfigError, match="compile_sizes") as info:
        CompilationConfig(compile_sizes=sizes, max_num_batched_tokens=64)
    assert "max_num_batched_tokens (64)" in str(info.value)


def test_compile_sizes_sorted_and_duplicates_rejected() -> None:
    assert CompilationConfig(compile_sizes=[8, 1, 4], max_num_batched_tokens=16).compile_sizes == [1, 4, 8]
    with pytest.raises(ConfigError, match=r"\[4\] appear more than once"):
        CompilationConfig(compile_sizes=[4, 1, 4], max_num_batched_tokens=16)


def test_compile_sizes_alias_expands_capture_sizes() -> None:
    graphs = {"cudagraph_mode": "FULL", "cudagraph_capture_sizes": [4, 1, 2]}
    config = CompilationConfig(compile_sizes="cudagraph_capture_sizes", **graphs)  # type: ignore[arg-type]
    assert config.compile_sizes == [1, 2, 4]
    assert CompilationConfig(compile_sizes=["cudagraph_capture_sizes", 16], **graphs).compile_sizes == [1, 2, 4, 16]
    # without graphs no capture size is in use, as in vLLM: the alias is no size
    assert CompilationConfig(compile_sizes="cudagraph_capture_sizes").compile_sizes == []  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="compile_sizes"):
        CompilationConfig(compile_sizes="all")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_num_batched_tokens", 0),
        ("max_num_batched_tokens", "64"),
        ("max_num_batched_tokens", True),
        ("compile_sizes", [1, "2"]),
        ("compile_sizes", 3),
        ("splitting_ops", ["attention"]),
        ("splitting_ops", [3]),
        ("backend", "tvm"),
        ("inductor_compile_config", {"x": object()}),
        ("inductor_compile_config", [1]),
        ("cudagraph_mode", "SOMETIMES"),
        ("cudagraph_num_of_warmups", -1),
        ("cudagraph_copy_inputs", "yes"),
        ("cache_dir", 3),
    ],
)
def test_each_invalid_value_names_field_value_and_allowed(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict({field: value})
    assert info.value.field == field
    # the message names the offending value (for a list: the offending element)
    offending = [value, *value] if isinstance(value, list) else [value]
    assert any(repr(v) in str(info.value) for v in offending), str(info.value)
    assert info.value.allowed


def test_unknown_field_is_an_error_listing_valid_fields() -> None:
    with pytest.raises(ConfigError, match="unknown field; valid fields are mode, compile_sizes"):
        from_dict({"compile_size": [1]})


def test_bs_to_padded_graph_size() -> None:
    config = CompilationConfig(cudagraph_capture_sizes=[1, 2, 4, 8], max_num_batched_tokens=64)
    assert config.compute_bs_to_padded_graph_size() == [0, 1, 2, 4, 4, 8, 8, 8, 8]  # 0 pads to 0, as in vLLM


def test_bs_to_padded_graph_size_default_sizes() -> None:
    config = CompilationConfig(max_num_batched_tokens=8192)
    table = config.compute_bs_to_padded_graph_size()
    assert len(table) == 513 and table[3] == 4 and table[9] == 16 and table[257] == 272 and table[512] == 512
    sizes = config.cudagraph_capture_sizes or []
    for bs, padded in enumerate(table[1:], start=1):
        assert padded == min(s for s in sizes if s >= bs)


def test_default_capture_sizes_follow_vllm() -> None:
    sizes = default_capture_sizes(512)
    assert sizes[:5] == [1, 2, 4, 8, 16] and 256 in sizes and 264 not in sizes and 272 in sizes and sizes[-1] == 512
    assert default_capture_sizes(20) == [1, 2, 4, 8, 16]
    # current vLLM captures the largest batch too, when it is within the capture maximum
    assert CompilationConfig(max_num_batched_tokens=100).max_cudagraph_capture_size == 100


def test_capture_sizes_validation() -> None:
    with pytest.raises(ConfigError, match="cudagraph_capture_sizes"):
        CompilationConfig(cudagraph_capture_sizes=[1, 128], max_num_batched_tokens=64)
    with pytest.raises(ConfigError, match="appear more than once"):
        CompilationConfig(cudagraph_capture_sizes=[1, 2, 2])
    assert CompilationConfig(cudagraph_capture_sizes=[8, 1, 2]).cudagraph_capture_sizes == [1, 2, 8]
    with pytest.raises(ConfigError, match="max_cudagraph_capture_size"):
        CompilationConfig(cudagraph_capture_sizes=[1, 16], max_cudagraph_capture_size=8)


def test_piecewise_cudagraphs_need_splitting_ops_and_vllm_mode() -> None:
    with pytest.raises(ConfigError, match="splitting_ops"):
        CompilationConfig(cudagraph_mode="PIECEWISE")
    with pytest.raises(ConfigError, match="VLLM_COMPILE"):
        CompilationConfig(cudagraph_mode="FULL_AND_PIECEWISE", mode=2, splitting_ops=["a::b"])
    assert CompilationConfig(cudagraph_mode="full").cudagraph_mode == CUDAGraphMode.FULL


def test_hash_ignores_non_graph_fields_and_tracks_graph_fields() -> None:
    base = CompilationConfig(compile_sizes=[1, 2], max_num_batched_tokens=64)
    same = base.replace(cache_dir="/elsewhere", debug_dump_path="/tmp/dump", cudagraph_num_of_warmups=3)
    assert _keyed(base) == _keyed(same)
    for change in (
        {"compile_sizes": [1, 4]},
        {"max_num_batched_tokens": 128},
        {"backend": "eager"},
        {"splitting_ops": ["a::b"]},
        {"inductor_compile_config": {"max_autotune": True}},
    ):
        assert _keyed(base.replace(**change)) != _keyed(base), change


def test_sources_merge_in_order(tmp_path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.aotcache]\ncompile_sizes = [1, 2]\nmax_num_batched_tokens = 64\nbackend = "eager"\n')
    toml = tmp_path / "aot.toml"
    toml.write_text("compile_sizes = [4]\n")
    config = load_config(
        base={"max_num_batched_tokens": 32, "splitting_ops": ["a::b"]},
        pyproject=pyproject,
        config_file=toml,
        json_text=json.dumps({"compile_ranges_split_points": [16]}),
        overrides={"backend": "inductor", "compile_sizes": None},
    )
    assert config.max_num_batched_tokens == 64  # pyproject over base
    assert config.compile_sizes == [4]  # file over pyproject
    assert config.compile_ranges_split_points == [16]  # JSON
    assert config.backend == "inductor"  # keyword overrides win; None means unset
    assert config.splitting_ops == ["a::b"]  # base kept where nothing overrides


def test_pyproject_discovery(tmp_path, monkeypatch) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.aotcache]\nmax_num_batched_tokens = 99\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    assert load_config(pyproject=True).max_num_batched_tokens == 99


def test_json_forms_and_errors() -> None:
    assert parse_json("3") == {"mode": "VLLM_COMPILE"}  # vLLM's -O: the optimization level
    assert parse_json("1") == {"mode": "VLLM_COMPILE"} and parse_json("0") == {"mode": "NONE"}
    with pytest.raises(ConfigError, match="optimization level 0-3"):
        parse_json("4")
    with pytest.raises(ConfigError, match="valid JSON"):
        parse_json("{compile_sizes: [1]}")
    with pytest.raises(ConfigError, match="JSON object"):
        parse_json("[1, 2]")


def test_bad_toml_is_a_config_error(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("compile_sizes = [1,\n")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_config(config_file=bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(config_file=tmp_path / "missing.toml")


def test_round_trip_through_dict() -> None:
    config = CompilationConfig(
        compile_sizes=[1, 2],
        compile_ranges_split_points=[8],
        max_num_batched_tokens=32,
        splitting_ops=["x::y"],
        cudagraph_mode="FULL_DECODE_ONLY",
    )
    assert from_dict(config.to_dict()) == config


def test_level_is_vllms_old_name_for_mode() -> None:
    assert from_dict({"level": 3}) == from_dict({"mode": 3})
    assert from_dict({"level": 0, "mode": 0}).mode == 0
    with pytest.raises(ConfigError) as raised:
        from_dict({"level": 3, "mode": 0})
    assert "level" in str(raised.value) and "mode" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "unused", "used"),
    [
        ("pass_config", {}, {"fuse_norm_quant": True}),
    ],
)
def test_a_vllm_field_not_implemented_yet_loads_at_its_unused_value_and_is_refused_otherwise(
    name: str, unused: Any, used: Any
) -> None:
    """A config copied from vLLM loads when the field means nothing there; any other
    value is refused by name, never dropped (the entry would not be what was asked)."""
    assert from_dict({name: unused, "compile_sizes": [2]}) == from_dict({"compile_sizes": [2]})
    with pytest.raises(ConfigError) as raised:
        from_dict({name: used})
    assert name in str(raised.value) and "does not implement" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "unused", "given"), [("local_cache_dir", None, "/x"), ("compilation_time", 0.0, 12.5)]
)
def test_fields_aotcache_fills_in_load_at_their_initial_value_and_are_refused_otherwise(
    name: str, unused: Any, given: Any
) -> None:
    config = from_dict({name: unused})
    assert getattr(config, name) == unused and name not in config.to_dict()  # never in a key or manifest
    with pytest.raises(ConfigError, match=f"{name}.*fills it in"):
        from_dict({name: given})


def test_compile_mm_encoder_is_a_bool_left_out_of_the_key() -> None:
    """It decides whether an encoder part compiles at all, never what a part compiles to."""
    assert from_dict({"compile_mm_encoder": True}).compile_mm_encoder is True
    assert "compile_mm_encoder" not in from_dict({}).graph_factors()
    with pytest.raises(ConfigError, match="compile_mm_encoder"):
        from_dict({"compile_mm_encoder": "yes"})


@pytest.mark.parametrize(
    ("rules", "allowed"),
    [
        ("all", 'a list of "all", "none", "+name" or "-name"'),
        (["all", "none"], '"all" or "none" at most once, and not both'),
        (["all", "all"], '"all" or "none" at most once, and not both'),
        (["+rms_norm", "-rms_norm"], "rms_norm enabled (+) or disabled (-), not both"),
        (["rms_norm"], '"all", "none", "+name" or "-name"'),
        (["+rms-norm"], '"all", "none", "+name" or "-name"'),
    ],
)
def test_custom_ops_take_vllms_grammar_only(rules: Any, allowed: str) -> None:
    with pytest.raises(ConfigError, match="custom_ops") as raised:
        from_dict({"custom_ops": rules})
    assert allowed in str(raised.value)


def test_custom_ops_default_and_precedence_are_vllms() -> None:
    assert from_dict({}).effective_custom_ops() == ("none",)  # Inductor compiles: native ops, which it fuses
    assert from_dict({"backend": "eager"}).effective_custom_ops() == ("all",)
    assert from_dict({"mode": "NONE"}).effective_custom_ops() == ("all",)
    assert from_dict({"custom_ops": ["+rms_norm"]}).is_custom_op_enabled("rms_norm")
    assert not from_dict({"custom_ops": ["+rms_norm"]}).is_custom_op_enabled("silu_and_mul")
    assert not from_dict({"custom_ops": ["all", "-rms_norm"]}).is_custom_op_enabled("rms_norm")
    assert from_dict({"custom_ops": ["all", "-rms_norm"]}).is_custom_op_enabled("silu_and_mul")
    assert _keyed(from_dict({"custom_ops": ["none"]})) != _keyed(from_dict({"custom_ops": ["all"]}))


@pytest.mark.parametrize(
    ("passes", "field", "allowed"),
    [
        ({"post_grad_pass": "pkg:p"}, "inductor_passes.post_grad_pass", "an Inductor pass slot: one of"),
        ({"post_grad_custom_post_pass": "fuse"}, "inductor_passes.post_grad_custom_post_pass", '"pkg.module:attr"'),
        ({"post_grad_custom_post_pass": 3}, "inductor_passes.post_grad_custom_post_pass", '"pkg.module:attr"'),
        (["pkg:p"], "inductor_passes", "a table of Inductor pass slot"),
    ],
)
def test_inductor_passes_name_a_slot_and_a_target(passes: Any, field: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_dict({"inductor_passes": passes})
    assert raised.value.field == field and allowed in str(raised.value)


def test_an_inductor_pass_may_be_named_as_vllm_names_it() -> None:
    from aotcache.configuration import pass_target

    config = from_dict({"inductor_passes": {"post_grad_custom_post_pass": "pkg.passes.fuse"}})
    assert pass_target(config.inductor_passes["post_grad_custom_post_pass"]) == "pkg.passes:fuse"
    assert pass_target("src/passes.py:fuse") == "src/passes.py:fuse"
    assert from_dict({"custom_ops": ["+b", "-a"]}) == from_dict({"custom_ops": ["-a", "+b"]})  # order means nothing


def test_spec_decode_rounds_capture_sizes_up_to_the_query_length_as_vllm_does() -> None:
    config = from_dict({"cudagraph_capture_sizes": [1, 2, 4, 8, 16], "max_num_batched_tokens": 64})
    config.adjust_cudagraph_sizes_for_spec_decode(3, 1)
    assert config.cudagraph_capture_sizes == [3, 6, 9] and config.max_cudagraph_capture_size == 9  # 18 > 16: dropped
    assert config.uniform_decode_query_len == 3  # what the dispatcher's uniform-decode batches hold
    assert config.replace(max_num_batched_tokens=64).cudagraph_capture_sizes == [3, 6, 9]
    unchanged = from_dict({"cudagraph_capture_sizes": [1, 2, 4], "max_num_batched_tokens": 64})
    unchanged.adjust_cudagraph_sizes_for_spec_decode(1, 8)  # no speculative tokens: nothing to round
    assert unchanged.cudagraph_capture_sizes == [1, 2, 4]
    small = from_dict({"cudagraph_capture_sizes": [1, 2], "max_num_batched_tokens": 64})
    small.adjust_cudagraph_sizes_for_spec_decode(2, 1)
    assert small.cudagraph_capture_sizes == [2] and small.max_cudagraph_capture_size == 2
    aliased = from_dict(
        {"cudagraph_capture_sizes": [1, 4], "compile_sizes": "cudagraph_capture_sizes", "cudagraph_mode": "FULL"}
    )
    aliased.adjust_cudagraph_sizes_for_spec_decode(4, 1)
    assert aliased.compile_sizes == [4] == aliased.cudagraph_capture_sizes
    with pytest.raises(ConfigError, match="uniform_decode_query_len"):
        from_dict(
            {"cudagraph_capture_sizes": [1, 2], "max_num_batched_tokens": 64}
        ).adjust_cudagraph_sizes_for_spec_decode(4, 1)
    with pytest.raises(ConfigError, match="tensor_parallel_size"):
        from_dict({}).adjust_cudagraph_sizes_for_spec_decode(2, 0)


@pytest.mark.parametrize(
    ("value", "field", "allowed"),
    [
        ({"type": "dynamic"}, "dynamic_shapes_config.type", "one of backed, unbacked, backed_size_oblivious"),
        ({"evaluate_guards": "yes"}, "dynamic_shapes_config.evaluate_guards", "true or false"),
        ({"size": 3}, "dynamic_shapes_config.size", "unknown field"),
        ({"type": "unbacked", "evaluate_guards": True}, "dynamic_shapes_config.evaluate_guards", "it adds no guards"),
        ([1], "dynamic_shapes_config", "a table"),
    ],
)
def test_dynamic_shapes_config_takes_vllms_fields(value: Any, field: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_dict({"dynamic_shapes_config": value})
    assert raised.value.field == field and allowed in str(raised.value)


def test_dynamic_shapes_config_is_filled_in_and_keyed() -> None:
    defaults = {"type": "backed", "evaluate_guards": False, "assume_32_bit_indexing": False}
    assert (
        from_dict({}).dynamic_shapes_config
        == defaults
        == from_dict({"dynamic_shapes_config": None}).dynamic_shapes_config
    )
    assert from_dict({"dynamic_shapes_config": {"type": "UNBACKED"}}).dynamic_shapes_config["type"] == "unbacked"
    unbacked = from_dict({"dynamic_shapes_config": {"type": "unbacked"}})
    assert _keyed(unbacked) != _keyed(from_dict({}))
    assert from_dict(unbacked.to_dict()) == unbacked


def test_a_misspelt_field_names_where_it_came_from_and_the_nearest_field(tmp_path) -> None:
    """`compile_sizez` in pyproject's [tool.aotcache]: the error names the file and the
    table, and the hint says which field was meant (as the CLI prints it, one line)."""
    (tmp_path / "pyproject.toml").write_text("[tool.aotcache]\ncompile_sizez = [1, 2]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(pyproject=tmp_path / "pyproject.toml")
    line = caught.value.one_line()
    assert "invalid compile_sizez=[1, 2]: unknown field in " in line, line
    assert f"{tmp_path / 'pyproject.toml'} [tool.aotcache]" in line and "(did you mean compile_sizes?)" in line, line
    with pytest.raises(ConfigError) as caught:
        load_config(json_text='{"max_num_batched_token": 8}')
    assert "in the JSON config" in str(caught.value) and caught.value.hint == "did you mean max_num_batched_tokens?"
    with pytest.raises(ConfigError) as caught:
        from_dict({"nothing_like_a_field": 1})
    assert caught.value.hint is None  # no near name: no guess


def test_a_config_file_that_is_not_there_says_so(tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_file=tmp_path / "nosuch.toml")
    assert caught.value.one_line() == (
        f"invalid config='{tmp_path / 'nosuch.toml'}': no such file (check the path given to --config)"
    )
