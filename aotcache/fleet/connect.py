"""Which remote a URL names: the one place that knows every backend (oci.py for an OCI
registry, objectstore.py for fsspec), so that the backends and the record they share
(remote.py) never import each other."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import aotcache.envs as envs
from aotcache.errors import ConfigError

from .remote import REMOTE_ENV, Remote


def open_remote(url: str | None = None, *, insecure: bool = False, deadline: Any = None) -> Remote:
    """The remote a URL names (else AOTCACHE_REMOTE): `oci://host[:port]/repository`
    or an fsspec URL (`s3://bucket/prefix`, `gs://...`, `file:///path`). `deadline`
    (an http.Deadline; default AOTCACHE_REMOTE_TIMEOUT from now) bounds every request."""
    from .http import Deadline

    url = url or envs.get(REMOTE_ENV) or ""
    if not url:
        raise ConfigError("remote", url, "an oci://host/repository or fsspec URL (s3://bucket/prefix, file:///path)")
    scheme = urlsplit(url).scheme
    deadline = deadline or Deadline()
    if scheme == "oci":
        from .oci import OciRemote

        return OciRemote(url, insecure=insecure, deadline=deadline)
    if not scheme or "://" not in url:
        raise ConfigError("remote", url, "a URL with a scheme: oci://host/repository, s3://bucket/prefix, file:///path")
    from .objectstore import ObjectStoreRemote

    return ObjectStoreRemote(url, deadline=deadline)
