"""CUDA graphs: the dispatcher exhaustively on CPU; the runner over consecutive calls on
the CPU emulation of graph semantics (the same logic a GPU runs); capture and replay on a
real GPU where there is one."""

from __future__ import annotations

import gc
import logging
import threading

import cudagraph_models
import pytest
import torch
from _support import TINY_CONFIG
from cudagraph_models import MIXING

import aotcache
from aotcache.configuration import CompilationConfig
from aotcache.modes import CUDAGraphMode
from aotcache.serve import cudagraph
from aotcache.serve.cudagraph import (
    BatchDescriptor,
    CudagraphDispatcher,
    CUDAGraphWrapper,
    backends,
    pad_tensor,
    unpad_tensor,
)
from aotcache.serve.cudagraph.wrapper import GraphMemory, graph_context, storage_of
from examples import tiny_llama

NONE, PIECEWISE, FULL = CUDAGraphMode.NONE, CUDAGraphMode.PIECEWISE, CUDAGraphMode.FULL
CAPTURE = [1, 2, 4, 8, 16, 24, 32]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (capture/replay)")


def test_mode_helpers() -> None:
    m = CUDAGraphMode
    assert [x.separate_routine() for x in m] == [False, False, False, True, True]
    assert m.FULL_DECODE_ONLY.decode_mode() == FULL and m.FULL_DECODE_ONLY.mixed_mode() == NONE
    assert m.FULL_AND_PIECEWISE.decode_mode() == FULL and m.FULL_AND_PIECEWISE.mixed_mode() == PIECEWISE
    assert PIECEWISE.decode_mode() == PIECEWISE and FULL.mixed_mode() == FULL
    assert [x.has_full_cudagraphs() for x in m] == [False, False, True, True, True]
    assert [x.has_piecewise_cudagraphs() for x in m] == [False, True, False, False, True]
    assert [x.requires_piecewise_compilation() for x in m] == [False, True, False, False, True]
    assert (
        CompilationConfig(cudagraph_mode="full_and_piecewise", splitting_ops=["a::b"]).cudagraph_mode
        == m.FULL_AND_PIECEWISE
    )


def _config(mode: CUDAGraphMode, q: int = 1) -> CompilationConfig:
    return CompilationConfig(
        cudagraph_mode=mode,
        cudagraph_capture_sizes=CAPTURE,
        max_num_batched_tokens=64,
        splitting_ops=["a::b"],
        uniform_decode_query_len=q,
    )


def _expected(mode: CUDAGraphMode, size: int, uniform: bool, q: int) -> tuple[CUDAGraphMode, BatchDescriptor | None]:
    """An oracle written from the rules, not from the implementation."""
    padded = next((s for s in CAPTURE if s >= size), None) if size >= 1 else None
    if padded is None or mode == NONE:
        return NONE, None
    decode_ok = uniform and padded >= q and padded % q == 0
    if mode == PIECEWISE:
        return PIECEWISE, BatchDescriptor(padded, False)
    if mode == FULL:
        return FULL, BatchDescriptor(padded, False)
    if mode == CUDAGraphMode.FULL_DECODE_ONLY:
        return (FULL, BatchDescriptor(padded, True)) if decode_ok else (NONE, None)
    if decode_ok:
        return FULL, BatchDescriptor(padded, True)
    return PIECEWISE, BatchDescriptor(padded, False)


@pytest.mark.parametrize("q", [1, 2])
@pytest.mark.parametrize("mode", list(CUDAGraphMode))
def test_dispatch_every_mode_and_size(mode: CUDAGraphMode, q: int) -> None:
    dispatcher = CudagraphDispatcher(_config(mode, q))
    for size in range(0, CAPTURE[-1] + 2):
        for uniform in (False, True):
            assert dispatcher.dispatch(BatchDescriptor(size, uniform)) == _expected(mode, size, uniform, q), (
                size,
                uniform,
            )


