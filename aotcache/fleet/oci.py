"""An OCI registry as a remote, through the OCI distribution API (httpx, no daemon).

Each entry is an OCI artifact (artifactType application/vnd.aotcache.entry.v1) tagged
with its entry id: the entry's manifest.json is the artifact's config blob, each file a
layer named by the org.opencontainers.image.title annotation, the signature (if any)
one more layer. Blobs are content-addressed by the registry, so kernels shared by
entries are uploaded once per repository. A lookup key's entries are listed by an image
index tagged `lookup-<lookup key>`, so a replica finds its entry with one request, and
the entry's manifest is tagged `unit-<unit key>` once more for every compiled unit it
holds, so a build elsewhere finds the artifact of a unit with one request. The entry's
manifest carries its lookup factors as an annotation, so `explain` reads them without a
blob. Serving stats (`push --stats`) are tagged `stats-<file name>`: each an artifact of
one layer, the file, beside the empty config.

Plain HTTP is used only for loopback hosts or with insecure=True; every request goes
through the one HTTP policy of `.http` (redirects, credentials, bounds, deadlines).
Credentials come from AOTCACHE_OCI_USERNAME / AOTCACHE_OCI_PASSWORD, else the docker
config ($DOCKER_CONFIG/config.json or ~/.docker/config.json, `auths.<host>.auth`), and
go only to the registry itself and to a token service it names over https (or on
loopback, or with insecure=True).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aotcache.envs as envs
from aotcache.errors import ConfigError, RemoteError, printable

from .http import Deadline, Session, error_detail, is_loopback, iter_body, plain_http_allowed, read_capped
from .remote import (
    CHUNK,
    ENTRY_ID,
    MAX_STATS_BYTES,
    MAX_STATS_FILES,
    STATS_FILE,
    UNIT_KEY,
    Blob,
    EntryRecord,
    check_stats_file,
    considered,
)

ARTIFACT_TYPE = "application/vnd.aotcache.entry.v1"
MANIFEST_TYPE = "application/vnd.aotcache.manifest.v1+json"
FILE_TYPE = "application/vnd.aotcache.file.v1"
SIGNATURE_TYPE = "application/vnd.aotcache.signature.v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
ENTRY_ANNOTATION = "dev.aotcache.entry"
LOOKUP_ANNOTATION = "dev.aotcache.lookup"
FACTORS_ANNOTATION = "dev.aotcache.lookup-factors"
STATS_ARTIFACT = "application/vnd.aotcache.stats.v1"
STATS_TYPE = "application/vnd.aotcache.stats.v1+json"
STATS_ANNOTATION = "dev.aotcache.stats"
STATS_TAG = "stats-"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"  # the config of an artifact that needs none
EMPTY = b"{}"
MAX_TAG = 128
MAX_MANIFEST_BYTES = 4 << 20
MAX_TOKEN_BYTES = 64 << 10
MAX_TAG_PAGES = 1000
REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
USERNAME_ENV = envs.AOTCACHE_OCI_USERNAME
PASSWORD_ENV = envs.AOTCACHE_OCI_PASSWORD


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def docker_credentials(host: str) -> tuple[str, str] | None:
    """(user, password) for a registry host: the environment, else the docker config."""
    user, password = envs.get(USERNAME_ENV), envs.get(PASSWORD_ENV)
    if user and password:
        return user, password
    folder = envs.get(envs.DOCKER_CONFIG) or str(Path.home() / ".docker")
    try:
        auths = json.loads((Path(folder) / "config.json").read_text()).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None
    for name in (host, f"https://{host}", f"http://{host}", f"https://{host}/v2/"):
        item = auths.get(name) if isinstance(auths, dict) else None
        if isinstance(item, dict) and item.get("auth"):
            with contextlib.suppress(ValueError):
                user, _, password = base64.b64decode(item["auth"]).decode().partition(":")
                return user, password
        if isinstance(item, dict) and item.get("username") and item.get("password"):
            return str(item["username"]), str(item["password"])
    return None


def _basic(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


class OciRemote:
    def __init__(self, url: str, *, insecure: bool = False, deadline: Deadline | None = None) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host = parts.netloc
        self.repository = parts.path.strip("/")
        if not self.host or not REPOSITORY.match(self.repository):
            raise ConfigError(
                "remote", url, "oci://host[:port]/repository, the repository in lowercase letters, digits, . _ - /"
            )
        self.insecure = insecure
        scheme = "http" if insecure or is_loopback(parts.hostname) else "https"
        self.base = f"{scheme}://{self.host}/v2/{self.repository}"
        self.deadline = deadline or Deadline()
        self.session = Session(self.base, insecure=insecure, deadline=self.deadline)
        self._credentials = docker_credentials(self.host)
        self._authorization: str | None = None
        self._last_link = ""

    def restart_deadline(self) -> None:
        """A new deadline, for the next entry of a push or pull."""
        self.deadline = self.session.deadline = Deadline(self.deadline.seconds)

    def missing(self) -> str | None:
        """A registry knows a repository once something was pushed to it: listing its
        tags is a 404 before."""
        if self._get_json("tags/list?n=1", "application/json", "checking the repository") is None:
            return f"no such repository {self.repository} on {self.host}"
        return None

    # -- HTTP, with the registry's token dance (under the policy of .http) ----------

    def _send(self, method: str, url: str, **kwargs: Any) -> Any:
        url = urljoin(self.base + "/", url) if not url.startswith("http") else url
        response = self.session.send(method, url, authorization=self._authorization, **kwargs)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("www-authenticate", "")
        response.close()
        self._authenticate(challenge)
        return self.session.send(method, url, authorization=self._authorization, **kwargs)

    def _authenticate(self, header: str) -> None:
        scheme, params = _challenge(header)
        if scheme == "basic" and self._credentials:
            self._authorization = _basic(self._credentials)
            return
        if scheme != "bearer" or "realm" not in params:
            raise self._denied()
        realm = params["realm"]
        if urlsplit(realm).scheme != "https" and not (
            urlsplit(realm).scheme == "http" and plain_http_allowed(realm, self.insecure)
        ):
            raise RemoteError(
                f"{self.url}: the registry's token service {printable(realm)} is not https; no credentials are sent "
                "there",
                hint="a registry off loopback must use TLS for its tokens (or pass --insecure)",
            )
        query = {"service": params.get("service", self.host)}
        query["scope"] = params.get("scope", f"repository:{self.repository}:pull,push")
        basic = _basic(self._credentials) if self._credentials else None
        response = self.session.send("GET", realm, params=query, authorization=basic, authorization_origin=realm)
        try:
            body = read_capped(response, MAX_TOKEN_BYTES, self.deadline, self.url, "the registry's token service")
        finally:
            response.close()
        try:
            data = json.loads(body)
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError, RecursionError):
            token = None
        if response.status_code != 200 or not isinstance(token, str) or not token:
            raise self._denied()
        if not (token.isascii() and token.isprintable()):
            raise RemoteError(f"{self.url}: the registry's token service sent a token that is not printable ASCII")
        self._authorization = f"Bearer {token}"

    def _denied(self) -> RemoteError:
        return RemoteError(
            f"{self.url}: the registry refused our credentials",
            hint=f"log in with `docker login {self.host}`, or set {USERNAME_ENV} and {PASSWORD_ENV}",
        )

    def _check(self, response: Any, what: str) -> Any:
        if response.status_code < 300:
            return response
        if response.status_code in (401, 403):
            response.close()
            raise self._denied()
        detail = error_detail(response, self.deadline, self.url)
        response.close()
        raise RemoteError(f"{self.url}: {what}: HTTP {response.status_code} {detail}".rstrip())

    def _get_body(self, path: str, accept: str, what: str) -> bytes | None:
        """A document's bytes, at most MAX_MANIFEST_BYTES (read no further), or None if absent."""
        response = self._send("GET", path, headers={"Accept": accept})
        try:
            if response.status_code == 404:
                return None
            self._check(response, what)
            self._last_link = response.headers.get("link", "")
            return read_capped(response, MAX_MANIFEST_BYTES, self.deadline, self.url, what)
        finally:
            response.close()

    def _get_json(self, path: str, accept: str, what: str) -> tuple[dict[str, Any], bytes] | None:
        """A JSON document of at most MAX_MANIFEST_BYTES (read no further), or None if absent."""
        body = self._get_body(path, accept, what)
        if body is None:
            return None
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise RemoteError(f"{self.url}: {what}: not JSON") from None
        if not isinstance(data, dict):
            raise RemoteError(f"{self.url}: {what}: not an OCI document")
        return data, body

    # -- the Remote interface ------------------------------------------------------

    def _tags(self) -> list[str]:
        """Every tag of the repository, page by page ([] before anything was pushed)."""
        tags: list[str] = []
        url: str | None = "tags/list?n=1000"
        seen: set[str] = set()
        while url and url not in seen and len(seen) < MAX_TAG_PAGES:
            seen.add(url)
            found = self._get_json(url, "application/json", "listing tags")
            if found is None:
                return []
            page = found[0].get("tags") or []
            tags += [t for t in page if isinstance(t, str)] if isinstance(page, list) else []
            url = self._next_page(url)
        return tags

    def entry_ids(self) -> list[str]:
        return sorted({tag for tag in self._tags() if ENTRY_ID.match(tag)})

    def _next_page(self, url: str) -> str | None:
        """The registry's `Link: <...>; rel="next"`, followed only on the same registry."""
        match = re.match(r"<([^>]+)>", self._last_link)
        if not match:
            return None
        nxt = urljoin(self.base, match.group(1))
        return nxt if urlsplit(nxt).netloc == self.host else None

    def entries_for_lookup(self, lookup: str) -> list[str]:
        found = self._get_json(f"manifests/lookup-{lookup}", OCI_INDEX, f"the index of lookup key {lookup}")
        listed = _listed(found[0]) if found else []
        ordered = sorted(listed, key=lambda item: item[1], reverse=True)  # newest first
        return considered([entry for entry, _ in ordered], lookup)

    def record(self, entry_id: str) -> EntryRecord | None:
        found = self._get_json(f"manifests/{entry_id}", OCI_MANIFEST, f"the manifest of {entry_id}")
        if found is None:
            return None
        return _record_from_oci(found[0], entry_id, self.url)

    def unit_record(self, unit_key: str) -> EntryRecord | None:
        if not UNIT_KEY.match(unit_key):
            return None
        found = self._get_json(f"manifests/unit-{unit_key}", OCI_MANIFEST, f"the unit index of {unit_key[:12]}")
        if found is None:
            return None
        annotations = found[0].get("annotations")
        entry_id = annotations.get(ENTRY_ANNOTATION) if isinstance(annotations, dict) else None
        if not isinstance(entry_id, str) or not ENTRY_ID.match(entry_id):
            raise RemoteError(f"{self.url}: tag unit-{unit_key[:12]} names no entry id")
        return _record_from_oci(found[0], entry_id, self.url)

    def has_blob(self, blob: Blob) -> bool:
        response = self._send("HEAD", f"blobs/{blob.digest}")
        try:
            if response.status_code == 404:
                return False
            self._check(response, f"checking blob {blob.digest}")
            return True
        finally:
            response.close()

    def upload_blob(self, blob: Blob, data: bytes) -> None:
        response = self._check(self._send("POST", "blobs/uploads/", content=b""), "starting an upload")
        response.close()
        if "location" not in response.headers:
            raise RemoteError(f"{self.url}: the registry started an upload without a Location")
        location = urljoin(self.base, response.headers["location"])
        if urlsplit(location).netloc != self.host:
            raise RemoteError(f"{self.url}: the registry sent the upload to another host ({urlsplit(location).netloc})")
        separator = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream"}
        put = self._send("PUT", f"{location}{separator}digest={blob.digest}", content=data, headers=headers)
        self._check(put, f"uploading {printable(blob.path)}").close()

    def read_blob(self, blob: Blob, offset: int = 0) -> Iterator[bytes]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        what = f"downloading {printable(blob.path)}"
        response = self._send("GET", f"blobs/{blob.digest}", headers=headers)
        try:
            self._check(response, what)
            skip = offset if response.status_code == 200 else 0  # the server ignored the range
            for chunk in iter_body(response, self.deadline, self.url, what, CHUNK):
                if skip:
                    chunk, skip = chunk[skip:], max(0, skip - len(chunk))
                if chunk:
                    yield chunk
        except RemoteError:
            raise
        except Exception as exc:  # the connection broke off, or bytes no one can decode
            raise RemoteError(f"{self.url}: {what} broke off: {type(exc).__name__}: {exc}") from None
        finally:
            response.close()

    def publish(self, record: EntryRecord) -> None:
        manifest = _canonical(_oci_manifest(record))
        headers = {"Content-Type": OCI_MANIFEST}
        put = self._send("PUT", f"manifests/{record.entry_id}", content=manifest, headers=headers)
        self._check(put, "tagging").close()
        self._add_to_index(record, manifest)
        for unit_key in record.units:  # the same manifest, one more tag: a PUT, never a read-merge
            put = self._send("PUT", f"manifests/unit-{unit_key}", content=manifest, headers=headers)
            self._check(put, "indexing a unit").close()

    def put_stats(self, name: str, data: bytes) -> None:
        check_stats_file(name, data)
        blob = Blob(name, hashlib.sha256(data).hexdigest(), len(data))
        empty = Blob("config", hashlib.sha256(EMPTY).hexdigest(), len(EMPTY))
        for item, content in ((empty, EMPTY), (blob, data)):
            if not self.has_blob(item):
                self.upload_blob(item, content)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": STATS_ARTIFACT,
            "config": {"mediaType": EMPTY_TYPE, "digest": empty.digest, "size": empty.size},
            "layers": [_descriptor(blob, STATS_TYPE)],
            "annotations": {STATS_ANNOTATION: name},
        }
        headers = {"Content-Type": OCI_MANIFEST}
        put = self._send("PUT", f"manifests/{stats_tag(name)}", content=_canonical(manifest), headers=headers)
        self._check(put, f"tagging stats file {name}").close()

    def stats_files(self) -> list[tuple[str, bytes]]:
        found: list[tuple[str, bytes]] = []
        for tag in sorted(t for t in self._tags() if t.startswith(STATS_TAG))[:MAX_STATS_FILES]:
            body = self._get_body(f"manifests/{tag}", OCI_MANIFEST, f"the manifest of {tag}")
            if body is None:
                continue  # removed since the listing
            name, blob = _stats_layer(body, tag)
            if blob is None or not STATS_FILE.match(name):
                found.append((printable(name, 240), b""))
                continue
            data = bytearray()
            with contextlib.closing(self.read_blob(blob)) as chunks:
                for chunk in chunks:
                    data += chunk
                    if len(data) > MAX_STATS_BYTES:
                        break  # one byte over says it all
            found.append((name, bytes(data[: MAX_STATS_BYTES + 1])))
        return found

    def _add_to_index(self, record: EntryRecord, manifest: bytes) -> None:
        """Add the entry to its lookup key's index: read, merge, write, then read back, as
        another push of the same lookup key may have written in between (tried 3 times)."""
        tag = f"lookup-{record.lookup}"
        what = f"the index of lookup key {record.lookup}"
        for _ in range(3):
            found = self._get_json(f"manifests/{tag}", OCI_INDEX, what)
            kept = [m for m in (found[0].get("manifests") or []) if isinstance(m, dict)] if found else []
            kept = [m for m in kept if (m.get("annotations") or {}).get(ENTRY_ANNOTATION) != record.entry_id]
            index = {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "artifactType": ARTIFACT_TYPE,
                "manifests": [*kept, _index_item(record, manifest)],
            }
            headers = {"Content-Type": OCI_INDEX}
            put = self._send("PUT", f"manifests/{tag}", content=_canonical(index), headers=headers)
            self._check(put, "indexing").close()
            again = self._get_json(f"manifests/{tag}", OCI_INDEX, what)
            if again and record.entry_id in {entry for entry, _ in _listed(again[0])}:
                return
        raise RemoteError(f"{self.url}: could not add {record.entry_id} to {what} (concurrent pushes); push again")


