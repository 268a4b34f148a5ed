"""Rich rendering of command results for people (the --json forms bypass this)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from aotcache.progress import STAGE_LABELS, LineProgress, Silent
from aotcache.progress import Progress as ProgressSink

from .common import Output, human_bytes, stderr, stdout

STATUS_STYLE = {
    "ok": "green",
    "stale": "yellow",
    "corrupt": "red",
    "incomplete": "red",
    "incompatible-env": "magenta",
    "untrusted": "red",
    "unsupported-format": "magenta",
    "building": "cyan",
}


class _BarProgress:
    """On a terminal: one bar over the units, its label saying what happens now."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description:<40}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr,
            transient=True,
        )
        self._task = self._progress.add_task(STAGE_LABELS["trace"], total=None)

    def stage(self, name: str) -> None:
        self._progress.update(self._task, description=STAGE_LABELS.get(name, name))

    def stage_done(self, name: str, peak_rss: int | None) -> None:
        pass  # the bar is transient; precompile --json keeps each stage's peak

    def units(self, total: int) -> None:
        self._progress.update(self._task, total=total, description=STAGE_LABELS["compile"])

    def unit_done(self, label: str) -> None:
        self._progress.update(self._task, advance=1, description=label)

    def waiting(self, what: str, seconds: float) -> None:
        self._progress.update(self._task, description=f"waiting {seconds:.0f} s for {what}")


@contextlib.contextmanager
def precompile_progress(enabled: bool) -> Iterator[ProgressSink]:
    """The progress a precompile reports: a bar on a terminal, one plain line per stage,
    unit and heartbeat otherwise (a CI log), nothing when quiet. Always on stderr."""
    if not enabled:
        yield Silent()
    elif stderr.is_terminal:
        bar = _BarProgress()
        with bar._progress:
            yield bar
    else:
        yield LineProgress(lambda line: stderr.print(line, markup=False, highlight=False))


class RunProgress:
    """verify --run: a spinner while the fresh process loads and compares, and a bar
    over CUDA-graph captures when it reports them."""

    def __init__(self, enabled: bool) -> None:
        self._progress = (
            Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=stderr, transient=True
            )
            if enabled
            else None
        )
        self._task: Any = None

    def __enter__(self) -> RunProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("loading in a fresh process and comparing with eager", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, done: int, total: int, label: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total, description=label)


def _table(*headers: str) -> Table:
    """Every table of the CLI looks the same: upper-case headers, no borders."""
    return Table(*headers, box=None, header_style="bold", pad_edge=False, padding=(0, 2, 0, 0))


def _ago(iso: str | None) -> str:
    if not iso:
        return "-"
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    seconds = (datetime.now(UTC) - then).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


def _sizes(report: Any) -> str:
    if report.manifest is None:
        return "-"
    sizes = report.manifest.config.get("compile_sizes") or []
    ranges = [u.range for u in report.manifest.units if u.start != u.end]
    parts = []
    if sizes:
        parts.append(",".join(str(s) for s in sizes))
    parts += [f"[{a},{b}]" for a, b in ranges]
    return " ".join(parts)


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def precompile_summary(out: Output, summary: dict[str, Any]) -> None:
    if "parts" in summary:  # a model served as parts: one entry each (backend/parts.py)
        for path, part in summary["parts"].items():
            out.print(f"[bold]{summary['model']}.{path}[/]")
            precompile_summary(out, part)
        return
    seconds = summary["seconds"]
    trust = summary.get("remote_trust") or ""
    if trust.startswith(("not used", "unsigned")):
        out.print(f"[yellow]![/] remote: {escape(trust)}")
    if summary["hit"]:
        after = seconds.get("total", 0.0) - seconds.get("trace", 0.0)
        how = (
            f"{after:.2f} s after a {seconds['trace']:.2f} s trace"
            if "trace" in seconds
            else f"{after:.2f} s: every traced source unchanged, nothing traced"
        )
        out.print(
            f"[green]✓[/] cache hit: entry [bold]{summary['entry']}[/] is up to date and verified ({how}); "
            "nothing compiled"
        )
        out.print(f"  path   {summary['path']}")
        return
    signed = " signed" if summary.get("signed") else ""
    out.print(f"[green]✓[/] built{signed} entry [bold]{summary['entry']}[/] ({summary['model']})")
    table = Table.grid(padding=(0, 2))
    table.add_row("  pieces", f"{summary['pieces_unique']} unique of {summary['pieces_total']}")
    table.add_row(
        "  units",
        f"{summary['units']} ({_count(summary['sizes_and_ranges'], 'size or range', 'sizes and ranges')} × "
        f"{_count(summary['pieces_unique'], 'unique piece', 'unique pieces')}): {summary['units_compiled']} compiled, "
        f"{summary['units_shared']} shared the compile of another range, {summary['units_reused']} reused"
        + _from_remote(summary),
    )
    table.add_row("  artifacts", f"{summary['artifacts']} ({human_bytes(summary['bytes'])} on disk)")
    if summary.get("added_sizes"):
        table.add_row("  added", f"sizes {summary['added_sizes']} compiled apart (outside the range artifacts' guards)")
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items() if k in ("trace", "compile", "total"))
    table.add_row("  time", timing)
    table.add_row("  path", summary["path"])
    out.print_table(table)
    if "counters" in summary:
        out.print(f"  counters {summary['counters']}")


