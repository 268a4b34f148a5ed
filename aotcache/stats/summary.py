"""Summing serving records across a fleet: hit rates, misses by reason and factor, the
size histogram, the hot sizes a range serves (what `precompile --sizes-from` compiles),
load-time percentiles. Plain dataclasses; the CLI only renders them."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from .records import ProcessStats


@dataclass
class EntrySummary:
    entry_id: str
    model: str
    loads: int
    misses: int  # misses of the same lookup key
    calls: int
    hit_rate: float
    sizes: dict[int, int] = field(default_factory=dict)
    served_by: dict[int, str] = field(default_factory=dict)


@dataclass
class ModelSummary:
    model: str
    loads: int
    misses: int
    calls: int
    hit_rate: float


@dataclass
class MissGroup:
    """Misses of one model for one reason and the same differing factors."""

    model: str
    reason: str
    message: str
    differences: list[dict[str, Any]]
    count: int
    processes: int  # replicas that saw it


@dataclass
class HotSize:
    size: int
    calls: int
    share: float  # of every recorded call of the model
    served_by: str


@dataclass
class FleetStats:
    processes: int
    calls: int
    entries: list[EntrySummary]
    models: list[ModelSummary]
    misses: list[MissGroup]
    histogram: dict[int, int]  # size -> calls, every model
    hot_range_sizes: list[HotSize]  # served by a range (or a padded graph), hottest first
    load_seconds: dict[str, float | None]  # p50, p90, p99, max
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = "aotcache.stats/1"
        data["histogram"] = {str(k): v for k, v in sorted(self.histogram.items())}
        for entry in data["entries"]:
            entry["sizes"] = {str(k): v for k, v in sorted(entry["sizes"].items())}
            entry["served_by"] = {str(k): v for k, v in sorted(entry["served_by"].items())}
        return data


def newest_per_process(records: list[ProcessStats]) -> list[ProcessStats]:
    """One record per process file: a file pushed and also read locally counts once (the
    copy written last)."""
    newest: dict[str, ProcessStats] = {}
    for record in records:
        kept = newest.get(record.name)
        if kept is None or record.updated > kept.updated:
            newest[record.name] = record
    return [newest[name] for name in sorted(newest)]


@dataclass
class _Seen:
    """Every record's entries, summed by entry id."""

    loads: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sizes: dict[str, dict[int, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    served_by: dict[str, dict[int, str]] = field(default_factory=lambda: defaultdict(dict))
    model_of: dict[str, str] = field(default_factory=dict)
    lookup_of: dict[str, str] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)

    def add(self, record: ProcessStats) -> None:
        for entry in record.entries.values():
            self.loads[entry.entry_id] += entry.loads
            self.model_of[entry.entry_id], self.lookup_of[entry.entry_id] = entry.model, entry.lookup
            self.seconds += entry.load_seconds
            for size, count in entry.calls.items():
                self.sizes[entry.entry_id][size] += count
            self.served_by[entry.entry_id].update(entry.served_by)


def _group_misses(records: list[ProcessStats]) -> tuple[list[MissGroup], dict[str, int], dict[str, int]]:
    """Misses grouped by model, reason and differing factors; and counted by lookup key
    and by model."""
    groups: dict[tuple[str, str, str], MissGroup] = {}
    by_lookup: dict[str, int] = defaultdict(int)
    by_model: dict[str, int] = defaultdict(int)
    for record in records:
        for miss in record.misses:
            by_lookup[miss.lookup] += miss.count
            by_model[miss.model] += miss.count
            group = groups.get(miss.kind)
            if group is None:
                group = groups[miss.kind] = MissGroup(miss.model, miss.reason, miss.message, miss.differences, 0, 0)
            group.count += miss.count
            group.processes += 1
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.model, g.reason))
    return ordered, by_lookup, by_model


