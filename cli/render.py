"""Rich rendering of command results for people (the --json forms bypass this)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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

from .common import Output, human_bytes, stderr

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


class PrecompileProgress:
    """The backend's progress sink: a bar over compile units, on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> PrecompileProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description:<32}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=stderr,
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def stage(self, name: str) -> None:
        if self._progress is not None:
            label = {"trace": "tracing with Dynamo", "publish": "publishing"}.get(name, name)
            if self._task is None:
                self._task = self._progress.add_task(label, total=None)
            else:
                self._progress.update(self._task, description=label)

    def units(self, total: int) -> None:
        if self._progress is not None:
            if self._task is None:
                self._task = self._progress.add_task("compiling", total=total)
            self._progress.update(self._task, total=total, description="compiling")

    def unit_done(self, label: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, description=label)


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
    ranges = [u["range"] for u in report.manifest.units if u["range"][0] != u["range"][1]]
    parts = []
    if sizes:
        parts.append(",".join(str(s) for s in sizes))
    parts += [f"[{a},{b}]" for a, b in ranges]
    return " ".join(parts)


def precompile_summary(out: Output, summary: dict[str, Any]) -> None:
    seconds = summary["seconds"]
    if summary["hit"]:
        after = seconds.get("total", 0.0) - seconds.get("trace", 0.0)
        out.print(
            f"[green]✓[/] cache hit: entry [bold]{summary['entry']}[/] is up to date and verified "
            f"({after:.2f} s after a {seconds.get('trace', 0.0):.2f} s trace); nothing compiled"
        )
        out.print(f"  path   {summary['path']}")
        return
    out.print(f"[green]✓[/] compiled entry [bold]{summary['entry']}[/] ({summary['model']})")
    table = Table.grid(padding=(0, 2))
    table.add_row("  pieces", f"{summary['pieces_unique']} unique / {summary['pieces_total']} total")
    table.add_row(
        "  units",
        f"{summary['units_compiled']} compiled, {summary.get('units_deduplicated', 0)} the same compile as another, "
        f"{summary.get('units_reused', 0)} reused from earlier builds "
        f"({summary['units']} sizes/ranges × {summary['pieces_unique']} unique pieces)",
    )
    table.add_row("  artifacts", f"{summary['artifacts']} ({human_bytes(summary['bytes'])} on disk)")
    if summary.get("added_sizes"):
        table.add_row("  added", f"sizes {summary['added_sizes']} compiled apart (outside the range artifacts' guards)")
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items() if k in ("trace", "compile", "total"))
    table.add_row("  time", timing)
    table.add_row("  path", summary["path"])
    out.print(table)
    if "counters" in summary:
        out.print(f"  counters {summary['counters']}")


def cache_table(out: Output, root: Any, reports: list[Any]) -> None:
    if not reports:
        out.print(f"no entries in {root.path}")
        return
    table = Table(title=f"aotcache entries in {root.path}", title_justify="left", header_style="bold")
    for column in (
        "KEY",
        "MODEL",
        "MODE",
        "SIZES / RANGES",
        "ARTIFACTS",
        "LOAD NEEDS",
        "SIZE ON DISK",
        "CREATED",
        "LAST USED",
        "STATUS",
    ):
        table.add_column(
            column,
            justify="right" if column in ("ARTIFACTS", "SIZE ON DISK") else "left",
            no_wrap=column in ("KEY", "STATUS", "SIZE ON DISK"),
        )
    for r in reports:
        mode = r.manifest.config.get("mode", "-") if r.manifest else "-"
        backend = r.manifest.config.get("backend") if r.manifest else None
        style = STATUS_STYLE.get(r.status, "")
        table.add_row(
            r.entry_id[:23],
            r.model,
            f"{mode}/{backend}" if backend else mode,
            _sizes(r),
            str(len(r.manifest.artifacts)) if r.manifest else "-",
            ", ".join(r.load_needs) or "-",
            human_bytes(r.bytes),
            _ago(r.created),
            _ago(r.last_used),
            f"[{style}]{r.status}[/]" if style else r.status,
        )
    out.print(table)
    complete = [r for r in reports if r.manifest is not None]
    leftover = [r for r in reports if r.manifest is None]
    noun = "entry" if len(complete) == 1 else "entries"
    line = f"{len(complete)} {noun}, {human_bytes(sum(r.bytes for r in complete))}"
    if leftover:
        line += (
            f"; {len(leftover)} leftovers, {human_bytes(sum(r.bytes for r in leftover))} (`aotcache clear --broken`)"
        )
    out.print(line)
    problems = [r for r in reports if r.problems]
    for r in problems:
        for p in r.problems:
            detail = "; ".join(f"{d.name}: {d.old} -> {d.new}" for d in p.differences[:3])
            more = f" (+{len(p.differences) - 3} more)" if len(p.differences) > 3 else ""
            out.print(f"  [dim]{r.entry_id[:16]}[/] {p.status}: {p.message}{': ' + detail if detail else ''}{more}")


