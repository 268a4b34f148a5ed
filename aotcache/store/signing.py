"""Signed entries for rollout: Ed25519 (with the `cryptography` package) or HMAC-SHA256.

The signature covers manifest.json's bytes; the manifest holds the sha256 of every other
file, so a valid signature vouches for the whole entry. A key file is either a PEM key
(Ed25519: private to sign, public to verify) or, for HMAC, a file of secret bytes
(the same file signs and verifies).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aotcache.envs as envs
from aotcache.errors import ConfigError, SignatureError

TRUSTED_KEY_ENV = envs.AOTCACHE_TRUSTED_KEY
ED25519 = "ed25519"
HMAC_SHA256 = "hmac-sha256"


@dataclass(frozen=True)
class Key:
    algorithm: str
    key_id: str
    material: Any  # a cryptography key object, or the HMAC secret bytes
    private: bool


def read_key(path: str | os.PathLike[str]) -> Key:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError("key", str(path), f"a readable key file ({exc.strerror or exc})") from None
    if b"-----BEGIN" not in data:
        if len(data.strip()) < 16:
            raise ConfigError("key", str(path), "an HMAC secret of at least 16 bytes, or a PEM Ed25519 key")
        secret = data.strip()
        return Key(HMAC_SHA256, hashlib.sha256(secret).hexdigest()[:16], secret, True)
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    except ImportError:
        raise ConfigError(
            "key", str(path), "the cryptography package for Ed25519 keys: pip install 'aotcache[sign]'"
        ) from None
    try:
        if b"PRIVATE KEY" in data:
            key = serialization.load_pem_private_key(data, password=None)
            public = key.public_key()
            private = True
        else:
            key = public = serialization.load_pem_public_key(data)
            private = False
    except ValueError as exc:
        raise ConfigError("key", str(path), f"a PEM Ed25519 key ({exc})") from None
    if not isinstance(public, Ed25519PublicKey) or (private and not isinstance(key, Ed25519PrivateKey)):
        raise ConfigError("key", str(path), "an Ed25519 key (other key types are not supported)")
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return Key(ED25519, hashlib.sha256(raw).hexdigest()[:16], key, private)


def sign(manifest_bytes: bytes, key: Key) -> bytes:
    """The contents of manifest.sig for these manifest bytes."""
    if key.algorithm == HMAC_SHA256:
        signature = hmac.new(key.material, manifest_bytes, hashlib.sha256).hexdigest()
    else:
        if not key.private:
            raise ConfigError("sign_key", key.key_id, "a private key (this is a public key)")
        signature = key.material.sign(manifest_bytes).hex()
    record = {"algorithm": key.algorithm, "key_id": key.key_id, "signature": signature}
    return json.dumps(record, sort_keys=True).encode() + b"\n"


def verify(entry_id: str, manifest_bytes: bytes, signature: bytes | None, key: Key) -> None:
    """Raise SignatureError unless `signature` (manifest.sig's bytes, None when the
    entry has none) is a valid signature of the manifest by `key`."""
    if signature is None:
        raise SignatureError(
            f"entry {entry_id} is not signed, and a trusted key is configured",
            entry_id=entry_id,
            hint="precompile with --sign-key",
        )
    try:
        record = json.loads(signature)
        algorithm, key_id, value = record["algorithm"], record["key_id"], record["signature"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise SignatureError(f"entry {entry_id} has an unreadable signature", entry_id=entry_id) from None
    if algorithm != key.algorithm or key_id != key.key_id:
        raise SignatureError(
            f"entry {entry_id} is signed by another key ({algorithm} {key_id}; trusted: {key.algorithm} {key.key_id})",
            entry_id=entry_id,
        )
    if not _valid(manifest_bytes, str(value), key):
        raise SignatureError(
            f"entry {entry_id}: signature does not match the manifest (changed after signing)", entry_id=entry_id
        )


def _valid(manifest_bytes: bytes, signature: str, key: Key) -> bool:
    if key.algorithm == HMAC_SHA256:
        expected = hmac.new(key.material, manifest_bytes, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)
    from cryptography.exceptions import InvalidSignature

    public = key.material.public_key() if key.private else key.material
    try:
        public.verify(bytes.fromhex(signature), manifest_bytes)
    except (InvalidSignature, ValueError):
        return False
    return True


def checker(key: Key) -> Callable[[str, bytes, bytes | None], None]:
    """The signature check of store.checks.open_entry for one key."""

    def check(entry_id: str, manifest_bytes: bytes, signature: bytes | None) -> None:
        verify(entry_id, manifest_bytes, signature, key)

    return check


def signature_checker(trusted_key: str | os.PathLike[str] | None = None) -> Any:
    """The check for an explicit key file or AOTCACHE_TRUSTED_KEY; None when no key is
    configured (entries are then accepted signed or not)."""
    path = trusted_key or envs.get(TRUSTED_KEY_ENV)
    return checker(read_key(path)) if path else None
