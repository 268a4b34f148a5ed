"""Process-wide counters, like vLLM's compilation_counter: what the cache did."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CompilationCounter:
    models_seen: int = 0
    traces: int = 0
    compiles: int = 0  # compile units run through Inductor
    entries_saved: int = 0
    entries_loaded: int = 0
    remote_pulls: int = 0  # entries a load pulled from a remote after a local miss
    bytes_downloaded: int = 0
    misses: Counter[str] = field(default_factory=Counter)  # by reason

    def snapshot(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["misses"] = dict(self.misses)
        return data

    def reset(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, Counter() if f.name == "misses" else 0)


counters = CompilationCounter()
