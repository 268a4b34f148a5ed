"""What a precompile returns: the entry it built or found, and `precompile --json`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aotcache.store.manifest import SIGNATURE_NAME, Manifest
from aotcache.store.root import size_on_disk

from . import _torch_compat as compat


@dataclass
class PrecompileResult:
    entry_id: str
    path: Path
    hit: bool
    manifest: Manifest
    seconds: dict[str, float] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)  # entry.build_facts of a build; empty on a hit
    remote_trust: str | None = None  # what a remote was trusted with (None: no remote)
    peak_rss: dict[str, int] = field(default_factory=dict)  # bytes, by stage (peak_memory.py); empty on a hit

    @property
    def summary(self) -> dict[str, Any]:
        """What `precompile --json` prints (schema aotcache.precompile/2). A unit is one
        unique piece for one size or range: units = units_compiled + units_shared +
        units_reused (a hit builds nothing); units_reused_remote of those reused came
        from the remote, with bytes_fetched downloaded."""
        stats, build = self.manifest.stats, self.build
        served = self.manifest.served_units
        return {
            "entry": self.entry_id,
            "path": str(self.path),
            "hit": self.hit,
            "model": self.manifest.model_class,
            "signed": (self.path / SIGNATURE_NAME).is_file(),
            "pieces_total": stats.get("pieces_total"),
            "pieces_unique": stats.get("pieces_unique"),
            "sizes_and_ranges": len(served),
            "units": len(served) * (stats.get("pieces_unique") or 0),
            "units_compiled": build.get("units_compiled", 0),
            "units_shared": build.get("units_deduplicated", 0),
            "units_reused": build.get("units_reused", 0),
            "units_reused_remote": build.get("units_reused_remote", 0),
            "bytes_fetched": build.get("bytes_fetched", 0),
            "units_compiled_in_workers": build.get("units_compiled_in_workers", 0),
            "worker_processes": build.get("worker_processes", 0),
            "artifacts": len(self.manifest.artifacts),
            "bytes": size_on_disk(self.path),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "added_sizes": stats.get("added_sizes", []),
            "refused_sizes": stats.get("refused_sizes", []),
            "unchecked_sizes": build.get("unchecked_sizes", []),
            "check_weights_bytes": build.get("check_weights_bytes", 0),
            "peak_rss_bytes": self.peak_rss,
            "remote_trust": self.remote_trust,
            **self._graph_partitions(),
        }

    def _graph_partitions(self) -> dict[str, Any]:
        """Under use_inductor_graph_partition: the partitions of each artifact's Inductor
        graph, in artifact order (None where the format keeps no readable wrapper)."""
        if not self.manifest.config.get("use_inductor_graph_partition"):
            return {}
        counts = []
        for name in sorted(self.manifest.artifacts):
            wrapper = self.manifest.artifacts[name].wrapper
            source = (self.path / wrapper).read_text() if wrapper else ""
            counts.append(compat.inductor_partition_count(source))
        return {"inductor_partitions": counts}
