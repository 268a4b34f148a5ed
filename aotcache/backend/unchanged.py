"""The no-change path: the entry a precompile would build again, found before any trace.

An entry's id is its lookup key (config, environment, model identity) and its build
factors: the input spec, the -march its kernels are built for, the digest of the source
files its trace went through, and the state the trace read (store/traced_state.py), each recorded
in its manifest. Where every recorded source is found here with the same content and
every recorded setting holds on this model, a trace would go through the same files,
read the same values and reach the same id, so that entry is a hit without one: no
Dynamo, no Inductor, which are nearly all of a precompile that changes nothing. Looked for in the cache dir, then
(precompile --remote) on the remote, where a match is pulled as `aotcache pull` pulls it
(manifest first, every file checked) — a fresh CI runner then builds nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aotcache.errors import AotCacheError, CacheMiss, printable
from aotcache.key.factors import EntryKey, Factor
from aotcache.key.identity import forward_file
from aotcache.key.lookup import lookup_factors
from aotcache.store import signing
from aotcache.store.checks import OpenedEntry, check_sources, environment_problems, open_entry, read_manifest
from aotcache.store.manifest import Manifest
from aotcache.store.root import CacheRoot
from aotcache.store.scan import candidate_entries
from aotcache.store.traced_state import problems as state_problems

log = logging.getLogger("aotcache.precompile")


@dataclass(frozen=True)
class Probe:
    """What a trace would key on that is known before it."""

    lookup: str  # the lookup key's hash: the first half of the entry id
    input_spec: dict[str, Any]
    march: str
    extra: dict[str, Any]  # the Inductor passes' uuids, the CustomOp choices, part_of, where any
    model: Any  # the model being precompiled: every setting the entry's trace read must hold on it

    @classmethod
    def of(cls, model: Any, config: Any, input_spec: dict[str, Any], march: str, extra: list[Factor]) -> Probe:
        lookup = EntryKey(lookup_factors(config, model), []).lookup_hash
        return cls(lookup, input_spec, march, {f.name: f.value for f in extra}, model)

    @property
    def forward_file(self) -> str | None:
        return forward_file(self.model)

    def matches(self, manifest: Manifest) -> bool:
        """The manifest's build factors are what this build's would be: the same input
        spec, -march, passes and CustomOp choices, every traced source found here,
        unchanged, and every setting its trace read the same on this model."""
        build = {factor.name: factor.value for factor in manifest.build}
        if manifest.input_spec != self.input_spec or build.get("march") != self.march:
            return False
        if any(build.get(name) != self.extra.get(name) for name in ("inductor_passes", "custom_ops", "part_of")):
            return False
        forward = self.forward_file
        if forward is not None and forward not in {source["path"] for source in manifest.sources}:
            return False  # every trace goes through forward's file: a list without it is no trace of this model
        if state_problems(manifest.traced_state, self.model):
            return False
        sources = check_sources(manifest)
        return not sources.changed and not sources.unknown


def local_entry(root: CacheRoot, probe: Probe, sign_key: signing.Key | None) -> OpenedEntry | None:
    """A valid entry of the cache dir this build would reproduce (signed by `sign_key`,
    when the build signs: see publish.existing)."""
    check = signing.checker(sign_key) if sign_key is not None else None
    for path in candidate_entries(root, probe.lookup):
        try:
            # The manifest alone first: every file is read and hashed only for a match.
            if probe.matches(read_manifest(path)[0]):
                return open_entry(path, verify_signature=check)
        except (CacheMiss, OSError):
            continue
    return None


def remote_entry(root: CacheRoot, remote: Any, probe: Probe) -> OpenedEntry | None:
    """The same on the remote (a fleet.unit_reuse.RemoteArtifacts): a match is pulled,
    checked with the remote's own signature check (the build's key when it signs), and
    opened. Each candidate is tried on its own: one that is damaged, unsigned or cannot
    be fetched is passed over with a warning (a remote that fails altogether fails every
    candidate, within its deadline), and the build goes on as if there were none."""
    from aotcache.fleet.remote import considered

    if remote.disabled is not None:
        return None
    url = printable(remote.remote.url)
    try:
        remote.remote.restart_deadline()
        candidates = considered(remote.remote.entries_for_lookup(probe.lookup), probe.lookup)
    except Exception as exc:  # whatever a hostile or broken remote makes a client raise
        log.warning("remote %s: no entry taken from it before the trace: %s", url, _why(exc))
        return None
    for entry_id in candidates:  # at most MAX_CANDIDATES, all within the remote's deadline
        try:
            found = _take(root, remote, probe, entry_id)
        except Exception as exc:  # a damaged record or manifest, a bad signature, a failed request: this one
            log.warning("remote %s: entry %s is not taken before the trace: %s", url, entry_id, _why(exc))
            continue
        if found is not None:
            return found
    return None


def _take(root: CacheRoot, remote: Any, probe: Probe, entry_id: str) -> OpenedEntry | None:
    """A remote candidate, pulled and opened if its manifest is what this build would make."""
    from aotcache.fleet.pull import fetch_manifest, pull_entry

    check = remote.verify_signature
    record = remote.remote.record(entry_id)
    if record is None:
        return None
    fetched = fetch_manifest(remote.remote, record, check)
    if environment_problems(fetched[0]) or not probe.matches(fetched[0]):
        return None
    pull_entry(root, remote.remote, record, check, fetched=fetched)
    return open_entry(root.entry_dir(entry_id), verify_signature=check)


def _why(exc: Exception) -> str:
    if isinstance(exc, AotCacheError):
        return exc.one_line()
    return f"{type(exc).__name__}: {printable(str(exc))[:200]}"


def find(
    root: CacheRoot,
    probe: Probe,
    sign_key: signing.Key | None,
    remote: Any,
) -> OpenedEntry | None:
    """The entry this build would make, found before the trace: in the cache dir (read
    only: a hit needs no write access), then (a remote to take entries from) on the
    remote, pulled into the cache dir, which must then be writable."""
    found = local_entry(root, probe, sign_key) if root.path.is_dir() else None
    if found is None and remote is not None:
        root.ensure_writable()
        found = remote_entry(root, remote, probe)
    if found is not None:
        log.info("entry %s: every traced source is unchanged; nothing traced or compiled", found.entry_id)
    return found
