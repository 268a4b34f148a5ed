"""`aotcache explain`: before any artifact byte moves, whether this host would load
TARGET's entry from the cache dir or from the remote, and otherwise why not (the
library's aotcache.fleet.explain decides; this module parses and renders)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aotcache.errors import EXIT_OK, AotCacheError, RemoteError, UsageError, printable

from . import helpformat
from .common import CacheDir, JsonFlag, Output, Quiet, Verbose, cache_root, handle_errors, import_cwd, stderr
from .fleet import Insecure
from .options import (
    Backend,
    CompileSizes,
    ConfigFile,
    ConfigJson,
    HfClass,
    MaxTokens,
    NoSplit,
    SplitPoints,
    SplittingOps,
    Target,
    TrustedKey,
    config_from,
    precompile_overrides,
    spec_of,
    with_hf_options,
)

EXIT_WOULD_MISS = 10  # not an error: the answer "no", told apart from 1 (a check failed)

EXPLAIN_EXAMPLES = helpformat.examples(
    "aotcache explain examples/tiny_llama.py:spec",
    "aotcache explain mypkg.model:spec --remote oci://registry.example.com/ml/aotcache --max-num-batched-tokens 8192",
    "aotcache explain hf:./my-llama --remote s3://ml-artifacts/aotcache --json",
    note="Exit codes: 0 would hit (an entry here that passes a load's checks, or one the remote lists for this "
    "lookup key), 10 would miss (the nearest entry and each lookup factor that differs are named), 2 bad input "
    "(TARGET, config), 3 environment (cache dir, remote unreachable).",
)


RemoteOption = Annotated[
    str | None,
    typer.Option(
        "--remote",
        envvar="AOTCACHE_REMOTE",
        metavar="REMOTE",
        help="Also ask this remote (oci://host/repo, s3://bucket/prefix, file:///path) what a load would pull.",
    ),
]


def _model_without_weights(spec: Any, config_of: Any) -> Any:
    """TARGET's model as precompile keys it: built without weights, the meta placeholders
    precompile puts in their place (so the same lookup key). A model served as parts has
    no entry of its own to explain."""
    from aotcache.backend.weights import fill_meta_tensors
    from aotcache.serve.parts import compiled_parts

    model = spec.build_model(weights=False)
    fill_meta_tensors(model)
    parts = compiled_parts(model, config_of)
    if parts:
        names = ", ".join(part.path for part in parts)
        raise UsageError(
            f"{type(model).__qualname__} is served as parts ({names}), each with its own entry",
            hint="explain a TARGET that names one part's model",
        )
    return model


@handle_errors
def explain(
    target: Target,
    remote: RemoteOption = None,
    cache_dir: CacheDir = None,
    trusted_key: TrustedKey = None,
    config: ConfigFile = None,
    compilation_config: ConfigJson = None,
    compile_sizes: CompileSizes = None,
    split_points: SplitPoints = None,
    max_num_batched_tokens: MaxTokens = None,
    splitting_ops: SplittingOps = None,
    backend: Backend = None,
    hf_class: HfClass = None,
    no_split: NoSplit = False,
    insecure: Insecure = False,
    json_out: JsonFlag = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Say whether a load of TARGET would hit here or on the remote, before any artifact
    byte is fetched; on a miss, the nearest entry and each lookup factor that differs.
    The config options precompile takes give the same lookup key as there."""
    from aotcache.fleet.connect import open_remote
    from aotcache.fleet.explain import explain_load
    from aotcache.key.lookup import lookup_factors
    from aotcache.store.signing import signature_checker

    out = Output(json_out, quiet, verbose)
    import_cwd()
    spec = spec_of(with_hf_options(target, hf_class, no_split))
    overrides = precompile_overrides(compile_sizes, split_points, max_num_batched_tokens, splitting_ops, backend)

    def config_of(fields: dict[str, Any]) -> Any:
        return config_from(fields, config, compilation_config, overrides)

    resolved = config_of(spec.config_dict())
    model = _model_without_weights(spec, config_of)
    root = cache_root(cache_dir, resolved.cache_dir)
    checker = signature_checker(trusted_key)
    connected = open_remote(remote, insecure=insecure) if remote else None
    factors = lookup_factors(resolved, model)
    try:
        found = explain_load(type(model).__qualname__, factors, root, connected, model=model, verify_signature=checker)
    except AotCacheError:
        raise
    except Exception as exc:  # whatever a hostile or broken remote makes a client raise
        raise RemoteError(f"{remote}: {type(exc).__name__}: {exc}") from None
    for warning in found.warnings:
        stderr.print(f"warning: {warning}", markup=False, highlight=False)
    if json_out:
        out.emit_json(found.to_json())
    else:
        render_explanation(out, found)
    raise typer.Exit(EXIT_OK if found.hit else EXIT_WOULD_MISS)


def render_explanation(out: Output, found: Any) -> None:
    """One line for a hit; for a miss, the entries refused, the nearest and its factors."""
    if found.hit and found.where == "local":
        out.paragraph(f"would hit (local): entry {found.entry} in {found.cache_dir}")
        return
    if found.hit:
        out.paragraph(f"would hit (remote): entry {found.entry} on {printable(found.remote)}; a load pulls it")
        return
    places = found.cache_dir + (f" or on {printable(found.remote)}" if found.remote else "")
    out.paragraph(f"would miss: no entry for {found.model} with lookup key {found.lookup} in {places}")
    for refusal in found.refused:
        out.paragraph(f"refused here: {refusal.entry} ({refusal.reason}): {printable(refusal.message)}", "  ")
    near = found.nearest
    if near is None:
        out.paragraph(f"no entry of {found.model} to compare with: precompile this model and config", "  ")
        return
    where = "here" if near.where == "local" else "on the remote"
    count = len(near.differences)
    out.paragraph(
        f"nearest: {near.entry} ({where}), {count} lookup factor{'s differ' if count != 1 else ' differs'} "
        "(the entry's -> this host's):",
        "  ",
    )
    for difference in near.differences:
        out.paragraph(printable(str(difference)), "    ")