def summarize(records: list[ProcessStats], warnings: list[str] | None = None) -> FleetStats:
    records = newest_per_process(records)
    seen = _Seen()
    for record in records:
        seen.add(record)
    misses, missed_lookups, missed_models = _group_misses(records)
    entries = []
    for entry_id in sorted(seen.loads):
        loads, sizes = seen.loads[entry_id], dict(sorted(seen.sizes[entry_id].items()))
        missed = missed_lookups.get(seen.lookup_of[entry_id], 0)
        served_by = dict(sorted(seen.served_by[entry_id].items()))
        calls, model = sum(sizes.values()), seen.model_of[entry_id]
        entries.append(EntrySummary(entry_id, model, loads, missed, calls, _rate(loads, missed), sizes, served_by))
    models = []
    for model in sorted(set(seen.model_of.values()) | set(missed_models)):
        mine = [e for e in entries if e.model == model]
        hits, missed = sum(e.loads for e in mine), missed_models.get(model, 0)
        models.append(ModelSummary(model, hits, missed, sum(e.calls for e in mine), _rate(hits, missed)))
    histogram: dict[int, int] = defaultdict(int)
    for entry in entries:
        for size, count in entry.sizes.items():
            histogram[size] += count
    return FleetStats(
        processes=len(records),
        calls=sum(histogram.values()),
        entries=entries,
        models=models,
        misses=misses,
        histogram=dict(sorted(histogram.items())),
        hot_range_sizes=hot_sizes(entries),
        load_seconds=_percentiles(seen.seconds),
        warnings=list(warnings or []),
    )


def hot_sizes(entries: list[EntrySummary], model: str | None = None) -> list[HotSize]:
    """Sizes served by a range or a padded graph rather than their own compile size,
    hottest first (ties: the smaller size), with their share of the model's calls."""
    calls: dict[int, int] = defaultdict(int)
    how: dict[int, str] = {}
    total = 0
    for entry in entries:
        if model is not None and entry.model != model:
            continue
        total += entry.calls
        for size, count in entry.sizes.items():
            unit = entry.served_by.get(size, "?")
            if unit.rpartition(", ")[2] == f"size {size}":  # its own compile size (under a graph or not)
                continue
            calls[size] += count
            how[size] = unit
    ordered = sorted(calls.items(), key=lambda item: (-item[1], item[0]))
    return [HotSize(size, count, count / total if total else 0.0, how[size]) for size, count in ordered]


def _rate(hits: int, misses: int) -> float:
    return hits / (hits + misses) if hits + misses else 0.0


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 4)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1], 4)}


def differences_text(differences: list[dict[str, Any]]) -> str:
    """ "torch.version 2.13.0 in the entry, 2.14.1 here" per factor, for people."""
    parts = []
    for d in differences:
        old, new = (json.dumps(v) if not isinstance(v, str) else v for v in (d.get("old"), d.get("new")))
        parts.append(f"{d.get('name')}: {old} in the entry, {new} here")
    return "; ".join(parts)


@dataclass
class SizeChoice:
    """The sizes `precompile --sizes-from` adds, and the share of the model's recorded
    calls they cover."""

    source: str
    sizes: list[int]
    calls: int  # of the added sizes
    total: int  # every recorded call of the model

    @property
    def share(self) -> float:
        return self.calls / self.total if self.total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "added": self.sizes,
            "calls": self.calls,
            "total": self.total,
            "share": self.share,
        }


def choose_sizes(
    summary: FleetStats, source: str, model: str, have: list[int], max_size: int, limit: int
) -> SizeChoice:
    """The hottest sizes of `model` served by a range, not yet compile sizes, at most
    `max_size`, up to `limit` of them."""
    mine = [e for e in summary.entries if e.model == model]
    hot = [h for h in hot_sizes(mine) if h.size not in have and 1 <= h.size <= max_size][:limit]
    return SizeChoice(source, sorted(h.size for h in hot), sum(h.calls for h in hot), sum(e.calls for e in mine))
