"""Real servers on loopback for the fleet tests: the CNCF distribution registry (Debian's
docker-registry, which `make test` installs) and moto's S3 server."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REGISTRY_CONFIG = """\
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url} exited at start: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    pytest.fail(f"{url} did not come up in 30 s: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@contextlib.contextmanager
def registry(folder: Path) -> Iterator[tuple[str, Path]]:
    """A registry on a free loopback port storing under folder/storage: (host:port, storage)."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(binary).exists():
        pytest.fail("docker-registry is not installed: `make test-servers` installs it (Debian's docker-registry)")
    port = free_port()
    storage = folder / "storage"
    storage.mkdir(parents=True)
    config = folder / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(storage=storage, port=port))
    log = folder / "registry.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/v2/", process, log)
        yield f"127.0.0.1:{port}", storage
    finally:
        _stop(process)


@contextlib.contextmanager
def s3_server(folder: Path) -> Iterator[dict[str, str]]:
    """moto's S3 server on a free loopback port; yields the environment that points
    s3fs (botocore) at it, as a deployment would set it."""
    port = free_port()
    log = folder / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/", process, log)
        yield {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        _stop(process)


def registry_blob(storage: Path, sha256: str) -> Path:
    """Where the registry keeps a blob's bytes on its own disk."""
    return storage / "docker/registry/v2/blobs/sha256" / sha256[:2] / sha256 / "data"