def _from_remote(summary: dict[str, Any]) -> str:
    remote = summary.get("units_reused_remote", 0)
    if not remote:
        return ""
    return f" ({remote} from the remote, {human_bytes(summary.get('bytes_fetched', 0))} fetched)"


def _key_width(keys: list[str]) -> int:
    """Characters of a key that tell every listed key apart (as git's short hashes),
    at least 12."""
    width = 12
    while width < max((len(k) for k in keys), default=0) and len({k[:width] for k in keys}) < len(keys):
        width += 1
    return width


# inspect-cache's columns: (header, cell, justify); the first five are always shown,
# the others while the table fits the width, in this order (all with --wide).
_ESSENTIAL = ("KEY", "MODEL", "SIZES / RANGES", "SIZE", "STATUS")
_OPTIONAL = ("CREATED", "LAST USED", "MODE", "ARTIFACTS", "LOAD NEEDS")
_RIGHT = {"SIZE", "ARTIFACTS"}


def _cells(r: Any, key_width: int) -> dict[str, str]:
    mode = r.manifest.config.get("mode", "-") if r.manifest else "-"
    backend = r.manifest.config.get("backend") if r.manifest else None
    style = STATUS_STYLE.get(r.status, "")
    return {
        "KEY": r.entry_id[:key_width],
        "MODEL": f"{r.part_of} ({r.model})" if r.part_of else r.model,  # a part: under its model
        "SIZES / RANGES": _sizes(r),
        "SIZE": human_bytes(r.bytes),
        "STATUS": f"[{style}]{r.status}[/]" if style else r.status,
        "CREATED": _ago(r.created),
        "LAST USED": _ago(r.last_used),
        "MODE": f"{mode}/{backend}" if backend else str(mode),
        "ARTIFACTS": str(len(r.manifest.artifacts)) if r.manifest else "-",
        "LOAD NEEDS": ", ".join(r.load_needs) or "-",
    }


def _plain_width(cell: str) -> int:
    return len(Text.from_markup(cell).plain)


def _columns(rows: list[dict[str, str]], width: int, wide: bool) -> list[str]:
    """The essential columns, then every optional one that still fits in `width`."""
    if wide:
        return [*_ESSENTIAL[:4], *_OPTIONAL, "STATUS"]

    def needed(column: str) -> int:
        return max([len(column)] + [_plain_width(r[column]) for r in rows]) + 2

    chosen = list(_ESSENTIAL)
    used = sum(needed(c) for c in chosen)
    for column in _OPTIONAL:
        if used + needed(column) <= width:
            chosen.insert(len(chosen) - 1, column)
            used += needed(column)
    return chosen


def cache_table(out: Output, root: Any, reports: list[Any], *, wide: bool = False) -> None:
    """One row per entry, with as many columns as the width allows (KEY, MODEL, SIZES /
    RANGES, SIZE and STATUS always; --wide: all, with the whole key)."""
    if not reports:
        out.print(f"no entries in {root.path}")
        return
    key_width = max(len(r.entry_id) for r in reports) if wide else _key_width([r.entry_id for r in reports])
    rows = [_cells(r, key_width) for r in reports]
    columns = _columns(rows, stdout.width, wide)
    table = _table()
    for column in columns:
        table.add_column(column, justify="right" if column in _RIGHT else "left", no_wrap=column != "MODEL")
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    out.print(f"entries in {root.path}")
    out.print_table(table, wide=wide)
    complete = [r for r in reports if r.manifest is not None]
    leftover = [r for r in reports if r.manifest is None]
    noun = "entry" if len(complete) == 1 else "entries"
    line = f"{len(complete)} {noun}, {human_bytes(sum(r.bytes for r in complete))}"
    if leftover:
        line += (
            f"; {len(leftover)} leftovers, {human_bytes(sum(r.bytes for r in leftover))} (`aotcache clear --broken`)"
        )
    out.print(line)
    for r in reports:
        for p in r.problems:
            detail = "; ".join(f"{d.name}: {d.old} -> {d.new}" for d in p.differences[:3])
            more = f" (+{len(p.differences) - 3} more)" if len(p.differences) > 3 else ""
            found = f"{p.message}{': ' + detail if detail else ''}{more}"
            out.paragraph(f"{r.entry_id[:key_width]} {p.status}: {found}", "  ")
        for warning in getattr(r, "warnings", []):
            out.paragraph(f"{r.entry_id[:key_width]} warning: {warning}", "  ")