def entry_detail(out: Output, report: Any) -> None:
    style = STATUS_STYLE.get(report.status, "")
    out.print(f"[bold]{report.entry_id}[/]  [{style}]{report.status}[/]  {human_bytes(report.bytes)}")
    out.print(f"  path     {report.path}")
    if report.manifest is None:
        for p in report.problems:
            out.print(f"  {p.status}: {p.message}")
        return
    m = report.manifest
    out.print(f"  model    {m.model_class}   created {m.created}   last used {_ago(report.last_used)}")
    out.print(f"  loading needs {', '.join(report.load_needs) or 'nothing but torch (compiler-free)'}")
    factors = Table("FACTOR", "VALUE", title="key factors", title_justify="left", header_style="bold")
    for factor in m.lookup + m.build:
        value = factor.value if not isinstance(factor.value, (list, dict)) else str(factor.value)
        factors.add_row(factor.name, str(value))
    out.print(factors)
    recorded = Table("BUILD HOST", "VALUE", header_style="bold")
    for name, value in sorted(m.recorded.items()):
        text = " ".join(value) if isinstance(value, list) else str(value)
        recorded.add_row(name, text if len(text) < 100 else text[:97] + "...")
    out.print(recorded)
    out.print("config: " + ", ".join(f"{k}={v}" for k, v in m.config.items() if v not in (None, [], {})))
    sources = Table("TRACED FILE", "SHA256", header_style="bold")
    for s in m.sources:
        sources.add_row(s["path"], s["sha256"][:16])
    out.print(sources)
    files = Table("FILE", "BYTES", "SHA256", header_style="bold")
    for rel, rec in sorted(m.files.items()):
        files.add_row(rel if len(rel) < 60 else rel[:28] + "…" + rel[-28:], human_bytes(rec.bytes), rec.sha256[:16])
    out.print(files)
    for p in report.problems:
        out.print(f"[{STATUS_STYLE.get(p.status, '')}]{p.status}[/]: {p.message}")
        for d in p.differences:
            out.print(f"    {d.name}: {d.old} -> {d.new}", markup=False)


def verify_report(out: Output, report: dict[str, Any]) -> None:
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
            table = Table("SIZE", "UNIT", "MAX ABS DIFF", "", header_style="bold", box=None, padding=(0, 2))
            for r in run["results"]:
                table.add_row(
                    str(r["size"]),
                    f"[{r['unit'][0]}, {r['unit'][1]}]",
                    f"{r['max_abs_diff']:.2e}",
                    "[green]ok[/]" if r["ok"] else "[red]FAIL[/]",
                )
            out.print(table)
    verdict = "[green]PASS[/]" if report["ok"] else "[red]FAIL[/]"
    out.print(f"{verdict}{' (strict)' if report.get('strict') else ''}")


def clear_plan(out: Output, chosen: list[Any]) -> None:
    for report, reason in chosen:
        stderr.print(f"  {report.entry_id[:24]:<24} {human_bytes(report.bytes):>9}  {reason}", markup=False)


def clear_report(out: Output, report: Any) -> None:
    verb = "would remove" if report.dry_run else "removed"
    for r in report.removed:
        failed = f"  (not removed: {r.error})" if r.error else ""
        out.print(f"  {verb} {r.key[:32]:<32} {human_bytes(r.bytes):>9}  {r.reason}{failed}", markup=False)
    freeing = "freeing" if report.dry_run else "freed"
    kept = f"{report.kept} {'entry' if report.kept == 1 else 'entries'} kept"
    out.print(f"{verb} {len(report.removed)} item(s), {freeing} {human_bytes(report.freed)}; {kept}")


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
    table = Table(title=f"{verb} {remote}", title_justify="left")
    for column in ("key", "status", "size", "sent" if verb == "push" else "downloaded", "skipped"):
        table.add_column(column)
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
        out.print(table)
    else:
        out.print(f"nothing to {verb}")
    for done in results:
        if done.error is not None:
            line = done.error.one_line()
            stderr.print(f"error: {line}" if done.entry_id in line else f"error: {done.entry_id}: {line}", markup=False)
