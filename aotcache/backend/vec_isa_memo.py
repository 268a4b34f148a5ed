"""Inductor's vector-ISA probes, remembered in the cache dir.

Before its first CPU compile in a process, Inductor checks which vector ISAs (AVX2,
AVX512, AMX...) this host can build and run, by compiling and running a test program for
each one the CPU lists: 10 g++ runs, ~9 s here with an empty Inductor cache, a third of
a cold precompile and three quarters of a rebuild that reuses every unit. The answer
depends only on torch, the compiler and the CPU. aotcache records it under `host/`,
named by a fingerprint of those; a later precompile with the same fingerprint, where
every ISA the CPU lists passed, gives Inductor that answer (`cpp.vec_isa_ok`) instead of
probing again: the same ISA is picked, so the same code is generated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
from collections.abc import Iterator

import torch

import aotcache.envs as envs
from aotcache.store.root import CacheRoot

from . import _torch_compat as compat

log = logging.getLogger("aotcache.precompile")

# Environment that can change what the probes answer (the cache dir and thread counts cannot).
_ENV_PREFIXES = ("TORCHINDUCTOR_", "ATEN_CPU_", "CXX", "CC")
_ENV_IGNORED = {"TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_COMPILE_THREADS"}


def _listed() -> list[str] | None:
    """The ISAs whose flags this CPU lists (what Inductor would probe); None off x86."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    return compat.listed_vec_isas()


def fingerprint(listed: list[str]) -> str:
    compiler = compat.compiler_identity()
    path = shutil.which(compat.cpp_compiler()) or ""
    try:
        info = os.stat(os.path.realpath(path)) if path else None
    except OSError:
        info = None
    facts = {
        "torch": [torch.__version__, torch.version.git_version],
        "compiler": [compiler, os.path.realpath(path) if path else "", info and [info.st_size, info.st_mtime_ns]],
        "listed": listed,
        "env": envs.with_prefixes(_ENV_PREFIXES, _ENV_IGNORED),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


@contextlib.contextmanager
def remembered_vec_isa(root: CacheRoot) -> Iterator[None]:
    """Compile inside this: the probes are skipped where their answer is on record, and
    recorded where it is not."""
    listed = _listed()
    if not listed:
        yield
        return
    name = f"vec-isa-{fingerprint(listed)}.json"
    known = root.host_fact(name)
    if known == {"listed": listed, "valid": listed}:
        log.debug("vector ISA probes skipped: every listed ISA passed them on this host before")
        with compat.isa_probes_skipped():
            yield
        return
    yield
    if compat.vec_isa_probed():  # a build that compiled nothing never probed (entry.py predicts)
        root.write_host_fact(name, {"listed": listed, "valid": compat.valid_vec_isas()})
