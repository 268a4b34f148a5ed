"""The `aotcache` command: precompile, inspect-cache, verify, clear, push, pull.

The CLI parses, calls library functions and renders their results (rich for people,
--json for machines). Exit codes: 0 ok, 1 check failed / not found, 2 usage or bad input,
3 environment problem (e.g. no writable cache dir).
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Annotated, Any

import typer

from aotcache.errors import (
    EXIT_CHECK_FAILED,
    EXIT_ENVIRONMENT,
    EXIT_OK,
    CacheDirError,
    ConfigError,
    TargetError,
    UsageError,
)

from . import explain as explain_command
from . import fleet, helpformat, render
from . import stats as stats_command
from .common import (
    CacheDir,
    JsonFlag,
    Output,
    Quiet,
    Verbose,
    cache_root,
    error_json,
    fail,
    handle_errors,
    import_cwd,
    stderr,
)
from .options import (
    Backend,
    CompileSizes,
    ConfigFile,
    ConfigJson,
    HfClass,
    Jobs,
    MaxNewSizes,
    MaxTokens,
    NoSplit,
    SignKey,
    SizesFrom,
    SplitPoints,
    SplittingOps,
    Target,
    TrustedKey,
    config_from,
    precompile_overrides,
    spec_of,
    with_hf_options,
)

app = typer.Typer(
    name="aotcache",
    help="Compile PyTorch models ahead of time in CI; load them verified, with no compiler, at serve time.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    cls=helpformat.Group,
)


def _print_version(value: bool) -> None:
    if value:
        from aotcache.version import __version__

        typer.echo(f"aotcache {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Compile PyTorch models ahead of time in CI; load them verified, with no compiler, at serve time."""


