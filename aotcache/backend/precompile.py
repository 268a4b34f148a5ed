"""precompile: the orchestration. Each step is a module of its own: what a remote may
give (remote_trust), the entry found before any trace (unchanged), the one trace and the
key (tracing), and the entry built and published atomically under a per-entry lock
(publish, entry); a model served as parts calls this once per part (parts)."""

from __future__ import annotations

import time

import torch

from aotcache.configuration import CompilationConfig
from aotcache.custom_op import bind_custom_ops
from aotcache.progress import logged_progress
from aotcache.store import signing
from aotcache.store.root import CacheRoot, resolve_cache_dir

from . import _torch_compat as compat
from . import inductor_passes, unchanged
from .entry import source_date
from .parallel import available_cores
from .peak_memory import StagePeaks
from .publish import Build, build_unless_present
from .remote_trust import remote_artifacts
from .request import BuildRequest
from .result import PrecompileResult
from .tracing import (
    ExampleInputs,
    TraceArguments,
    check_splitting_ops,
    check_splitting_ops_exist,
    extra_build_factors,
    trace,
)
from .weights import fill_meta_tensors

__all__ = ["BuildRequest", "ExampleInputs", "PrecompileResult", "precompile"]


def precompile(
    model: torch.nn.Module,
    config: CompilationConfig,
    example_inputs: ExampleInputs,
    request: BuildRequest | None = None,
) -> PrecompileResult:
    """Build (or reuse) the entry for `model` and `config`, as `request` asks."""
    request = request or BuildRequest()
    started = time.perf_counter()
    fill_meta_tensors(model)  # built without weights: placeholders nothing reads (weights.py)
    source_date()  # a bad SOURCE_DATE_EPOCH fails now, not after the compile
    root = CacheRoot(resolve_cache_dir(request.cache_dir, config.cache_dir))
    root.check_is_directory()
    sign_key = signing.read_key(request.sign_key) if request.sign_key else None
    remote, remote_trust = remote_artifacts(request, sign_key)
    passes = inductor_passes.resolve(config)
    check_splitting_ops_exist(config)
    # CustomOp layers run what the config's rules choose, in the trace and in every eager
    # run beside it; every compile runs with the config's Inductor passes.
    extra = extra_build_factors(passes, bind_custom_ops(model, config), request.part_of)
    arguments = TraceArguments.of(model, config, example_inputs, request.dynamic_arg_dims)
    if not request.force:
        probe = unchanged.Probe.of(model, config, arguments.spec.to_json(), compat.cpp_march_unimported(), extra)
        if (same := unchanged.find(root, probe, sign_key, remote)) is not None:
            seconds = {"total": time.perf_counter() - started}
            hit = PrecompileResult(same.entry_id, same.path, True, same.manifest, seconds, remote_trust=remote_trust)
            return _filled_in(config, hit)
    root.ensure_writable()
    progress = StagePeaks(request.progress if request.progress is not None else logged_progress())
    with compat.inductor_settings(passes.settings):
        traced = trace(model, config, arguments, request.mark_unbacked_dims, progress, passes.files, extra)
        check_splitting_ops(traced.captured, config, request.strict)
        if request.check_graph is not None:
            request.check_graph(traced.captured.graph)
        build = Build(
            model=model,
            config=config,
            root=root,
            traced=traced,
            arguments=arguments,
            sign_key=sign_key,
            progress=progress,
            origin=request.origin,
            started=started,
            force=request.force,
            jobs=request.jobs or available_cores(),
            remote=remote,
            part_of=request.part_of,
            seconds={"trace": traced.captured.seconds},
        )
        result = build_unless_present(build)
        result.remote_trust = remote_trust
        result.peak_rss = progress.finish()
        return _filled_in(config, result)


def _filled_in(config: CompilationConfig, result: PrecompileResult) -> PrecompileResult:
    """vLLM's run-time fields: the entry's directory, and the seconds spent tracing and
    compiling added to compilation_time."""
    config.local_cache_dir = str(result.path)
    config.compilation_time += sum(result.seconds.get(stage, 0.0) for stage in ("trace", "compile"))
    return result