def entry_detail(out: Output, report: Any) -> None:
    style = STATUS_STYLE.get(report.status, "")
    out.print(f"[bold]{report.entry_id}[/]  [{style}]{report.status}[/]  {human_bytes(report.bytes)}")
    out.print(f"  path     {report.path}")
    if report.manifest is None:
        for p in report.problems:
            out.print(f"  {p.status}: {p.message}")
        return
    m = report.manifest
    part = f" (part {report.part_of})" if report.part_of else ""
    out.print(f"  model    {m.model_class}{part}   created {_ago(m.created)}   last used {_ago(report.last_used)}")
    out.paragraph(f"loading needs {', '.join(report.load_needs) or 'nothing but torch (compiler-free)'}", "  ")
    state = m.traced_state
    covered = sum(state.not_checked.values())
    out.paragraph(
        f"traced state: {state.count} checks on the model at load ({covered} more of Dynamo's guards covered by "
        "other checks)",
        "  ",
    )
    factors = _table("KEY FACTOR", "VALUE")
    for factor in m.lookup + m.build:
        value = factor.value if not isinstance(factor.value, (list, dict)) else str(factor.value)
        factors.add_row(factor.name, str(value))
    out.print_table(factors)
    recorded = _table("BUILD HOST", "VALUE")
    for name, value in sorted(m.recorded.items()):
        text = " ".join(value) if isinstance(value, list) else str(value)
        recorded.add_row(name, text if len(text) < 100 else text[:97] + "...")
    out.print_table(recorded)
    out.paragraph("config: " + ", ".join(f"{k}={v}" for k, v in m.config.items() if v not in (None, [], {})))
    sources = _table("TRACED FILE", "SHA256")
    for s in m.sources:
        sources.add_row(s["path"], s["sha256"][:16])
    out.print_table(sources)
    files = _table("FILE", "BYTES", "SHA256")
    for rel, rec in sorted(m.files.items()):
        files.add_row(rel if len(rel) < 60 else rel[:28] + "…" + rel[-28:], human_bytes(rec.bytes), rec.sha256[:16])
    out.print_table(files)
    for p in report.problems:
        out.paragraph(f"{p.status}: {p.message}")
        for d in p.differences:
            out.paragraph(f"{d.name}: {d.old} -> {d.new}", "    ")


def verify_report(out: Output, report: dict[str, Any]) -> None:
    if "parts" in report:  # a model served as parts: each part's entry
        for path, part in report["parts"].items():
            out.print(f"[bold]{report['model']}.{path}[/]")
            verify_report(out, part)
        verdict = "[green]PASS[/]" if report["ok"] else "[red]FAIL[/]"
        out.print(f"{verdict}: {report['model']}, {len(report['parts'])} parts")
        return
    if report.get("entry"):
        out.print(f"entry [bold]{report['entry']}[/] ({report.get('model')})")
        needs = report.get("load_needs") or []
        out.print(f"  loading needs {', '.join(needs) or 'nothing but torch (compiler-free)'}")
    for check in report["checks"]:
        mark = "[green]✓[/]" if check["ok"] else "[red]✗[/]"
        out.print(f"  {mark} {check['check']:<12} {check['message']}")
        for d in check["differences"]:
            out.print(f"      {d['name']}: {d['old']} -> {d['new']}", markup=False)
    for warning in report.get("warnings", []):
        out.print(f"  [yellow]![/] {warning}")
    run = report.get("run")
    if run is not None:
        if run.get("error"):
            out.print(f"  [red]✗[/] run          {run['error']}")
        else:
            out.print(
                f"  {'[green]✓[/]' if run['ok'] else '[red]✗[/]'} run          fresh process loaded it in "
                f"{run['load_seconds']:.3f} s; outputs vs eager (tolerance {run['tolerance']}):"
            )
            table = _table("SIZE", "UNIT", "MAX ABS DIFF", "")
            for r in run["results"]:
                table.add_row(
                    str(r["size"]),
                    f"[{r['unit'][0]}, {r['unit'][1]}]",
                    f"{r['max_abs_diff']:.2e}",
                    "[green]ok[/]" if r["ok"] else "[red]FAIL[/]",
                )
            out.print_table(table)
    verdict = "[green]PASS[/]" if report["ok"] else "[red]FAIL[/]"
    out.print(f"{verdict}{' (strict)' if report.get('strict') else ''}")


