"""Which versioned symbols compiled kernels need (GLIBCXX_3.4.30, GLIBC_2.34, GOMP_4.0)
and whether this host's runtime libraries provide them, read from ELF headers.

This is how a serving host without a compiler checks "built with a newer compiler than
this host's C++ runtime supports" before loading anything, instead of failing in dlopen.
Only ELF64 little-endian (Linux x86-64, aarch64) is understood; elsewhere the check is
skipped and dlopen itself reports a mismatch.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from collections.abc import Iterable

_SHT_GNU_VERDEF = 0x6FFFFFFD
_SHT_GNU_VERNEED = 0x6FFFFFFE


def _sections(data: bytes) -> list[tuple[int, int, int, int, int]] | None:
    """(type, offset, size, link, info) of each section of an ELF64 LE image, or None."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = []
    for i in range(shnum):
        base = shoff + i * shentsize
        if base + 64 > len(data):
            return None
        _, kind, _, _, offset, size, link, info = struct.unpack_from("<IIQQQQII", data, base)
        sections.append((kind, offset, size, link, info))
    return sections


def _string(data: bytes, table: tuple[int, int, int, int, int], offset: int) -> str:
    start = table[1] + offset
    end = data.index(b"\0", start)
    return data[start:end].decode("ascii", "replace")


def required_versions(data: bytes) -> dict[str, list[str]]:
    """library -> versions a shared object needs (from .gnu.version_r)."""
    sections = _sections(data)
    if sections is None:
        return {}
    needs: dict[str, set[str]] = {}
    for kind, offset, _, link, count in sections:
        if kind != _SHT_GNU_VERNEED:
            continue
        strings = sections[link]
        entry = offset
        for _ in range(count):
            _, cnt, file_off, aux_off, next_off = struct.unpack_from("<HHIII", data, entry)
            library = _string(data, strings, file_off)
            aux = entry + aux_off
            for _ in range(cnt):
                _, _, _, name_off, aux_next = struct.unpack_from("<IHHII", data, aux)
                needs.setdefault(library, set()).add(_string(data, strings, name_off))
                if not aux_next:
                    break
                aux += aux_next
            if not next_off:
                break
            entry += next_off
    return {library: sorted(versions) for library, versions in sorted(needs.items())}


def provided_versions(data: bytes) -> set[str]:
    """Versions a shared library defines (from .gnu.version_d)."""
    sections = _sections(data)
    if sections is None:
        return set()
    provided = set()
    for kind, offset, _, link, count in sections:
        if kind != _SHT_GNU_VERDEF:
            continue
        strings = sections[link]
        entry = offset
        for _ in range(count):
            _, _, _, cnt, _, aux_off, next_off = struct.unpack_from("<HHHHIII", data, entry)
            if cnt:
                name_off = struct.unpack_from("<I", data, entry + aux_off)[0]
                provided.add(_string(data, strings, name_off))
            if not next_off:
                break
            entry += next_off
    return provided


def merge(requirements: Iterable[dict[str, list[str]]]) -> dict[str, list[str]]:
    merged: dict[str, set[str]] = {}
    for item in requirements:
        for library, versions in item.items():
            merged.setdefault(library, set()).update(versions)
    return {library: sorted(versions) for library, versions in sorted(merged.items())}


@functools.cache
def _loaded_library(name: str) -> str | None:
    """The path of a shared library this process has mapped (torch loads libstdc++,
    libc, libm and libgomp), by soname."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                base = os.path.basename(path)
                if base == name or base.startswith(name + "."):  # libstdc++.so.6.0.30
                    return path
    except OSError:
        pass
    return None


@functools.cache
def host_versions(library: str) -> frozenset[str] | None:
    """Versions this host's copy of `library` provides; None when it cannot be told."""
    path = _loaded_library(library)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return frozenset(provided_versions(f.read()))
    except OSError:
        return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def missing_versions(required: dict[str, list[str]]) -> dict[str, list[str]]:
    """Required versions this host's runtime libraries lack (only for libraries whose
    versions can be read here)."""
    missing = {}
    for library, versions in required.items():
        available = host_versions(library)
        if available is None:
            continue
        lacking = [v for v in versions if v not in available]
        if lacking:
            missing[library] = sorted(lacking, key=_version_key)
    return missing
