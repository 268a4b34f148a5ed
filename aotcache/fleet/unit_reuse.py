"""Remote unit reuse: the artifact a remote entry holds for one unit key, fetched alone.

A precompile with a remote (`precompile --remote`, AOTCACHE_REMOTE) asks the remote's
unit index for every unit it would compile. The entry named there is checked as a pull
checks it, the manifest first (its checksum, its id, its signature when the build signs
or a trusted key is configured, its environment as a local reuse checks it), and only a
manifest that itself lists the unit key counts; then only that artifact's files are
fetched, each checked against the sha256 the manifest records. A remote that fails,
lies or is slow never fails the build: the unit is compiled here and a warning says
why (after a transport error the remote is not asked again in this build).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aotcache.errors import AotCacheError, CacheMiss, RemoteError, printable
from aotcache.formats import Artifact
from aotcache.key.env import host_problems
from aotcache.store.checks import SignatureCheck, environment_problems
from aotcache.store.manifest import Manifest

from .pull import fetch_manifest
from .remote import Blob, Remote, read_small

log = logging.getLogger("aotcache.reuse")

# A file of one artifact is read whole into memory (as a local reuse reads it); a
# remote that sends more than this for one file is cut off.
MAX_ARTIFACT_FILE = 2 << 30


@dataclass
class FetchedArtifact:
    """One artifact of a remote entry, its files checked against that entry's manifest."""

    entry_id: str
    name: str
    record: Artifact
    files: dict[str, bytes]
    bytes_fetched: int  # downloaded for it (0 when another unit of this build fetched the same files)


class RemoteArtifacts:
    def __init__(self, remote: Remote, verify_signature: SignatureCheck | None) -> None:
        self.remote = remote
        self.verify_signature = verify_signature
        self.disabled: str | None = None  # why the remote is no longer asked
        self._manifests: dict[str, Manifest] = {}
        self._files: dict[str, bytes] = {}  # by sha256: shared by the units of one entry
        self._unfit_why: dict[str, str] = {}  # entry id -> why its units would not run here ("" if they would)

    def find(self, unit_key: str) -> FetchedArtifact | None:
        """The artifact for this unit key, checked; None (with a warning where the remote
        misbehaved) when the unit must be compiled here."""
        if self.disabled is not None:
            return None
        try:
            return self._find(unit_key)
        except CacheMiss as exc:  # a damaged blob, a bad signature: this unit only
            self._warn(unit_key, exc.one_line())
        except RemoteError as exc:  # the remote itself fails: not asked again in this build
            self.disabled = exc.one_line()
            self._warn(unit_key, f"{self.disabled}; the remote is not asked again in this build")
        except AotCacheError as exc:
            self._warn(unit_key, exc.one_line())
        except Exception as exc:  # whatever a hostile or broken remote makes a client raise
            self.disabled = f"{type(exc).__name__}: {printable(str(exc))[:200]}"
            self._warn(unit_key, f"{self.disabled}; the remote is not asked again in this build")
        return None

    def _warn(self, unit_key: str, why: str) -> None:
        log.warning("remote %s: unit %s is compiled here: %s", printable(self.remote.url), unit_key[:12], why)

    def _find(self, unit_key: str) -> FetchedArtifact | None:
        self.remote.restart_deadline()  # each unit has AOTCACHE_REMOTE_TIMEOUT of its own
        record = self.remote.unit_record(unit_key)
        if record is None:
            return None
        manifest = self._manifest(record)
        unfit = self._unfit(manifest)
        if unfit:
            log.info("remote %s: entry %s is not for this host (%s)", self.remote.url, record.entry_id, unfit)
            return None
        name = manifest.unit_keys.get(unit_key)
        artifact = manifest.artifacts.get(name or "")
        if name is None or artifact is None or not artifact.has_guards:
            log.info("remote %s: entry %s does not list unit %s", self.remote.url, record.entry_id, unit_key[:12])
            return None
        fetched = 0
        files: dict[str, bytes] = {}
        for path in artifact.paths():
            listed = manifest.files[path]  # check_structure: every artifact path is listed
            if listed.sha256 not in self._files:
                blob = Blob(path, listed.sha256, listed.bytes)
                self._files[listed.sha256] = read_small(self.remote, blob, MAX_ARTIFACT_FILE)
                fetched += listed.bytes
            files[path] = self._files[listed.sha256]
        return FetchedArtifact(record.entry_id, name, artifact, files, fetched)

    def _unfit(self, manifest: Manifest) -> str:
        """Why an entry's units would not run here, as a local reuse judges it (its
        recorded environment factors, then what this host lacks to run its kernels)."""
        if manifest.entry_id not in self._unfit_why:
            problems = environment_problems(manifest) + host_problems(manifest.recorded)
            self._unfit_why[manifest.entry_id] = "; ".join(str(d) for d in problems)
        return self._unfit_why[manifest.entry_id]

    def _manifest(self, record: Any) -> Manifest:
        if record.entry_id not in self._manifests:
            manifest, _, _ = fetch_manifest(self.remote, record, self.verify_signature)
            self._manifests[record.entry_id] = manifest
        return self._manifests[record.entry_id]
