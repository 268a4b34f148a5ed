"""`aotcache push` and `aotcache pull`: entries between the cache dir and a remote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from aotcache.errors import EXIT_OK, AotCacheError, RemoteError, UsageError

from . import helpformat, render
from .common import CacheDir, JsonFlag, Output, Quiet, Verbose, cache_root, handle_errors
from .options import StatsDir, TrustedKey

PUSH_EXAMPLES = helpformat.examples(
    "aotcache push oci://registry.example.com/ml/aotcache",
    "aotcache push s3://ml-artifacts/aotcache d7d511ad --json",
    "aotcache push oci://127.0.0.1:5000/aot --cache-dir .aotcache",
    "aotcache push s3://ml-artifacts/aotcache --stats --stats-dir /var/aotcache/stats",
    note="Exit codes: 0 every entry sent (or there), 1 an entry failed its checks or the remote holds other bytes, "
    "2 bad input, 3 the remote, the cache dir or the stats dir could not be used.",
)
PULL_EXAMPLES = helpformat.examples(
    "aotcache pull oci://registry.example.com/ml/aotcache --trusted-key release.pub",
    "aotcache pull s3://ml-artifacts/aotcache d7d511ad-3f0c2a19b7e4d5c6",
    note="Exit codes: 0 every entry arrived (or was there), 1 an entry failed its checks or is not on the remote, "
    "2 bad input, 3 the remote or the cache dir could not be used.",
)

Remote = Annotated[
    str,
    typer.Argument(
        metavar="REMOTE",
        help="oci://host[:port]/repository, or an fsspec URL: s3://bucket/prefix, gs://..., file:///path.",
        show_default=False,
    ),
]
Keys = Annotated[
    list[str] | None, typer.Argument(metavar="KEY", help="Entry keys (default: every entry).", show_default=False)
]
Insecure = Annotated[bool, typer.Option("--insecure", help="Plain HTTP to an OCI registry that is not on loopback.")]
TrustUnsignedRemote = Annotated[
    bool,
    typer.Option(
        "--trust-unsigned-remote",
        help="Take unsigned entries and units from --remote (whoever can write it can put code into this build). "
        "Without it, a build that neither signs nor has a trusted key takes nothing from the remote.",
    ),
]


def _finish(out: Output, verb: str, remote: str, results: list[Any]) -> None:
    if out.json:
        out.emit_json(
            {
                "schema": f"aotcache.{verb}/1",
                "remote": remote,
                "entries": [r.to_json() for r in results],
                "bytes_transferred": sum(r.bytes_transferred for r in results),
                "bytes_skipped": sum(r.bytes_skipped for r in results),
                "ok": all(r.error is None for r in results),
            }
        )
        render.transfer_errors(results)  # a CI log still shows what failed
    else:
        render.transfer_report(out, verb, remote, results)
    codes = [r.error.exit_code for r in results if r.error is not None]
    raise typer.Exit(max(codes) if codes else EXIT_OK)


StatsFlag = Annotated[
    bool,
    typer.Option(
        "--stats",
        help="Send the stats dir's files (what replicas loaded, served and missed) instead of entries; "
        "`aotcache stats --remote` reads them back.",
    ),
]


def _push_stats(out: Output, remote: str, stats_dir: Path | None, cache_dir: Path | None, insecure: bool) -> None:
    """`push --stats`: every valid stats file, each replacing the remote's older copy."""
    from aotcache.fleet.connect import open_remote
    from aotcache.stats.remote import push_stats
    from aotcache.stats.sources import default_stats_dir

    folder = default_stats_dir(stats_dir, cache_dir)
    target = open_remote(remote, insecure=insecure)
    try:
        sent = push_stats(folder, target)
    except AotCacheError:
        raise
    except Exception as exc:  # whatever a hostile or broken remote makes a client raise
        raise RemoteError(f"{remote}: pushing stats: {type(exc).__name__}: {exc}") from None
    if out.json:
        out.emit_json(
            {
                "schema": "aotcache.push-stats/1",
                "remote": remote,
                "stats_dir": str(folder),
                "files": sent,
                "sent": len(sent),
                "ok": True,
            }
        )
    else:
        out.paragraph(f"pushed {len(sent)} stats file{'' if len(sent) == 1 else 's'} from {folder} to {remote}")


@handle_errors
def push(
    remote: Remote,
    keys: Keys = None,
    cache_dir: CacheDir = None,
    stats: StatsFlag = False,
    stats_dir: StatsDir = None,
    insecure: Insecure = False,
    json_out: JsonFlag = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Send entries that pass their checks to a registry or object store; blobs the
    remote has are not sent again, and an entry it holds with other bytes is refused.
    With --stats, send the stats dir's files instead."""
    from aotcache.fleet.connect import open_remote
    from aotcache.fleet.push import push as run_push

    out = Output(json_out, quiet, verbose)
    if stats:
        if keys:
            raise UsageError("--stats sends stats files, not entries", hint="drop the KEYs, or push without --stats")
        _push_stats(out, remote, stats_dir, cache_dir, insecure)
        return
    if stats_dir is not None:
        raise UsageError("--stats-dir is only for --stats", hint="add --stats to send the stats dir's files")
    root = cache_root(cache_dir, must_exist=True)
    target = open_remote(remote, insecure=insecure)
    with render.ByteProgress(not (json_out or quiet), "pushing") as bar:
        results = run_push(root, target, keys, progress=bar.advance, on_start=bar.start)
    _finish(out, "push", remote, results)


@handle_errors
def pull(
    remote: Remote,
    keys: Keys = None,
    cache_dir: CacheDir = None,
    trusted_key: TrustedKey = None,
    insecure: Insecure = False,
    json_out: JsonFlag = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Bring entries from a registry or object store into the cache dir: each file is
    checked against its manifest in staging, then the entry appears in one rename."""
    from aotcache.fleet.connect import open_remote
    from aotcache.fleet.pull import pull as run_pull
    from aotcache.store.signing import signature_checker

    out = Output(json_out, quiet, verbose)
    root = cache_root(cache_dir)
    checker = signature_checker(trusted_key)
    target = open_remote(remote, insecure=insecure)
    with render.ByteProgress(not (json_out or quiet), "pulling") as bar:
        results = run_pull(root, target, keys, checker, progress=bar.advance, on_start=bar.start)
    _finish(out, "pull", remote, results)