@app.command(
    cls=helpformat.Command,
    epilog=helpformat.examples(
        "aotcache precompile examples/tiny_llama.py:spec",
        "aotcache precompile mypkg.model:spec --compile-sizes 1,2,4,8 --split-points 512",
        "aotcache precompile hf:./my-llama",
        'aotcache precompile mypkg.model:spec --compilation-config \'{"backend": "eager"}\' --json',
        note="Exit codes: 0 built or up to date, 1 a check failed, 2 bad input (TARGET, config), 3 environment "
        "(cache dir, compiler).",
    ),
)
@handle_errors
def precompile(
    target: Target,
    config: ConfigFile = None,
    compilation_config: ConfigJson = None,
    compile_sizes: CompileSizes = None,
    split_points: SplitPoints = None,
    max_num_batched_tokens: MaxTokens = None,
    splitting_ops: SplittingOps = None,
    backend: Backend = None,
    cache_dir: CacheDir = None,
    force: Annotated[bool, typer.Option("--force", help="Compile even if a valid entry exists.")] = False,
    jobs: Jobs = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Fail (exit 2) where a warning would be given, e.g. an unused splitting op."),
    ] = False,
    sign_key: SignKey = None,
    hf_class: HfClass = None,
    no_split: NoSplit = False,
    remote: Annotated[
        str | None,
        typer.Option(
            "--remote",
            envvar="AOTCACHE_REMOTE",
            metavar="REMOTE",
            help="Before compiling a unit, fetch it from an entry pushed there (oci://host/repo, s3://bucket/prefix).",
        ),
    ] = None,
    insecure: fleet.Insecure = False,
    trust_unsigned_remote: fleet.TrustUnsignedRemote = False,
    sizes_from: SizesFrom = None,
    max_new_sizes: MaxNewSizes = 8,
    json_out: JsonFlag = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Trace TARGET once, compile every range and size, and publish a verified entry."""
    out = Output(json_out, quiet, verbose)
    target = with_hf_options(target, hf_class, no_split)
    spec = spec_of(target)
    overrides = precompile_overrides(compile_sizes, split_points, max_num_batched_tokens, splitting_ops, backend)
    base = config_from(spec.config_dict(), config, compilation_config, overrides)  # a bad field fails first
    if spec.example_inputs is None:
        raise TargetError(f"{target} has no example inputs", hint="give the ModelSpec example_inputs")
    chosen = _sizes_from(out, spec, base, sizes_from, max_new_sizes, insecure, overrides) if sizes_from else None
    options = {"cache_dir": cache_dir, "force": force, "strict": strict, "sign_key": sign_key, "origin": target}
    options.update(jobs=jobs, remote=remote, insecure=insecure, trust_unsigned_remote=trust_unsigned_remote)
    config_of = functools.partial(config_from, config_file=config, json_text=compilation_config, overrides=overrides)
    summary = _run_precompile(spec, config_of, options, show_progress=not quiet)
    if chosen is not None:
        summary["sizes_from"] = chosen.to_json()
    if verbose:
        from aotcache.compilation_counter import counters

        summary["counters"] = counters.snapshot()
    if json_out:
        out.emit_json(summary)
    else:
        render.precompile_summary(out, summary)


def _sizes_from(
    out: Output, spec: Any, config: Any, source: str, limit: int, insecure: bool, overrides: dict[str, Any]
) -> Any:
    """The hottest range-served sizes the stats at `source` recorded for this model, added
    to the compile_sizes in `overrides` (and said, before the build)."""
    from aotcache.key.identity import class_name
    from aotcache.stats.sources import read_stats
    from aotcache.stats.summary import choose_sizes, summarize

    records, warnings = read_stats(source, insecure=insecure)
    for warning in warnings:
        stderr.print(f"warning: {warning}", markup=False, highlight=False)
    model = class_name(spec.build_model(weights=False))
    limit_size = config.max_num_batched_tokens or max(config.compile_sizes or [0])
    chosen = choose_sizes(summarize(records), source, model, list(config.compile_sizes or []), limit_size, limit)
    overrides["compile_sizes"] = sorted(set(config.compile_sizes or []) | set(chosen.sizes))
    added = ", ".join(map(str, chosen.sizes)) or "none"
    out.paragraph(
        f"compile sizes added from {source}: {added} ({chosen.share:.0%} of the {chosen.total} recorded call(s) of "
        "this model)"
    )
    return chosen


def _run_precompile(spec: Any, config_of: Any, options: dict[str, Any], *, show_progress: bool) -> dict[str, Any]:
    from aotcache.backend.parts import PartsResult, precompile_model
    from aotcache.backend.request import BuildRequest

    with render.precompile_progress(enabled=show_progress) as progress:
        request = BuildRequest(
            dynamic_arg_dims=spec.dynamic_arg_dims, progress=progress, check_graph=spec.check_graph, **options
        )
        model = spec.build_model(weights=False)
        result = precompile_model(model, config_of, spec.config_dict(), spec.example_inputs, request)
    schema = "aotcache.precompile-parts/1" if isinstance(result, PartsResult) else "aotcache.precompile/2"
    return {"schema": schema, **result.summary}


@app.command(
    name="inspect-cache",
    cls=helpformat.Command,
    epilog=helpformat.examples(
        "aotcache inspect-cache",
        "aotcache inspect-cache --sort size --filter TinyLlama --wide",
        "aotcache inspect-cache d7d511ad --json",
        note="Exit codes: 0 listed, 1 no such entry, 2 bad input, 3 the cache dir is missing or unreadable.",
    ),
)
@handle_errors
def inspect_cache(
    key: Annotated[
        str | None,
        typer.Argument(metavar="KEY", help="An entry key (or unique prefix) to show in detail.", show_default=False),
    ] = None,
    cache_dir: CacheDir = None,
    sort: Annotated[str, typer.Option(metavar="FIELD", help="Order rows by size, created or used.")] = "created",
    filter_text: Annotated[
        str | None, typer.Option("--filter", metavar="TEXT", help="Only rows whose key, model or status contain this.")
    ] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Every column and whole keys, whatever the width.")] = False,
    json_out: JsonFlag = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """List cache entries with their status and size, or show one entry in detail."""
    from aotcache.store.scan import find_entry, report_entry, scan

    out = Output(json_out, quiet, verbose)
    import_cwd()
    if sort not in ("size", "created", "used"):
        raise ConfigError("sort", sort, "one of size, created, used")
    root = cache_root(cache_dir, must_exist=True)
    if key:
        report = report_entry(root, find_entry(root, key))
        if json_out:
            out.emit_json({"schema": "aotcache.inspect-entry/1", **report.to_json(detail=True)})
        else:
            render.entry_detail(out, report)
        return
    reports = scan(root)
    if filter_text:
        needle = filter_text.lower()
        reports = [r for r in reports if needle in f"{r.entry_id} {r.model} {r.part_of or ''} {r.status}".lower()]
    if sort == "size":
        reports.sort(key=lambda r: r.bytes, reverse=True)
    else:
        reports.sort(key=lambda r: r.sort_time(sort), reverse=True)
    if json_out:
        out.emit_json(
            {
                "schema": "aotcache.inspect-cache/1",
                "cache_dir": str(root.path),
                "entries": [r.to_json() for r in reports],
                "total_bytes": sum(r.bytes for r in reports),
            }
        )
    else:
        render.cache_table(out, root, reports, wide=wide)


@app.command(
    cls=helpformat.Command,
    epilog=helpformat.examples(
        "aotcache verify examples/tiny_llama.py:spec --run",
        "aotcache verify d7d511ad --strict --json",
        "AOTCACHE_TRUSTED_KEY=release.pub aotcache verify mypkg.model:spec",
        note="Exit codes: 0 every check passed, 1 a check failed or no entry, 2 bad input, 3 environment.",
    ),
)
@handle_errors
def verify(
    target_or_key: Annotated[
        str, typer.Argument(metavar="TARGET|KEY", help="A TARGET (with a colon) or an entry key.", show_default=False)
    ],
    cache_dir: CacheDir = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Also fail on warnings (unsigned entry, other thread count).")
    ] = False,
    run_check: Annotated[bool, typer.Option("--run", help="Load in a fresh process and compare with eager.")] = False,
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
    json_out: JsonFlag = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Check an entry before rollout: manifest, checksums, signature, environment, sources.
    For a TARGET, the config options precompile takes find the entry those options built."""
    from aotcache.verify import check

    out = Output(json_out, quiet, verbose)
    import_cwd()
    if ":" in target_or_key:
        target_or_key = with_hf_options(target_or_key, hf_class, no_split)
    bar = not (json_out or quiet)
    overrides = precompile_overrides(compile_sizes, split_points, max_num_batched_tokens, splitting_ops, backend)
    report = check(
        target_or_key,
        cache_dir=cache_dir,
        config_of=lambda fields: config_from(fields, config, compilation_config, overrides),
        trusted_key=trusted_key,
        strict=strict,
        run=run_check,
        watch=lambda: render.RunProgress(enabled=bar),
    )
    if json_out:
        out.emit_json(report.to_json())
    else:
        render.verify_report(out, report.to_json())
    raise typer.Exit(EXIT_OK if report.ok else EXIT_CHECK_FAILED)


