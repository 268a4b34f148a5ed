"""benchmarks/results/latest.json: each benchmark owns one section of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_section(name: str, report: dict[str, Any]) -> Path:
    """Replace one benchmark's section, keeping the others."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "latest.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or "rows" in data:  # the old one-benchmark layout
        data = {}
    data[name] = report
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