def test_keys_are_the_source_of_truth() -> None:
    dispatcher = CudagraphDispatcher(_config(CUDAGraphMode.FULL_AND_PIECEWISE))
    assert dispatcher.keys[PIECEWISE] == {BatchDescriptor(s, False) for s in CAPTURE}
    assert dispatcher.keys[FULL] == {BatchDescriptor(s, True) for s in CAPTURE}
    dispatcher.keys[FULL].discard(BatchDescriptor(8, True))  # no graph for it -> relaxed, then piecewise
    assert dispatcher.dispatch(BatchDescriptor(7, True)) == (PIECEWISE, BatchDescriptor(8, False))
    with pytest.raises(ValueError, match="PIECEWISE or FULL"):
        dispatcher.add_key(NONE, BatchDescriptor(1))
    assert len(dispatcher.all_keys()) == 2 * len(CAPTURE) - 1
    assert dispatcher.all_keys()[0][1].num_tokens == 32  # captured largest first


def test_full_relaxes_uniform_batches_to_non_uniform_keys() -> None:
    dispatcher = CudagraphDispatcher(_config(FULL))
    assert dispatcher.dispatch(BatchDescriptor(3, uniform_decode=True)) == (FULL, BatchDescriptor(4, False))


def test_default_capture_sizes_in_dispatcher() -> None:
    dispatcher = CudagraphDispatcher(CompilationConfig(cudagraph_mode=FULL, max_num_batched_tokens=8192))
    assert dispatcher.dispatch(BatchDescriptor(300, False)) == (FULL, BatchDescriptor(304, False))
    assert dispatcher.dispatch(BatchDescriptor(513, False)) == (NONE, None)


def test_padding_helpers() -> None:
    x = torch.arange(6).reshape(3, 2)
    padded = pad_tensor(x, 0, 5)
    assert padded.shape == (5, 2) and padded[3:].eq(0).all() and padded[:3].equal(x)
    assert unpad_tensor(padded, 0, 3).equal(x) and pad_tensor(x, 0, 2) is x


# -- the runner on the CPU emulation of CUDA-graph semantics ---------------------------------

EMULATED_MODES = ["FULL", "PIECEWISE", "FULL_AND_PIECEWISE", "FULL_DECODE_ONLY"]
# (tokens, uniform decode): sizes that pad, exact capture sizes, one above the largest
# capture size (no graph), decode and mixed batches, in an order that revisits keys.
CALLS = [(3, False), (5, True), (8, False), (1, True), (12, False), (7, True), (16, False), (20, False), (5, False)]
CALLS += [(2, True), (13, True), (3, False), (16, True)]


def _emulated(tiny_entry, mode: str, **config: object) -> tuple[object, object]:
    model = tiny_llama.build(2)
    full = {**TINY_CONFIG, "cudagraph_mode": mode, "cudagraph_capture_sizes": [1, 2, 4, 8, 16], **config}
    with cudagraph.use_graph_backend(cudagraph.EmulatedGraphs()):
        loaded = aotcache.load(model, full, cache_dir=tiny_entry.cache_dir, strict=True, capture_cudagraphs=True)
    assert loaded is not None and loaded.graph_runner is not None
    return model, loaded


@pytest.mark.parametrize("mode", EMULATED_MODES)
def test_emulated_graphs_match_eager_over_consecutive_calls(mode: str, tiny_entry) -> None:
    model, loaded = _emulated(tiny_entry, mode)
    runner = loaded.graph_runner
    wrappers = runner.wrappers()
    captured = sum(w.captures for w in wrappers)
    assert captured == sum(len(w.graphs) for w in wrappers) > 0  # every key once per wrapper
    for call, (size, decode) in enumerate(CALLS):
        ids = torch.randint(0, tiny_llama.VOCAB, (size,), generator=torch.Generator().manual_seed(1000 + call))
        with torch.no_grad():
            expected = model(ids)
        got = loaded.run_batch(ids, uniform_decode=decode).clone()
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4, msg=f"call {call}: size {size} {mode}")
    assert sum(w.captures for w in wrappers) == captured  # replays only, never a recapture
    assert sum(w.replays for w in wrappers) > 0


def test_piecewise_copies_only_inputs_that_moved(tiny_entry) -> None:
    """The attention op's output is a new tensor on every call: the next piece's graph
    gets it copied in; inputs already in place (static buffers, weights, outputs of the
    previous graph) are not copied."""
    _, loaded = _emulated(tiny_entry, "PIECEWISE")
    wrappers = loaded.graph_runner.wrappers()
    before = sum(w.input_copies for w in wrappers)
    loaded(torch.randint(0, tiny_llama.VOCAB, (6,)))
    copies = sum(w.input_copies for w in wrappers) - before
    attention_outputs = len(loaded.splitting_op_pieces)
    assert copies == attention_outputs  # one moved input per piece after an attention op