def _index_item(record: EntryRecord, manifest: bytes) -> dict[str, Any]:
    return {
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
        "size": len(manifest),
        "annotations": {ENTRY_ANNOTATION: record.entry_id, CREATED: record.created},
    }


def _listed(index: dict[str, Any]) -> list[tuple[str, str]]:
    """(entry id, created) of each entry an index lists; anything malformed is skipped."""
    items = index.get("manifests")
    found = []
    for item in items if isinstance(items, list) else []:
        annotations = item.get("annotations") if isinstance(item, dict) else None
        if isinstance(annotations, dict) and isinstance(annotations.get(ENTRY_ANNOTATION), str):
            found.append((annotations[ENTRY_ANNOTATION], str(annotations.get(CREATED, ""))))
    return found


def _descriptor(blob: Blob, media_type: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": blob.digest, "size": blob.size, "annotations": {TITLE: blob.path}}


def _oci_manifest(record: EntryRecord) -> dict[str, Any]:
    layers = [_descriptor(b, FILE_TYPE) for b in sorted(record.files, key=lambda b: b.path)]
    if record.signature:
        layers.append(_descriptor(record.signature, SIGNATURE_TYPE))
    config = _descriptor(record.manifest, MANIFEST_TYPE)
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": config,
        "layers": layers,
        "annotations": {
            ENTRY_ANNOTATION: record.entry_id,
            LOOKUP_ANNOTATION: record.lookup,
            CREATED: record.created,
            **({FACTORS_ANNOTATION: record.lookup_factors} if record.lookup_factors is not None else {}),
        },
    }