@app.command(
    cls=helpformat.Command,
    epilog=helpformat.examples(
        "aotcache clear --broken",
        "aotcache clear --older-than 30d --dry-run",
        "aotcache clear --max-size 5GB --yes",
        "aotcache clear d7d511ad",
        note="Exit codes: 0 done, 1 no such entry or not confirmed, 2 bad input, 3 the cache dir is missing or "
        "something could not be removed.",
    ),
)
@handle_errors
def clear(
    keys: Annotated[
        list[str] | None,
        typer.Argument(metavar="KEY", help="Entry keys (or unique prefixes).", show_default=False),
    ] = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Every entry and leftover.")] = False,
    stale: Annotated[bool, typer.Option("--stale", help="Entries whose traced sources changed.")] = False,
    broken: Annotated[bool, typer.Option("--broken", help="Corrupt entries and unfinished builds.")] = False,
    older_than: Annotated[
        str | None, typer.Option(metavar="AGE", help="Entries not used for this long, e.g. 30d, 12h.")
    ] = None,
    max_size: Annotated[
        str | None,
        typer.Option(metavar="SIZE", help="Evict least recently used entries down to this size, e.g. 5GB."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be removed; remove nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting.")] = False,
    cache_dir: CacheDir = None,
    json_out: JsonFlag = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Remove entries, unfinished builds and idle locks; report what was freed."""
    from aotcache.store.clear import clear as run_clear
    from aotcache.store.clear import parse_duration, parse_size, select

    out = Output(json_out, quiet, verbose)
    import_cwd()
    if not (keys or all_entries or stale or broken or older_than or max_size):
        raise UsageError("nothing selected: pass KEY, --all, --stale, --broken, --older-than or --max-size")
    root = cache_root(cache_dir, must_exist=True)
    chosen, kept, unchecked = select(
        root,
        keys=keys,
        all_entries=all_entries,
        stale=stale,
        broken=broken,
        older_than=parse_duration(older_than) if older_than else None,
        max_size=parse_size(max_size) if max_size is not None else None,
    )
    if chosen and not dry_run and not yes and sys.stdin.isatty() and not json_out:
        render.clear_plan(out, chosen)
        if not typer.confirm(f"Remove {len(chosen)} item(s)?", default=False):
            raise typer.Exit(EXIT_CHECK_FAILED)
    report = run_clear(root, chosen, kept, unchecked, dry_run=dry_run)
    if json_out:
        out.emit_json(report.to_json())
    else:
        render.clear_report(out, report)
    if report.errors:
        message = f"could not remove {len(report.errors)} item(s) of {root.path}: {report.errors[0]}"
        hint = (
            "check the cache dir's permissions and mount, and run `aotcache clear --broken` to repair its "
            "folders; what was not removed is still listed"
        )
        if json_out:  # the report already printed is the one JSON object; stderr says what failed
            raise fail(message, EXIT_ENVIRONMENT, hint)
        raise CacheDirError(message, hint=hint)


def main() -> None:
    """The console script: typer's app, with click's own usage errors (an unknown
    option, a missing argument) also reported as one JSON object under --json."""
    json_mode = "--json" in sys.argv[1:]
    try:
        result = app(standalone_mode=False)
    except Exception as exc:
        code = getattr(exc, "exit_code", None)
        if not (callable(getattr(exc, "show", None)) and isinstance(code, int)):
            if type(exc).__name__ != "Abort":  # click's Abort: a prompt was interrupted
                raise
            stderr.print("aborted", markup=False)
            sys.exit(EXIT_CHECK_FAILED)
        exc.show()  # type: ignore[attr-defined]
        if json_mode:
            message = exc.format_message()  # type: ignore[attr-defined]
            sys.stdout.write(json.dumps(error_json(message, code, kind="UsageError"), indent=2, sort_keys=True) + "\n")
        sys.exit(code)
    sys.exit(result if isinstance(result, int) else EXIT_OK)


app.command(cls=helpformat.Command, epilog=fleet.PUSH_EXAMPLES)(fleet.push)
app.command(cls=helpformat.Command, epilog=fleet.PULL_EXAMPLES)(fleet.pull)
app.command(cls=helpformat.Command, epilog=explain_command.EXPLAIN_EXAMPLES)(explain_command.explain)
app.command(cls=helpformat.Command, epilog=stats_command.STATS_EXAMPLES)(stats_command.stats)


if __name__ == "__main__":
    main()