def test_graph_outputs_alias_until_the_next_call_unless_copied(tiny_entry) -> None:
    _, loaded = _emulated(tiny_entry, "FULL")
    first = loaded(*tiny_llama.example_inputs(4))
    kept = first.clone()
    loaded(*tiny_llama.example_inputs(3))
    assert not torch.equal(first, kept)  # documented: the static output was overwritten
    model = tiny_llama.build(2)
    with cudagraph.use_graph_backend(cudagraph.EmulatedGraphs()):
        copying = aotcache.load(
            model,
            {**TINY_CONFIG, "cudagraph_mode": "FULL", "cudagraph_capture_sizes": [1, 2, 4, 8]},
            cache_dir=tiny_entry.cache_dir,
            strict=True,
            cudagraph_copy_outputs=True,
        )
    first = copying(*tiny_llama.example_inputs(4))
    kept = first.clone()
    copying(*tiny_llama.example_inputs(3))
    assert torch.equal(first, kept)


def test_settings_given_at_load_are_the_ones_used(tiny_entry) -> None:
    """cudagraph_* fields do not change the artifacts (same entry), so the ones given at
    load decide: a mode and capture sizes never seen at build time are honoured (every
    compile size up to the largest is a capture size, as vLLM requires)."""
    _, loaded = _emulated(tiny_entry, "FULL", cudagraph_capture_sizes=[1, 2, 4, 6])
    keys = loaded.graph_runner.dispatcher.all_keys()
    assert {key.num_tokens for _, key in keys} == {1, 2, 4, 6}
    assert loaded.manifest.config["cudagraph_mode"] == "NONE"


def test_replaced_parameters_are_refused_not_read_stale(tiny_entry) -> None:
    model, loaded = _emulated(tiny_entry, "FULL")
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    loaded.rebind()  # what LoadedModel asks for after replacing a parameter object
    with pytest.raises(aotcache.DispatchError, match="replaced after CUDA graphs were captured"):
        loaded(*tiny_llama.example_inputs(4))