def stats_tag(name: str) -> str:
    """The tag of a stats file: `stats-<name without .json>`, or for a name too long for a
    tag, its first characters and a digest of the whole name."""
    tag = STATS_TAG + name.removesuffix(".json")
    if len(tag) <= MAX_TAG:
        return tag
    suffix = "-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return tag[: MAX_TAG - len(suffix)] + suffix


def _stats_layer(body: bytes, tag: str) -> tuple[str, Blob | None]:
    """The file name and the blob a stats tag's manifest names; (the name the tag
    suggests, None) for a manifest that is not one stats file."""
    fallback = tag.removeprefix(STATS_TAG) + ".json"
    try:
        data = json.loads(body)
        annotations = data.get("annotations")
        name = annotations.get(STATS_ANNOTATION) if isinstance(annotations, dict) else None
        layers = data.get("layers")
        if not isinstance(name, str) or not isinstance(layers, list) or len(layers) != 1:
            return (name if isinstance(name, str) else fallback), None
        if not isinstance(layers[0], dict) or layers[0].get("mediaType") != STATS_TYPE:
            return name, None
        return name, _blob(layers[0], name)
    except (ValueError, TypeError, AttributeError, RecursionError):
        return fallback, None


def _blob(descriptor: Any, default_path: str | None = None) -> Blob:
    if not isinstance(descriptor, dict):
        raise ValueError("a descriptor is not an object")
    digest = str(descriptor.get("digest", ""))
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ValueError(f"digest {digest[:80]!r} is not sha256")
    size = descriptor.get("size")
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"bad size {size!r}")
    annotations = descriptor.get("annotations")
    path = (annotations.get(TITLE) if isinstance(annotations, dict) else None) or default_path
    if not isinstance(path, str):
        raise ValueError("a layer has no title")
    return Blob(path, digest.removeprefix("sha256:"), size)


