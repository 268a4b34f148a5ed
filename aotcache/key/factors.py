"""The cache key: an ordered list of named factors, so that a miss can be explained.

Two parts, because the serving host must find an entry *before* tracing anything:

* the lookup key: the graph-changing config fields, the model's identity and the
  environment factors that a serving host can compute cheaply (no compiler, no Dynamo);
* the build factors: what only the compile side knows (compiler, the vector ISA Inductor
  picked, torch_key(), traced sources, input spec). They are recorded in the manifest
  and checked at load where the host can check them; they make the entry id unique.

An entry's id is `<lookup hash>-<build hash>`: several builds of one lookup key (other
sources, another compiler) live side by side.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aotcache.errors import Difference

log = logging.getLogger("aotcache.key.factors")

KEY_DIGEST_CHARS = 16


@dataclass(frozen=True)
class Factor:
    name: str
    value: Any

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value}


def factors_from_json(items: Iterable[dict[str, Any]]) -> list[Factor]:
    return [Factor(str(item["name"]), item["value"]) for item in items]


def digest(value: Any) -> str:
    """sha256 of a JSON-ready value, canonically encoded."""
    payload = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def hash_factors(factors: Sequence[Factor]) -> str:
    for factor in factors:
        log.debug("key factor %s = %r", factor.name, factor.value)
    return digest([[f.name, f.value] for f in factors])


def lookup_hash(factors: Sequence[Factor]) -> str:
    """The short hash that names an entry's lookup key (the first half of its id)."""
    return hash_factors(factors)[:KEY_DIGEST_CHARS]


@dataclass(frozen=True)
class EntryKey:
    lookup: list[Factor]
    build: list[Factor]

    @property
    def lookup_hash(self) -> str:
        return lookup_hash(self.lookup)

    @property
    def build_hash(self) -> str:
        return hash_factors(self.build)[:KEY_DIGEST_CHARS]

    @property
    def entry_id(self) -> str:
        return f"{self.lookup_hash}-{self.build_hash}"


def explain(old: Sequence[Factor], new: Sequence[Factor]) -> list[Difference]:
    """Which named factors differ between two keys, with the old and new value.

    A factor present on one side only shows as missing (None) on the other.
    """
    old_map = {f.name: f.value for f in old}
    new_map = {f.name: f.value for f in new}
    names = list(old_map) + [n for n in new_map if n not in old_map]
    return [
        Difference(name, old_map.get(name), new_map.get(name))
        for name in names
        if old_map.get(name) != new_map.get(name)
    ]