def test_a_cpu_model_gets_no_graphs_even_on_a_gpu_host(tiny_entry, caplog, monkeypatch) -> None:
    """The backend follows the model's device, not the host: a CPU model "captured" into
    a CUDA graph would be an empty graph replaying its capture-time output forever."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backends, "_warned", set())
    config = {**TINY_CONFIG, "cudagraph_mode": "FULL", "cudagraph_capture_sizes": [1, 2, 4, 8]}
    with caplog.at_level(logging.WARNING, logger="aotcache.serve.cudagraph"):
        loaded = aotcache.load(tiny_llama.build(2), config, cache_dir=tiny_entry.cache_dir, strict=True)
        aotcache.load(tiny_llama.build(2), config, cache_dir=tiny_entry.cache_dir, strict=True)
    assert loaded is not None and loaded.graph_runner is None
    assert sum("the model is on cpu" in r.message for r in caplog.records) == 1
    with pytest.raises(ValueError, match="PIECEWISE or FULL"):
        CUDAGraphWrapper(lambda: None, NONE, backend=cudagraph.EmulatedGraphs())


def test_load_with_capture_on_cpu_runs_without_graphs(tiny_entry, caplog) -> None:
    model = tiny_llama.build(2)
    config = {**TINY_CONFIG}
    loaded = aotcache.load(model, config, cache_dir=tiny_entry.cache_dir, strict=True, capture_cudagraphs=True)
    assert loaded is not None and loaded.capture_cudagraphs() == 0
    inputs = tiny_llama.example_inputs(5)
    with torch.no_grad():
        assert torch.allclose(loaded.run_batch(*inputs, uniform_decode=True), model(*inputs), atol=1e-4)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["PIECEWISE", "FULL", "FULL_AND_PIECEWISE"])
def test_capture_and_replay_match_eager_without_recapture(mode: str, tmp_path) -> None:
    config = {
        **TINY_CONFIG,
        "backend": "eager",
        "cudagraph_mode": mode,
        "cudagraph_capture_sizes": [1, 2, 4, 8],
        "cudagraph_num_of_warmups": 1,
    }
    spec = aotcache.ModelSpec(
        model=lambda: tiny_llama.build(2).cuda(),
        example_inputs=lambda n: (tiny_llama.example_inputs(n)[0].cuda(),),
        config=config,
    )
    aotcache.precompile(spec, cache_dir=tmp_path)
    model = tiny_llama.build(2).cuda()
    loaded = aotcache.load(model, config, cache_dir=tmp_path, strict=True, capture_cudagraphs=True)
    wrappers = loaded.graph_runner.wrappers()
    captured = sum(w.captures for w in wrappers)
    assert captured > 0
    for size in (1, 2, 3, 4, 5, 8):
        inputs = (tiny_llama.example_inputs(size)[0].cuda(),)
        with torch.no_grad():
            expected = model(*inputs)
        torch.testing.assert_close(loaded(*inputs).clone(), expected, atol=1e-4, rtol=1e-4)
    assert sum(w.captures for w in wrappers) == captured  # replays only, no recapture
    assert sum(w.replays for w in wrappers) > 0


@needs_cuda
@pytest.mark.gpu
def test_wrapper_copy_inputs_replays_new_values() -> None:
    wrapper = CUDAGraphWrapper(
        lambda x: x * 2, FULL, copy_inputs=True, backend=cudagraph.CUDAGraphs(torch.device("cuda"))
    )
    key = BatchDescriptor(4)
    with cudagraph.graph_context(FULL, key, capturing=True):
        first = wrapper(torch.ones(4, device="cuda")).clone()
        second = wrapper(torch.full((4,), 3.0, device="cuda")).clone()
    assert first.tolist() == [2.0] * 4 and second.tolist() == [6.0] * 4
    assert wrapper.captures == 1 and wrapper.replays == 1


# -- issue 25: what the review found, on the emulation ---------------------------------------------


def test_padding_that_changes_the_real_rows_is_refused_naming_piece_and_size(tmp_path) -> None:
    """A model that mixes tokens (x - x.mean(0)) outside any masked op: padded to a
    capture size its real rows change, so the graph is refused at start-up; with every
    served size a capture size (no padding) it runs, right."""
    built = aotcache.precompile(MIXING, cache_dir=tmp_path)
    model = MIXING.build_model()
    config = {**built.manifest.config, "cudagraph_mode": "FULL", "cudagraph_capture_sizes": [4, 8]}
    with cudagraph.use_graph_backend(cudagraph.EmulatedGraphs()):
        with pytest.raises(cudagraph.PaddingError, match=r"batch of 5 tokens to the capture size 8 .* piece submod_0"):
            aotcache.load(model, config, cache_dir=tmp_path, strict=True)
        exact = {**config, "cudagraph_capture_sizes": list(range(1, 9))}
        loaded = aotcache.load(model, exact, cache_dir=tmp_path, strict=True)
    for size in (3, 5, 8):
        x = torch.randn(size, 8)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x).clone(), model(x), atol=1e-5, rtol=1e-5)


def test_copy_inputs_never_clones_weights(tiny_entry) -> None:
    model, loaded = _emulated(tiny_entry, "PIECEWISE", cudagraph_copy_inputs=True)
    memory = loaded.graph_runner.memory
    assert memory.copy_targets and not any(storage_of(b) in memory.weights for b in memory.copy_targets.values())
    weight_bytes = sum(p.untyped_storage().nbytes() for p in model.parameters())
    assert loaded.graph_runner.held_bytes() < weight_bytes
    for call, (size, decode) in enumerate(CALLS[:6]):
        ids = torch.randint(0, tiny_llama.VOCAB, (size,), generator=torch.Generator().manual_seed(call))
        with torch.no_grad():
            torch.testing.assert_close(
                loaded.run_batch(ids, uniform_decode=decode).clone(), model(ids), atol=1e-4, rtol=1e-4
            )


def test_graph_memory_does_not_grow_with_the_sizes_captured(tiny_entry) -> None:
    """Every piece but the last keeps nothing per size: its outputs are the pool's, and
    its copy targets are one buffer for every size."""
    # the compile sizes 1, 2 and 4 are captured too (vLLM requires it); range [9, 32] is one unit
    _, one = _emulated(tiny_entry, "PIECEWISE", cudagraph_capture_sizes=[1, 2, 4, 16])
    _, four = _emulated(tiny_entry, "PIECEWISE", cudagraph_capture_sizes=[1, 2, 4, 10, 12, 14, 16])

    def held(loaded: object) -> dict[str, int]:
        pieces = vars(loaded.graph_runner.piecewise[loaded.unit_index(16)]).values()
        return {w.name: w.held_bytes() for w in pieces if isinstance(w, CUDAGraphWrapper)}

    assert held(one) == held(four) and sum(held(one).values()) > 0


def test_graphs_are_captured_at_start_up_in_one_session_and_never_later(tiny_entry) -> None:
    model, loaded = _emulated(tiny_entry, "FULL")
    runner = loaded.graph_runner
    assert runner.backend.sessions == 1
    wrapper = runner.full[loaded.unit_index(8)]
    wrapper.graphs.pop(BatchDescriptor(8))  # as if that key had not been captured
    ids = tiny_llama.example_inputs(8)[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).clone(), model(ids), atol=1e-4, rtol=1e-4)
    assert wrapper.uncaptured == 1 and BatchDescriptor(8) not in wrapper.graphs  # ran without a graph


def test_captured_in_inference_mode_replays_outside_it(tiny_entry) -> None:
    model = tiny_llama.build(2)
    config = {**TINY_CONFIG, "cudagraph_mode": "FULL", "cudagraph_capture_sizes": [1, 2, 4, 8]}
    with torch.inference_mode(), cudagraph.use_graph_backend(cudagraph.EmulatedGraphs()):
        loaded = aotcache.load(model, config, cache_dir=tiny_entry.cache_dir, strict=True)
    ids = tiny_llama.example_inputs(6)[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).clone(), model(ids), atol=1e-4, rtol=1e-4)
    assert sum(w.replays for w in loaded.graph_runner.wrappers()) > 0  # the output came from a replay


def _wrapper(fn: object, backend: object = None) -> tuple[CUDAGraphWrapper, GraphMemory]:
    memory = GraphMemory()
    wrapper = CUDAGraphWrapper(fn, FULL, backend=backend or cudagraph.EmulatedGraphs(), memory=memory)
    return wrapper, memory


def test_replay_copies_an_input_whose_strides_changed_and_refuses_a_changed_python_value() -> None:
    wrapper, memory = _wrapper(lambda x, scale: x * scale)
    x = torch.arange(16.0).reshape(4, 4)
    memory.kept.add(storage_of(x))  # a static buffer: read in place
    with wrapper.backend.device_scope(), graph_context(FULL, BatchDescriptor(4), capturing=True):
        wrapper(x, 2.0)
    with wrapper.backend.device_scope(), graph_context(FULL, BatchDescriptor(4)):
        transposed = x.t()  # the same data pointer, other strides
        expected = transposed * 2.0
        assert torch.equal(wrapper(transposed, 2.0), expected) and wrapper.input_copies == 1
        with pytest.raises(RuntimeError, match="replays the Python values it was captured with"):
            wrapper(x, 3.0)


def test_the_emulation_refuses_a_capture_or_replay_on_another_device() -> None:
    backend = cudagraph.EmulatedGraphs("cuda:1")
    stream = backend.new_stream()
    with pytest.raises(RuntimeError, match="capture outside cuda:1"):
        backend.capture(lambda x: x * 2, (torch.ones(2),), backend.new_pool(), stream)
    with backend.device_scope():
        graph, _ = backend.capture(lambda x: x * 2, (torch.ones(2),), backend.new_pool(), stream)
        with pytest.raises(RuntimeError, match="captured on a stream of cuda:0"):
            backend.capture(lambda x: x * 2, (torch.ones(2),), None, cudagraph.EmulatedGraphs("cuda:0").new_stream())
    with pytest.raises(RuntimeError, match="replayed on None"):
        backend.replay(graph)
    other = cudagraph.EmulatedGraphs("cuda:0")
    with other.device_scope(), pytest.raises(RuntimeError, match="captured on cuda:1 replayed on cuda:0"):
        backend.replay(graph)


def test_a_runner_on_a_second_device_captures_and_replays_inside_it(tiny_entry) -> None:
    model = tiny_llama.build(2)
    config = {**TINY_CONFIG, "cudagraph_mode": "FULL_AND_PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}
    with cudagraph.use_graph_backend(cudagraph.EmulatedGraphs("cuda:1")):
        loaded = aotcache.load(model, config, cache_dir=tiny_entry.cache_dir, strict=True)
    for size in (1, 3, 8):
        ids = tiny_llama.example_inputs(size)[0]
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).clone(), model(ids), atol=1e-4, rtol=1e-4)
    assert sum(w.replays for w in loaded.graph_runner.wrappers()) >= 3  # each size's output came from a replay


# -- issue 38: the third review, on the emulation ----------------------------------------------

PADDED = [1, 2, 4, 8, 16]


def _graph_config(built: object, mode: str, sizes: list[int]) -> dict:
    config = {**built.manifest.config, "cudagraph_mode": mode, "cudagraph_capture_sizes": sizes}
    return {**config, "max_cudagraph_capture_size": sizes[-1]}


def _graphs_load(model: torch.nn.Module, config: dict, cache: object, **options: object) -> object:
    with cudagraph.use_graph_backend(cudagraph.EmulatedGraphs(options.pop("device", "cuda:0"))):
        return aotcache.load(model, config, cache_dir=cache, strict=options.pop("strict", True), **options)


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_a_bf16_llama_with_padding_loads_and_is_right(backend: str, tmp_path) -> None:
    """bf16 kernels round differently for more rows: not a reason to refuse padding."""
    spec = cudagraph_models.llama_bf16(backend)
    built = aotcache.precompile(spec, cache_dir=tmp_path)
    model = spec.build_model()
    config = _graph_config(built, "FULL_AND_PIECEWISE", PADDED)
    loaded = _graphs_load(model, config, tmp_path)
    assert loaded.graph_runner.refused_padding == {}
    for size in range(1, 17):
        ids = spec.example_inputs(size)[0]
        with torch.no_grad():
            expected = model(ids).float()
        for decode in (False, True):
            got = loaded.run_batch(ids, uniform_decode=decode).float()
            scale = float(expected.abs().max())
            assert float((got - expected).abs().max()) <= 0.02 * scale, (size, decode)
    assert sum(w.replays for w in loaded.graph_runner.wrappers()) > 0


def test_the_padding_check_allows_the_rounding_of_the_dtype() -> None:
    """bf16 rounds at 2**-8: a kernel that sums in another order for more rows changes a
    value by a unit of rounding; tokens that mix change rows by far more."""
    from aotcache.serve.cudagraph.padding import first_difference

    generator = torch.Generator().manual_seed(0)
    real = torch.randn(5, 512, generator=generator).to(torch.bfloat16)
    nudge = 1 + 2.0**-7 * torch.randint(-1, 2, real.shape, generator=generator)
    rounded = (real.float() * nudge).to(torch.bfloat16)  # one unit of rounding, here and there
    assert not torch.equal(rounded, real)
    padded = torch.cat([rounded, torch.zeros(3, 512, dtype=torch.bfloat16)])
    assert first_difference({"p": real}, {"p": padded}, ["p"], 5, 8) is None
    mixed = padded.clone()
    mixed[:5] -= 0.1 * real.float().mean(0).to(torch.bfloat16)
    assert first_difference({"p": real}, {"p": mixed}, ["p"], 5, 8) == "p"
    fp32 = torch.randn(5, 8, generator=generator)
    assert first_difference({"p": fp32}, {"p": torch.cat([fp32 * (1 + 2.0**-7), torch.zeros(3, 8)])}, ["p"], 5, 8)


@pytest.mark.parametrize("mode", ["PIECEWISE", "FULL"])
def test_a_model_whose_last_op_mixes_tokens_is_refused_or_right(mode: str, tmp_path, caplog) -> None:
    """The mixing op is a splitting op, the model's last: no compiled piece changes when
    padded, its output does. strict: refused naming it; else those sizes get no graph."""
    spec = cudagraph_models.MIXES_LAST
    built = aotcache.precompile(spec, cache_dir=tmp_path)
    model = spec.build_model()
    config = _graph_config(built, mode, [4, 8, 16])
    with pytest.raises(cudagraph.PaddingError, match=r"batch of 9 tokens to the capture size 16 .* piece submod_1"):
        _graphs_load(model, config, tmp_path)
    with caplog.at_level(logging.WARNING, logger="aotcache.serve.cudagraph"):
        loaded = _graphs_load(model, config, tmp_path, strict=False)
    assert sorted(loaded.graph_runner.refused_padding) == [4, 8, 16]
    assert any("not captured for the padded sizes [4, 8, 16]" in r.message for r in caplog.records)
    for size in range(1, 17):
        x = spec.example_inputs(size)[0]
        with torch.no_grad():
            torch.testing.assert_close(loaded(x).clone(), model(x), atol=1e-5, rtol=1e-5)


def test_full_graphs_hold_no_output_per_size(tiny_entry) -> None:
    """Outputs live in the pool (reused across sizes, largest first): what the graphs
    keep alive besides it does not grow with the sizes captured."""
    _, every = _emulated(tiny_entry, "FULL", cudagraph_capture_sizes=PADDED)
    _, largest = _emulated(tiny_entry, "FULL", cudagraph_capture_sizes=[1, 2, 4, 16])
    assert every.graph_runner.held_bytes() <= 1.5 * largest.graph_runner.held_bytes()
    outputs = [every(*tiny_llama.example_inputs(size)) for size in (16, 8)]
    assert all(o.untyped_storage().nbytes() == 0 or not o.untyped_storage().resizable() for o in outputs)


def test_twelve_layers_serve_right_through_piecewise_graphs_twice_at_every_size(tmp_path) -> None:
    """25 pieces: as text, submod_9 sorts after submod_24; forward's order is numeric."""
    spec = aotcache.ModelSpec(
        model=lambda: tiny_llama.build(12),
        example_inputs=tiny_llama.example_inputs,
        config={**TINY_CONFIG, "backend": "eager"},
        dynamic_arg_dims={"input_ids": 0},
    )
    built = aotcache.precompile(spec, cache_dir=tmp_path)
    model = spec.build_model()
    config = _graph_config(built, "PIECEWISE", PADDED)
    loaded = _graphs_load(model, config, tmp_path)
    runner = loaded.graph_runner
    assert loaded.piece_order == [f"submod_{i}" for i in range(25)]
    assert runner.compiled_pieces[-1] == "submod_24" and list(vars(loaded.unit_pieces[0])) == loaded.piece_order
    for _ in range(2):
        for size in range(1, 17):
            ids = tiny_llama.example_inputs(size)[0]
            with torch.no_grad():
                torch.testing.assert_close(loaded(ids).clone(), model(ids), atol=1e-4, rtol=1e-4)
    assert sum(w.replays for w in runner.wrappers()) >= 2 * 16 * 13