def _factors_annotation(annotations: dict[str, Any]) -> str | None:
    """The lookup factors annotation as text (None where the push predates it; a value
    that is not a string stays unreadable, so explain skips it with a warning)."""
    value = annotations.get(FACTORS_ANNOTATION)
    return value if isinstance(value, str) or value is None else ""


def _record_from_oci(data: dict[str, Any], entry_id: str, url: str) -> EntryRecord:
    """The record of an entry from its OCI manifest (untrusted: pull checks every blob
    against the entry's own manifest, whose checksum and signature it checks)."""
    config = data.get("config")
    if data.get("artifactType") != ARTIFACT_TYPE and not (
        isinstance(config, dict) and config.get("mediaType") == MANIFEST_TYPE
    ):
        raise RemoteError(f"{url}: tag {entry_id} is not an aotcache entry")
    annotations = data.get("annotations") if isinstance(data.get("annotations"), dict) else {}
    try:
        layers = data.get("layers") or []
        signature = [_blob(d) for d in layers if isinstance(d, dict) and d.get("mediaType") == SIGNATURE_TYPE]
        files = [_blob(d) for d in layers if isinstance(d, dict) and d.get("mediaType") != SIGNATURE_TYPE]
        return EntryRecord(
            entry_id=entry_id,
            lookup=str(annotations.get(LOOKUP_ANNOTATION, entry_id.split("-")[0])),
            created=str(annotations.get(CREATED, "")),
            manifest=_blob(data.get("config"), "manifest.json"),
            signature=signature[0] if signature else None,
            files=files,
            lookup_factors=_factors_annotation(annotations),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise RemoteError(f"{url}: the OCI manifest of {entry_id} is damaged: {exc}") from None
