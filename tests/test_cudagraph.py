"""CUDA graphs: the dispatcher exhaustively on CPU; the runner over consecutive calls on
the CPU emulation of graph semantics (the same logic a GPU runs); capture and replay on a
real GPU where there is one."""

from __future__ import annotations

import logging

import pytest
import torch
from _support import TINY_CONFIG

import aotcache
from aotcache.config import CompilationConfig
from aotcache.modes import CUDAGraphMode
from aotcache.serve import cudagraph
from aotcache.serve.cudagraph import BatchDescriptor, CudagraphDispatcher, CUDAGraphWrapper, pad_tensor, unpad_tensor
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
            {**TINY_CONFIG, "cudagraph_mode": "FULL", "cudagraph_capture_sizes": [4, 8]},
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
    load decide: a mode and capture sizes never seen at build time are honoured."""
    _, loaded = _emulated(tiny_entry, "FULL", cudagraph_capture_sizes=[2, 6])
    keys = loaded.graph_runner.dispatcher.all_keys()
    assert {key.num_tokens for _, key in keys} == {2, 6}
    assert loaded.manifest.config["cudagraph_mode"] == "NONE"


def test_replaced_parameters_are_refused_not_read_stale(tiny_entry) -> None:
    model, loaded = _emulated(tiny_entry, "FULL")
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    loaded.rebind()  # what LoadedModel asks for after replacing a parameter object
    with pytest.raises(aotcache.DispatchError, match="replaced after CUDA graphs were captured"):
        loaded(*tiny_llama.example_inputs(4))


def test_wrapper_passes_through_without_cuda(caplog, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cudagraph, "_warned_no_cuda", False)
    calls = []
    with caplog.at_level(logging.WARNING, logger="aotcache.serve.cudagraph"):
        wrappers = [CUDAGraphWrapper(lambda x: calls.append(x) or x + 1, PIECEWISE) for _ in range(3)]
        with cudagraph.graph_context(PIECEWISE, BatchDescriptor(4)):
            assert wrappers[0](torch.ones(2)).tolist() == [2.0, 2.0]
    assert sum("CUDA graphs are disabled" in r.message for r in caplog.records) == 1
    assert wrappers[0].captures == 0 and len(calls) == 1
    with pytest.raises(ValueError, match="PIECEWISE or FULL"):
        CUDAGraphWrapper(lambda: None, NONE)


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
    wrapper = CUDAGraphWrapper(lambda x: x * 2, FULL, copy_inputs=True)
    key = BatchDescriptor(4)
    with cudagraph.graph_context(FULL, key):
        first = wrapper(torch.ones(4, device="cuda")).clone()
        second = wrapper(torch.full((4,), 3.0, device="cuda")).clone()
    assert first.tolist() == [2.0] * 4 and second.tolist() == [6.0] * 4
    assert wrapper.captures == 1 and wrapper.replays == 1