def test_replay_host_work_does_not_grow_with_the_weights(tiny_entry) -> None:
    """After the first replay of a key, inputs read in place (weights, static buffers,
    the previous graph's outputs) are the same objects: no per-input check runs."""
    _, loaded = _emulated(tiny_entry, "PIECEWISE")
    wrappers = loaded.graph_runner.wrappers()
    ids = tiny_llama.example_inputs(8)[0]
    loaded(ids)
    checked = sum(w.fixed_checks for w in wrappers)
    for _ in range(3):
        loaded(ids)
    assert sum(w.fixed_checks for w in wrappers) == checked
    assert sum(w.replays for w in wrappers) > 0


def test_a_piece_without_kernels_is_not_a_load_error(tmp_path) -> None:
    """Its graph would be empty (views only): it runs at every call instead."""
    spec = cudagraph_models.VIEWS_BETWEEN
    built = aotcache.precompile(spec, cache_dir=tmp_path)
    model = spec.build_model()
    config = _graph_config(built, "PIECEWISE", [1, 2, 4, 8])
    loaded = _graphs_load(model, config, tmp_path)
    wrappers = loaded.graph_runner.wrappers()
    assert sum(w.empty for w in wrappers) == 4 and sum(w.replays for w in wrappers) == 0
    for size in range(1, 9):
        x = spec.example_inputs(size)[0]
        with torch.no_grad():
            torch.testing.assert_close(loaded(x).clone(), model(x), atol=1e-5, rtol=1e-5)
    assert sum(w.replays for w in wrappers) > 0


