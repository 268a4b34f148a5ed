"""`aotcache stats`: what the replicas served and why they missed, summed across the
fleet (a stats dir, a remote, or both)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import helpformat, render
from .common import CacheDir, JsonFlag, Output, Quiet, Verbose, handle_errors, stderr
from .fleet import Insecure
from .options import StatsDir

STATS_EXAMPLES = helpformat.examples(
    "AOTCACHE_STATS_DIR=/var/aotcache/stats aotcache stats",
    "aotcache stats --remote s3://ml-artifacts/aotcache --json",
    "aotcache stats --stats-dir ./stats --remote oci://registry.example.com/ml/aotcache",
    note="Exit codes: 0 summed (an unreadable stats file is a warning), 2 bad input, 3 the remote could not be used.",
)


@handle_errors
def stats(
    stats_dir: StatsDir = None,
    remote: Annotated[
        str | None,
        typer.Option("--remote", metavar="REMOTE", help="Also sum the stats pushed there (`push --stats`)."),
    ] = None,
    cache_dir: CacheDir = None,
    insecure: Insecure = False,
    json_out: JsonFlag = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Sum what replicas recorded: hit rates, misses by factor, sizes served, load times."""
    from aotcache.stats.records import read_dir
    from aotcache.stats.sources import default_stats_dir, read_remote
    from aotcache.stats.summary import summarize

    out = Output(json_out, quiet, verbose)
    local = default_stats_dir(stats_dir, cache_dir)
    records, warnings = read_dir(local)
    if remote:
        more, more_warnings = read_remote(remote, insecure=insecure)
        records, warnings = records + more, warnings + more_warnings
    summary = summarize(records, warnings)
    for warning in warnings:
        stderr.print(f"warning: {warning}", markup=False, highlight=False)
    if json_out:
        out.emit_json({**summary.to_json(), "sources": [str(local), *([remote] if remote else [])]})
    else:
        render.stats_report(out, summary, [str(local), *([remote] if remote else [])])