def clear_plan(out: Output, chosen: list[Any]) -> None:
    for report, reason in chosen:
        stderr.print(f"  {report.entry_id} {human_bytes(report.bytes):>9}  {reason}", markup=False)


def clear_report(out: Output, report: Any) -> None:
    verb = "would remove" if report.dry_run else "removed"
    for r in report.removed:
        failed = f"  (partly: {r.error})" if r.error else ""
        out.print(f"  {verb} {r.key} {human_bytes(r.bytes):>9}  {r.reason}{failed}", markup=False)
    for r in report.not_removed:
        out.print(f"  could not remove {r.key}: {r.error}", markup=False)
    freeing = "freeing" if report.dry_run else "freed"
    kept = f"{report.kept} {'entry' if report.kept == 1 else 'entries'} kept"
    failed = f" ({len(report.not_removed)} could not be removed)" if report.not_removed else ""
    out.print(f"{verb} {len(report.removed)} item(s), {freeing} {human_bytes(report.freed)}; {kept}{failed}")
    if report.unchecked:
        count = len(report.unchecked)
        what = "entry" if count == 1 else "entries"
        out.paragraph(f"warning: {count} {what} not checked for staleness: {report.unchecked[0]}", "  ")


class ByteProgress:
    """push / pull: a bar over bytes, on stderr, only on a terminal."""

    def __init__(self, enabled: bool, verb: str) -> None:
        self._progress = (
            Progress(
                TextColumn(verb),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=stderr,
                transient=True,
            )
            if enabled and stderr.is_terminal
            else None
        )
        self._task: Any = None

    def __enter__(self) -> ByteProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def advance(self, size: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=size)


def transfer_report(out: Output, verb: str, remote: str, results: list[Any]) -> None:
    """One row per entry: what moved, what was already there, what failed and why."""
    table = _table()
    for column in ("KEY", "STATUS", "SIZE", "SENT" if verb == "push" else "DOWNLOADED", "SKIPPED"):
        table.add_column(column, justify="left" if column in ("KEY", "STATUS") else "right", no_wrap=True)
    for done in results:
        style = "red" if done.status == "failed" else "green"
        table.add_row(
            done.entry_id,
            f"[{style}]{done.status}[/]",
            human_bytes(done.bytes),
            human_bytes(done.bytes_transferred),
            human_bytes(done.bytes_skipped),
        )
    if results:
        out.print(f"{verb} {remote}", markup=False)
        out.print_table(table)
    else:
        out.print(f"nothing to {verb}")
    transfer_errors(results)


def transfer_errors(results: list[Any]) -> None:
    """One line on stderr for each entry that failed."""
    for done in results:
        if done.error is not None:
            line = done.error.one_line()
            stderr.print(f"error: {line}" if done.entry_id in line else f"error: {done.entry_id}: {line}", markup=False)


def stats_report(out: Output, summary: Any, sources: list[str]) -> None:
    """Tables that fit 80 columns: models, misses, sizes, load times."""
    from aotcache.stats.summary import differences_text

    out.paragraph(f"{summary.processes} process(es), {summary.calls} call(s), from {', '.join(sources)}")
    if not summary.models:
        out.print("no stats recorded (serve with AOTCACHE_STATS_DIR set, or load(stats_dir=...))")
        return
    table = _table("MODEL", "LOADS", "MISSES", "HIT RATE", "CALLS")
    for model in summary.models:
        name = model.model if len(model.model) <= 36 else "…" + model.model[-35:]
        table.add_row(name, str(model.loads), str(model.misses), f"{model.hit_rate:.0%}", str(model.calls))
    out.print_table(table)
    for group in summary.misses:
        because = differences_text(group.differences) or group.message
        out.paragraph(f"miss ({group.reason}) ×{group.count} in {group.processes} replica(s): {because}")
    if summary.histogram:
        table = _table("SIZE", "CALLS", "SHARE", "SERVED BY")
        by_unit = {h.size: h.served_by for h in summary.hot_range_sizes}
        hottest = sorted(summary.histogram.items(), key=lambda item: (-item[1], item[0]))[:10]
        for size, calls in hottest:
            unit = by_unit.get(size) or next((e.served_by[size] for e in summary.entries if size in e.served_by), "?")
            table.add_row(str(size), str(calls), f"{calls / summary.calls:.0%}", unit)
        out.print_table(table)
    if summary.hot_range_sizes:
        top = ", ".join(f"{h.size} ({h.calls})" for h in summary.hot_range_sizes[:8])
        out.paragraph(f"hottest sizes a range serves (candidates for compile_sizes): {top}")
    p = summary.load_seconds
    if p["p50"] is not None:
        out.print(f"load time: p50 {p['p50']:.2f} s, p90 {p['p90']:.2f} s, p99 {p['p99']:.2f} s, max {p['max']:.2f} s")