def test_every_key_is_warmed_up_before_its_capture(tmp_path) -> None:
    """cudagraph_num_of_warmups 0 is raised to 1 (vLLM): an op that synchronizes on its
    first launch (autotuning) would otherwise do it inside the capture."""
    spec = cudagraph_models.AUTOTUNES
    built = aotcache.precompile(spec, cache_dir=tmp_path)
    model = spec.build_model()
    config = _graph_config(built, "FULL", list(range(1, 9)))  # no padding check runs the op first
    cudagraph_models.AUTOTUNE_PENDING["value"] = True
    loaded = _graphs_load(model, {**config, "cudagraph_num_of_warmups": 0}, tmp_path)
    assert not cudagraph_models.AUTOTUNE_PENDING["value"]  # it did synchronize, outside a capture
    x = spec.example_inputs(5)[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).clone(), model(x))


def test_runners_share_one_pool_stream_and_lock_per_device(tiny_entry) -> None:
    _, first = _emulated(tiny_entry, "PIECEWISE")
    _, second = _emulated(tiny_entry, "FULL")
    other = _graphs_load(
        tiny_llama.build(2), {**TINY_CONFIG, "cudagraph_mode": "FULL"}, tiny_entry.cache_dir, device="cuda:1"
    )
    assert first.graph_runner.shared is second.graph_runner.shared
    pools = {id(w.pool) for w in first.graph_runner.wrappers() + second.graph_runner.wrappers()}
    assert pools == {id(first.graph_runner.shared.pool)}
    assert other.graph_runner.shared is not first.graph_runner.shared
    assert other.graph_runner.shared.stream.device == torch.device("cuda:1")


