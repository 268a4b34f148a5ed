"""Incremental precompile: an index of built artifacts, so that a rebuild compiles only
the units whose inputs changed.

An artifact depends on the piece's graph (its digest: code and input metadata), the
unit (range or size), the Inductor config, the artifact format and the build
environment (torch, compiler, vector ISA, -march, threads) — not on the text of the
traced source files. `index/<unit key>.json` in the cache dir names the entry and the
artifact built for that key. A later precompile (after a comment-only edit, an added
compile size, a changed layer) takes the artifact from that entry instead of compiling,
but only from an entry that passes every check (and, when signing, is signed by the
same key), reading its bytes as the loader does. Reused artifacts were self-checked when
they were first built.

With a remote (`precompile --remote`), a unit key the local index lacks is looked up in
the remote's unit index next (aotcache/fleet/unit_reuse.py), so a fresh CI runner
reuses what another runner pushed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aotcache.configuration import CompilationConfig, Range
from aotcache.errors import CacheMiss
from aotcache.formats import Artifact
from aotcache.key.factors import digest
from aotcache.store import signing
from aotcache.store.checks import OpenedEntry, open_entry
from aotcache.store.root import CacheRoot

if TYPE_CHECKING:
    from aotcache.fleet.unit_reuse import RemoteArtifacts

log = logging.getLogger("aotcache.reuse")


@dataclass
class ReusedUnit:
    """A unit taken from an earlier entry: its artifact record and files, and guards."""

    unit: Range
    name: str
    record: Artifact  # its guards included
    files: dict[str, bytes]
    guards: str | None
    source_entry: str
    remote: bool = False  # taken from a remote's entry
    bytes_fetched: int = 0  # downloaded for it


# The format of a unit's artifact, in its key. Manifest format 3 (traced state) left
# units as they were, so the units of format-2 entries are still taken.
UNIT_FORMAT_VERSION = 2


def unit_key(piece_digest: str, unit: Range, config: CompilationConfig, environment: dict[str, Any]) -> str:
    """Everything a compiled unit depends on, hashed."""
    return digest(
        {
            "aotcache.format": UNIT_FORMAT_VERSION,
            "piece": piece_digest,
            "unit": [unit.start, unit.end],
            "inductor_compile_config": config.inductor_compile_config,
            "artifact_format": config.artifact_format,
            "environment": environment,
        }
    )


class ArtifactIndex:
    def __init__(
        self,
        root: CacheRoot,
        sign_key: signing.Key | None,
        *,
        reuse: bool = True,
        remote: RemoteArtifacts | None = None,
    ) -> None:
        """`reuse=False` (precompile --force) compiles everything but still records;
        `remote`: where to look for a unit key this cache dir lacks."""
        self.root = root
        self.sign_key = sign_key
        self.reuse = reuse
        self.remote = remote
        self._entries: dict[str, OpenedEntry | None] = {}

    def find(self, key: str, unit: Range) -> ReusedUnit | None:
        """The artifact an earlier, valid entry holds for this unit key, if any: one of
        this cache dir, else one of the remote's."""
        if not self.reuse:
            return None
        return self._local(key, unit) or self._remote(key, unit)

    def _remote(self, key: str, unit: Range) -> ReusedUnit | None:
        fetched = self.remote.find(key) if self.remote is not None else None
        if fetched is None:
            return None
        return ReusedUnit(
            unit,
            fetched.name,
            fetched.record,
            fetched.files,
            fetched.record.guards,
            fetched.entry_id,
            remote=True,
            bytes_fetched=fetched.bytes_fetched,
        )

    def _local(self, key: str, unit: Range) -> ReusedUnit | None:
        pointer = self.root.index_record(key)
        if pointer is None:
            return None
        opened = self._entry(pointer["entry"])
        if opened is None:
            return None
        record = opened.manifest.artifacts.get(pointer["artifact"])
        if record is None or not record.has_guards:
            return None
        paths = record.paths()
        files = {rel: opened.blobs[rel] for rel in paths if rel in opened.blobs}
        if len(files) != len(paths):
            return None
        return ReusedUnit(unit, pointer["artifact"], record, files, record.guards, opened.entry_id)

    def remember(self, keys: dict[str, str], entry_id: str) -> None:
        """Point each unit key at the artifact `entry_id` holds for it (best effort: an
        index that cannot be written only costs a later rebuild its reuse)."""
        try:
            for key, name in keys.items():
                self.root.write_index(key, entry_id, name)
        except OSError as exc:
            log.warning("could not update the artifact index (%s); the next build reuses less", exc)

    def _entry(self, entry_id: str) -> OpenedEntry | None:
        if entry_id not in self._entries:
            check = signing.checker(self.sign_key) if self.sign_key is not None else None
            try:
                self._entries[entry_id] = open_entry(
                    self.root.entry_dir(entry_id), check_sources=False, verify_signature=check
                )
            except (CacheMiss, OSError):
                self._entries[entry_id] = None
        return self._entries[entry_id]


def environment_facts(device: Any = None) -> dict[str, Any]:
    """The build environment a compiled unit depends on (compile side: imports Inductor),
    with the vector ISA Inductor will pick predicted, not probed (see
    environment_confirmed); for a model on a CUDA device, that device's facts too (CUDA
    and HIP versions, device index, name and capability, Triton: a unit compiled for
    sm_90 is never taken for sm_80)."""
    import torch

    from aotcache.key.env import cuda_factors, host_cpu_flags, isa_flags, thread_count

    from . import _torch_compat as compat

    device_facts = {}
    if device is not None and torch.device(device).type == "cuda":
        device_facts["device"] = {f.name: f.value for f in cuda_factors(torch.device(device).index)}
    return {
        **device_facts,
        "torch": torch.__version__,
        "torch_key": torch_files_digest(),
        "compiler": compat.compiler_identity(),
        "inductor_config": compat.inductor_config_digest(),
        "vec_isa": compat.predicted_vec_isa(),  # with the -march Inductor compiles for
        "cpu_flags": isa_flags(host_cpu_flags()),
        "threads": thread_count(),
    }


def environment_confirmed(environment: dict[str, Any]) -> bool:
    """Whether the predicted vector ISA is the one Inductor's probes picked, where they
    ran (a build that compiled nothing never runs them, and needs no answer)."""
    from . import _torch_compat as compat

    return not compat.vec_isa_probed() or compat.vec_isa() == environment["vec_isa"]


def torch_files_digest() -> str:
    """What torch's files are, for the unit key: the sha256 of the RECORD pip wrote when
    it installed torch (every file's sha256), the same on every host with that wheel and
    read in ~15 ms; Inductor's torch_key (which reads every torch source, ~2 s, the
    largest cost of a rebuild that compiles nothing) where torch has no RECORD (a
    source build). A file edited by hand after the install is not seen by the former."""
    import hashlib
    from importlib import metadata

    try:
        record = metadata.distribution("torch").read_text("RECORD")
    except (metadata.PackageNotFoundError, OSError):
        record = None
    if not record:
        from . import _torch_compat as compat

        return compat.torch_key()
    return hashlib.sha256(record.encode()).hexdigest()
