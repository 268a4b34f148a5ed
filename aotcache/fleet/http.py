"""One HTTP policy for every request aotcache sends to a remote, in one place.

* **Redirects** are followed by hand, at most MAX_REDIRECTS hops: within the same
  scheme, host and port, or to https anywhere (registries send blob GETs to their
  object storage or a CDN); never from https to http, never to plain http off loopback
  without --insecure, and a request with a body (an upload) only within its origin.
* **Credentials** go only to the origin they are for: `send` attaches them itself, on
  each hop, where the hop's origin is theirs (the registry's token to the registry, its
  Basic credentials to the token service it names), never along a redirect to another
  origin; an Authorization passed in `headers` is dropped, so there is no other path.
* **Bounded**: `Accept-Encoding: identity` on every request, and an encoded body that
  was not asked for is refused (no gzip bomb is ever inflated); every body is read with
  a cap, error bodies to ERROR_BODY_BYTES; every request has connect and read timeouts,
  and every operation an overall Deadline checked between chunks (a remote that sends
  one byte every few seconds is cut off).
* Anything that goes wrong while talking to the remote is a RemoteError (exit 3).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import aotcache.envs as envs
from aotcache.errors import ConfigError, RemoteError

TIMEOUT_ENV = envs.AOTCACHE_REMOTE_TIMEOUT
DEFAULT_TIMEOUT = 300.0  # seconds: a load(remote=...), or one entry of push / pull
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0  # no byte for this long ends a request
MAX_REDIRECTS = 3
ERROR_BODY_BYTES = 4096
REDIRECTS = (301, 302, 303, 307, 308)
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def remote_timeout() -> float:
    """AOTCACHE_REMOTE_TIMEOUT in seconds (default 300)."""
    text = envs.text(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(TIMEOUT_ENV, text, "a positive number of seconds")
    return value


class Deadline:
    """The time an operation on a remote may take, all requests and waits together."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = seconds if seconds is not None else remote_timeout()
        self.end = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def check(self, url: str, what: str) -> None:
        if self.remaining() <= 0:
            raise RemoteError(
                f"{url}: {what}: the remote took longer than {self.seconds:.0f} s",
                hint=f"check the remote; {TIMEOUT_ENV} sets the limit",
            )


def is_loopback(host: str | None) -> bool:
    return (host or "") in LOOPBACK or (host or "").startswith("127.")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80 if parts.scheme == "http" else None)
    return parts.scheme, (parts.hostname or "").lower(), port


def plain_http_allowed(url: str, insecure: bool) -> bool:
    return insecure or is_loopback(urlsplit(url).hostname)


def redirect_refusal(current: str, target: str, *, insecure: bool, has_body: bool) -> str | None:
    """Why a redirect from `current` to `target` is not followed, or None."""
    scheme = urlsplit(target).scheme
    if scheme not in ("http", "https"):
        return f"to a {scheme or 'scheme-less'} URL"
    if _origin(current) == _origin(target):
        return None
    if has_body:
        return "of an upload to another origin"
    if urlsplit(current).scheme == "https" and scheme == "http":
        return "from https to plain http"
    if scheme == "http" and not plain_http_allowed(target, insecure):
        return "to plain http off loopback (without --insecure)"
    return None


def _check_encoding(response: Any, url: str, what: str) -> None:
    encoding = (response.headers.get("content-encoding") or "identity").strip().lower()
    if encoding not in ("identity", ""):
        raise RemoteError(f"{url}: {what}: the remote sent a {encoding}-encoded body that was not asked for")


def iter_body(response: Any, deadline: Deadline, url: str, what: str, chunk: int) -> Iterator[bytes]:
    """The body as it arrives, never decoded, within the deadline."""
    _check_encoding(response, url, what)
    for data in response.iter_raw():  # what arrives, as it arrives: a chunk size would wait to fill it
        deadline.check(url, what)
        yield data


def read_capped(response: Any, limit: int, deadline: Deadline, url: str, what: str) -> bytes:
    """The whole body, at most `limit` bytes (more is an error, never held in memory)."""
    body = bytearray()
    for data in iter_body(response, deadline, url, what, 1 << 16):
        body += data
        if len(body) > limit:
            raise RemoteError(f"{url}: {what}: larger than {limit} bytes")
    return bytes(body)


def error_detail(response: Any, deadline: Deadline, url: str) -> str:
    """What an error response says, from at most ERROR_BODY_BYTES of its body."""
    try:
        body = bytearray()
        for data in iter_body(response, deadline, url, "reading an error", 1024):
            body += data
            if len(body) >= ERROR_BODY_BYTES:
                break
        errors = json.loads(bytes(body[:ERROR_BODY_BYTES])).get("errors", [])
        return "; ".join(str(e.get("message", e.get("code", ""))) for e in errors if isinstance(e, dict))
    except Exception:  # not JSON, cut off, or not readable: the status says enough
        return ""


class Session:
    """An httpx client under the policy above; `send` follows redirects by its rules."""

    def __init__(self, origin: str, *, insecure: bool, deadline: Deadline) -> None:
        try:
            import httpx
        except ImportError:
            raise RemoteError(
                f"{origin}: this remote needs the httpx package", hint="pip install 'aotcache[oci]'"
            ) from None
        self.httpx = httpx
        self.origin = origin
        self.insecure = insecure
        self.deadline = deadline
        self.client = httpx.Client(follow_redirects=False, trust_env=True)

    def _timeout(self) -> Any:
        left = max(0.1, self.deadline.remaining())
        return self.httpx.Timeout(min(READ_TIMEOUT, left), connect=min(CONNECT_TIMEOUT, left))

    def send(
        self,
        method: str,
        url: str,
        *,
        authorization: str | None = None,
        authorization_origin: str | None = None,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> Any:
        """A streamed response (close it) for `url`, redirects followed by the policy;
        `authorization` goes only to URLs of `authorization_origin` (default: the
        session's origin), on every hop checked again."""
        has_body = "content" in kw
        owner = _origin(authorization_origin or self.origin)
        plain = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        for _ in range(MAX_REDIRECTS + 1):
            self.deadline.check(self.origin, f"{method} {url}")
            sent = {**plain, "Accept-Encoding": "identity"}
            if authorization and _origin(url) == owner:
                sent["Authorization"] = authorization
            try:
                request = self.client.build_request(method, url, headers=sent, timeout=self._timeout(), **kw)
                response = self.client.send(request, stream=True)
            except RemoteError:
                raise
            except (self.httpx.ConnectError, self.httpx.ConnectTimeout) as exc:
                raise RemoteError(
                    f"{self.origin}: cannot reach the registry: {exc}",
                    hint="check the host and port; a registry without TLS needs --insecure unless it is on loopback",
                ) from None
            except Exception as exc:  # httpx's other errors, and what bad header bytes raise in encoding
                raise RemoteError(f"{self.origin}: {method} failed: {type(exc).__name__}: {exc}") from None
            if response.status_code not in REDIRECTS or "location" not in response.headers:
                return response
            response.close()
            target = urljoin(url, response.headers["location"])
            refusal = redirect_refusal(url, target, insecure=self.insecure, has_body=has_body)
            if refusal:
                host = urlsplit(target).netloc
                raise RemoteError(f"{self.origin}: refused a redirect {refusal} ({host})")
            if response.status_code == 303:
                method, kw = "GET", {k: v for k, v in kw.items() if k != "content"}
            url = target
        raise RemoteError(f"{self.origin}: more than {MAX_REDIRECTS} redirects")

    def close(self) -> None:
        self.client.close()