def test_models_on_two_devices_capture_on_their_own_streams(tiny_entry, monkeypatch) -> None:
    """torch's default capture stream belongs to the device that captured first."""
    monkeypatch.setattr(cudagraph.EmulatedGraphs, "default_stream_device", None)
    for device in ("cuda:0", "cuda:1"):
        model = tiny_llama.build(2)
        loaded = _graphs_load(model, {**TINY_CONFIG, "cudagraph_mode": "FULL"}, tiny_entry.cache_dir, device=device)
        ids = tiny_llama.example_inputs(3)[0]
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).clone(), model(ids), atol=1e-4, rtol=1e-4)


def test_concurrent_callers_take_turns(tiny_entry) -> None:
    """Two threads calling one model: each call fills the static buffers, replays and
    copies its outputs out under the device's graph lock."""
    model = tiny_llama.build(2)
    config = {**TINY_CONFIG, "cudagraph_mode": "FULL_AND_PIECEWISE", "cudagraph_capture_sizes": PADDED}
    loaded = _graphs_load(model, config, tiny_entry.cache_dir, cudagraph_copy_outputs=True)
    sizes = [3, 5, 7, 8, 2, 6]
    with torch.no_grad():
        expected = {s: model(tiny_llama.example_inputs(s)[0]) for s in sizes}
    wrong: list[int] = []

    def serve(offset: int) -> None:
        for call in range(60):
            size = sizes[(call + offset) % len(sizes)]
            if not torch.allclose(loaded(tiny_llama.example_inputs(size)[0]), expected[size], atol=1e-4):
                wrong.append(size)

    threads = [threading.Thread(target=serve, args=(offset,)) for offset in (0, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_an_application_gc_freeze_survives_the_capture_session(tiny_entry) -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        _emulated(tiny_entry, "FULL")
        assert gc.get_freeze_count() > frozen // 2  # gc.unfreeze() would leave none
    finally:
        gc.unfreeze()


def test_an_input_on_another_device_is_refused_at_every_size(tiny_entry) -> None:
    _, loaded = _emulated(tiny_entry, "FULL")
    for size in (3, 20):  # a graph size, and one above the largest capture size
        ids = tiny_llama.example_inputs(size)[0].to("meta")
        with pytest.raises(aotcache.DispatchError, match="argument 'input_ids' is on meta, the model is on cpu"):
            loaded(ids)
