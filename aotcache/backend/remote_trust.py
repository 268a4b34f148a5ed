"""Remote reuse, step one: what a build may take from a remote, decided before anything
is looked up there. A build that signs takes only entries signed by its own key;
otherwise one with a trusted key (AOTCACHE_TRUSTED_KEY) only entries that key signed. A
build with neither takes nothing: an unsigned remote entry is code that anyone who can
write the remote chose, and it would run in this build's self-check and in every
replica, unless the build says so (--trust-unsigned-remote)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aotcache.errors import printable
from aotcache.store import signing

from .request import BuildRequest

if TYPE_CHECKING:
    from aotcache.fleet.unit_reuse import RemoteArtifacts

log = logging.getLogger("aotcache.precompile")

NOT_USED = "not used: unsigned build (--sign-key, AOTCACHE_TRUSTED_KEY or --trust-unsigned-remote)"


def remote_artifacts(request: BuildRequest, sign_key: signing.Key | None) -> tuple[RemoteArtifacts | None, str | None]:
    """The remote entries and units are taken from (None: none), and what they are
    trusted with, in words (`remote_trust` in `precompile --json`)."""
    remote = request.remote
    if remote is None or remote == "":
        return None, None
    from aotcache.fleet.connect import open_remote
    from aotcache.fleet.unit_reuse import RemoteArtifacts

    url = printable(remote if isinstance(remote, str) else remote.url)
    trust_unsigned = request.trust_unsigned_remote
    if sign_key is not None:
        check, trust = signing.checker(sign_key), "signed by the build's key"
    elif (trusted := signing.signature_checker()) is not None:
        check, trust = trusted, "signed by the trusted key"
    elif trust_unsigned:
        check, trust = None, "unsigned (--trust-unsigned-remote)"
        log.warning(
            "remote %s: its entries and units are taken unsigned (--trust-unsigned-remote): whoever can write the "
            "remote can put code into this build and every replica that loads it",
            url,
        )
    else:
        log.warning(
            "remote %s is not used: this build neither signs (--sign-key) nor has a trusted key "
            "(AOTCACHE_TRUSTED_KEY), and an unsigned remote entry is code anyone who can write the remote chose; "
            "everything is built here (--trust-unsigned-remote takes unsigned entries anyway)",
            url,
        )
        return None, NOT_USED
    opened = open_remote(remote, insecure=request.insecure) if isinstance(remote, str) else remote
    return RemoteArtifacts(opened, check), trust
