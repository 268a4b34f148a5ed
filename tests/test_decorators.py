"""@support_compile and the four modes, mirroring vLLM's decorator semantics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pytest
import torch
from _support import TINY_CONFIG, last_json, run_cli, run_python
from torch import nn

import aotcache
from aotcache.configuration import current_config
from aotcache.errors import ConfigError, DispatchError, EntryNotFound
from examples import tiny_llama

EAGER = {**TINY_CONFIG, "backend": "eager"}


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4))

    def forward(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        out = x * self.weight
        return out if bias is None else out + bias


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    aotcache.counters.reset()


def _decorate(**kwargs: object) -> type:
    return aotcache.support_compile(**kwargs)(type("Model", (Scale,), {}))


@pytest.mark.parametrize(
    ("dims", "expected"),
    [
        (0, {"x": 0}),
        ({"x": 0}, {"x": 0}),
        ({"x": [0]}, {"x": [0]}),
        ({"x": [-2]}, {"x": [-2]}),
        ({"x": {0: "tokens"}}, {"x": {0: "tokens"}}),
    ],
)
def test_dynamic_arg_dims_forms(dims: object, expected: dict, tmp_path) -> None:
    dims = {"x": dims} if isinstance(dims, int) else dims
    cls = _decorate(dynamic_arg_dims=dims)
    assert cls._aotcache_dynamic_arg_dims == expected
    model = cls(compilation_config={**EAGER, "splitting_ops": [], "cache_dir": str(tmp_path)})
    for size in (3, 1, 17):
        x = torch.randn(size, 4)
        assert torch.allclose(model(x), x * model.weight)
    assert aotcache.counters.traces == 1 and aotcache.counters.entries_saved == 1


def test_dims_inferred_from_annotations() -> None:
    assert aotcache.support_compile(type("M", (Scale,), {}))._aotcache_dynamic_arg_dims == {"x": 0, "bias": 0}

    class Strings(nn.Module):
        def forward(self, ids: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
            return ids

    assert aotcache.support_compile(Strings)._aotcache_dynamic_arg_dims == {"ids": 0}


def test_decoration_errors() -> None:
    class NoTensors(nn.Module):
        def forward(self, x: int) -> int:
            return x

    with pytest.raises(ConfigError, match=r"none found in the forward method of .*NoTensors"):
        aotcache.support_compile(NoTensors)

    class Unresolvable(nn.Module):
        def forward(self, x: NoSuchType) -> torch.Tensor:  # type: ignore[name-defined] # noqa: F821
            return x

    # Said, not swallowed: inferring dims from annotations that do not resolve fails by name.
    with pytest.raises(ConfigError, match=r"annotations of .*Unresolvable.forward cannot be resolved.*NoSuchType"):
        aotcache.support_compile(Unresolvable)
    with pytest.raises(ValueError, match="argument y not found"):
        _decorate(dynamic_arg_dims={"y": 0})
    with pytest.raises(ConfigError, match="an int, a list of ints"):
        _decorate(dynamic_arg_dims={"x": "zero"})
    with pytest.raises(ConfigError, match="mark_unbacked_dims"):
        _decorate(mark_unbacked_dims={"nope": 0})
    with pytest.raises(TypeError, match="decorated class should have a forward method"):
        aotcache.support_compile(type("NoForward", (), {}))


def test_none_argument_must_stay_none(tmp_path) -> None:
    model = _decorate()(compilation_config={**EAGER, "splitting_ops": [], "cache_dir": str(tmp_path)})
    x = torch.randn(3, 4)
    model(x, None)
    with pytest.raises(DispatchError, match="'bias' was None when the entry was built; it must stay None"):
        model(x, torch.randn(3, 4))


def test_unsupported_argument_type_with_dynamic_dims(tmp_path) -> None:
    model = _decorate(dynamic_arg_dims={"x": 0, "bias": 0})(
        compilation_config={**EAGER, "splitting_ops": [], "cache_dir": str(tmp_path)}
    )
    with pytest.raises(ConfigError, match="argument 'bias' is a list, not a tensor"):
        model(torch.randn(3, 4), [1.0, 2.0])


def test_enable_if(tmp_path) -> None:
    config = {**EAGER, "splitting_ops": [], "cache_dir": str(tmp_path)}
    off = _decorate(enable_if=lambda c: c.backend != "eager")(compilation_config=config)
    off(torch.randn(3, 4))
    assert aotcache.counters.models_seen == 0 and aotcache.counters.traces == 0
    on = _decorate(enable_if=lambda c: c.backend == "eager")(compilation_config=config)
    on(torch.randn(3, 4))
    assert aotcache.counters.models_seen == 1 and aotcache.counters.traces == 1


def test_ignore_compile_with_inheritance(tmp_path) -> None:
    Parent = _decorate()

    @aotcache.ignore_compile
    class Child(Parent):
        pass

    class GrandChild(Child):  # inherits the ignore
        pass

    @aotcache.support_compile
    class Redecorated(Child):  # re-decorated: compiles again
        pass

    config = {**EAGER, "splitting_ops": [], "cache_dir": str(tmp_path)}
    for cls, traces in ((Child, 0), (GrandChild, 0), (Redecorated, 1), (Parent, 2)):
        model = cls(compilation_config=config)
        x = torch.randn(5, 4)
        assert torch.allclose(model(x), x * model.weight)
        assert aotcache.counters.traces == traces, cls.__name__


@pytest.mark.parametrize("mode", ["NONE", "STOCK_TORCH_COMPILE"])
def test_modes_that_do_not_compile(mode: str, tmp_path) -> None:
    model = _decorate()(compilation_config={**EAGER, "mode": mode, "splitting_ops": [], "cache_dir": str(tmp_path)})
    x = torch.randn(3, 4)
    assert torch.allclose(model(x), x * model.weight)
    assert aotcache.counters.traces == 0 and aotcache.counters.models_seen == 0
    assert not (tmp_path / "entries").exists()


def test_dynamo_trace_once_traces_once_and_matches_eager() -> None:
    Served = aotcache.support_compile(dynamic_arg_dims={"input_ids": 0})(type("Served", (tiny_llama.TinyLlama,), {}))
    torch.manual_seed(0)
    with aotcache.config(TINY_CONFIG, mode="DYNAMO_TRACE_ONCE"):
        model = Served(layers=2).eval()
    for size in (5, 9, 2, 32, 5):
        ids = tiny_llama.example_inputs(size)[0]
        with torch.no_grad():
            expected = nn.Module.__call__(model, ids)
        assert (model(ids) - expected).abs().max() <= 1e-4
    assert aotcache.counters.traces == 1 and aotcache.counters.compiles == 1  # no size 1: no specialised compile


def test_vllm_compile_compiles_saves_then_loads(tmp_path) -> None:
    config = {**EAGER, "splitting_ops": [], "cache_dir": str(tmp_path)}
    first = _decorate()(compilation_config=config)
    first(torch.randn(3, 4))
    assert aotcache.counters.traces == 1 and aotcache.counters.entries_saved == 1
    assert aotcache.counters.misses["not-found"] == 1
    second = type(first)(compilation_config=config)
    second(torch.randn(6, 4))
    assert aotcache.counters.traces == 1 and aotcache.counters.entries_loaded == 2
    # vLLM's filled-in fields: the entry's directory, and the seconds spent compiling
    built, loaded = first._aotcache.config, second._aotcache.config
    assert built.local_cache_dir == loaded.local_cache_dir
    assert Path(built.local_cache_dir).parent == tmp_path / "entries"
    assert built.compilation_time > 0 and loaded.compilation_time == 0


def test_disable_cache_compiles_without_reading_or_writing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AOTCACHE_DISABLE_CACHE", "1")
    model = _decorate()(compilation_config={**EAGER, "splitting_ops": [], "cache_dir": str(tmp_path / "c")})
    x = torch.randn(3, 4)
    assert torch.allclose(model(x), x * model.weight)
    assert aotcache.counters.traces == 1
    assert not (tmp_path / "c").exists()


def test_force_load_with_empty_cache_names_key_and_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AOTCACHE_FORCE_LOAD", "1")
    model = _decorate()(compilation_config={**EAGER, "splitting_ops": [], "cache_dir": str(tmp_path)})
    with pytest.raises(EntryNotFound) as info:
        model(torch.randn(3, 4))
    message = str(info.value)
    assert "lookup key" in message and str(tmp_path) in message
    assert aotcache.counters.traces == 0


def test_config_from_argument_context_and_defaults(tmp_path, monkeypatch) -> None:
    cls = _decorate()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.aotcache]\nmax_num_batched_tokens = 77\n")
    assert cls()._aotcache.config.max_num_batched_tokens == 77
    monkeypatch.setenv("AOTCACHE_COMPILATION_CONFIG", json.dumps({"max_num_batched_tokens": 66}))
    assert current_config().max_num_batched_tokens == 66
    with aotcache.config(max_num_batched_tokens=55):
        assert cls()._aotcache.config.max_num_batched_tokens == 55
        assert cls(compilation_config={"max_num_batched_tokens": 44})._aotcache.config.max_num_batched_tokens == 44


def test_cli_precompiles_a_decorated_class_and_a_fresh_process_only_loads(tmp_path) -> None:
    """The README's decorator trip as written: the class declares its config, so the
    precompile line needs no config flags and the serving process only names the cache."""
    target = "examples/decorated.py:ServedTinyLlama"
    done = run_cli("precompile", target, "--cache-dir", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    built = json.loads(done.stdout)
    assert built["model"] == "ServedTinyLlama" and built["sizes_and_ranges"] == 6  # tiny_llama.CONFIG
    code = f"""
import json, torch, aotcache
from examples.decorated import ServedTinyLlama
from examples import tiny_llama
with aotcache.config(cache_dir={str(tmp_path)!r}):
    model = ServedTinyLlama()
outs = []
for size in (3, 6, 40):
    ids = tiny_llama.example_inputs(size)[0]
    out = model(ids)
    with torch.no_grad():
        outs.append(float((out - torch.nn.Module.__call__(model, ids)).abs().max()))
print(json.dumps({{"diff": max(outs), **aotcache.counters.snapshot()}}))
"""
    report = last_json(run_python(code).stdout)
    assert report["entries_loaded"] == 1 and report["traces"] == 0 and report["compiles"] == 0
    assert report["diff"] <= 1e-4
