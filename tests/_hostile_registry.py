"""A registry that misbehaves on purpose, for tests/test_hostile_remote.py: an HTTP proxy
on loopback in front of the real registry (Debian's docker-registry, `_servers.registry`)
that forwards every request, except those a rule answers itself: a redirect, a body
sent one byte at a time, an endless or gzip-bombed body, an authentication challenge, a
rewritten document. It records every request it saw (method, path, headers), and so do
the small servers beside it (`Recorder`) that stand for "another host"."""

from __future__ import annotations

import contextlib
import datetime
import gzip
import http.server
import re
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

Rule = Callable[["Handler"], bool]  # True: the rule answered the request itself


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class State:
    upstream: str  # host:port of the real registry
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        self.state.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        self.request_body = self._body()
        for rule in list(self.state.rules):
            if rule(self):
                return
        self.forward()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def forward(self, rewrite: Callable[[bytes], bytes] | None = None) -> None:
        """Pass the request to the real registry; Location headers point back here."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        response = httpx.request(
            self.command, f"http://{self.state.upstream}{self.path}", headers=headers, content=self.request_body,
            timeout=30,
        )  # fmt: skip
        body = response.content if self.command != "HEAD" else b""
        if rewrite is not None:
            body = rewrite(body)
        self.send_response(response.status_code)
        for key, value in response.headers.items():
            if key.lower() in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                continue
            if key.lower() == "location":
                value = value.replace(self.state.upstream, f"127.0.0.1:{self.state.port}")
            self.send_header(key, value)
        length = len(body) if self.command != "HEAD" else int(response.headers.get("content-length") or 0)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def hostile_registry(upstream: str) -> Iterator[State]:
    """A proxy in front of `upstream` on 127.0.0.1; its State's rules decide what goes wrong."""
    state = State(upstream)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = _Server(("127.0.0.1", 0), handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# -- rules ------------------------------------------------------------------------------


def matching(method: str, pattern: str, action: Callable[[Handler], None]) -> Rule:
    def rule(handler: Handler) -> bool:
        if handler.command == method and re.search(pattern, handler.path):
            action(handler)
            return True
        return False

    return rule


def redirect(location: str, status: int = 307) -> Callable[[Handler], None]:
    return lambda h: h.reply(status, headers={"Location": location})


def drip(total: int, interval: float) -> Callable[[Handler], None]:
    """A body of `total` bytes announced, then sent one byte every `interval` seconds."""

    def act(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(total))
        handler.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(total):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(interval)

    return act


def endless(status: int) -> Callable[[Handler], None]:
    """An error whose body never ends (no length: read until the connection closes)."""

    def act(handler: Handler) -> None:
        handler.send_response(status)
        handler.send_header("Connection", "close")
        handler.end_headers()
        chunk = b'{"errors": [' + b" " * 65536
        with contextlib.suppress(OSError):
            while True:
                handler.wfile.write(chunk)

    return act


_BOMB: dict[int, bytes] = {}


def gzip_bomb(status: int, inflated: int = 256 << 20) -> Callable[[Handler], None]:
    """A small gzip body that inflates to `inflated` bytes, sent without being asked for."""
    if inflated not in _BOMB:
        _BOMB[inflated] = gzip.compress(b"\0" * inflated, compresslevel=9)

    def act(handler: Handler) -> None:
        handler.reply(status, _BOMB[inflated], {"Content-Encoding": "gzip", "Content-Type": "application/json"})

    return act


def challenge(realm: str) -> Rule:
    """Every registry request without a bearer token is answered 401 naming `realm`."""

    def rule(handler: Handler) -> bool:
        if (handler.headers.get("authorization") or "").startswith("Bearer "):
            return False
        handler.reply(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="registry"'})
        return True

    return rule


# -- "another host": a server that records what reached it ------------------------------


@dataclass
class Recorder:
    url: str
    seen: list[Seen]


@contextlib.contextmanager
def recorder(answer: Callable[[Handler], None], *, host: str = "127.0.0.1", tls: Any = None) -> Iterator[Recorder]:
    """A server that answers every request with `answer` and records it; with `tls` (an
    ssl.SSLContext) it speaks https."""
    seen: list[Seen] = []

    def rule(handler: Handler) -> bool:
        answer(handler)
        return True

    state = State("", [rule], seen)
    handler = type("RecordingHandler", (Handler,), {"state": state})
    server = _Server((host, 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls is not None else "http"
    try:
        yield Recorder(f"{scheme}://localhost:{port}", seen)
    finally:
        server.shutdown()
        server.server_close()


def make_test_ca(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate authority of the test's own and a server certificate for localhost
    signed by it: (the CA's PEM, for SSL_CERT_FILE; the server's TLS context)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aotcache test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_pem = folder / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert, key = folder / "server.pem", folder / "server.key"
    cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return ca_pem, context
