"""Kernel libraries as the same bytes on every builder.

Inductor compiles each CPU kernel in its cache dir (under TMPDIR by default) with line
tables (-g1); _torch_compat.reproducible_build_paths keeps every build path out of the
kernel and its name. What else a compiler or linker writes beside the code (debug
sections, the local symbol table, .comment, the GNU build id) the loader does not need
(it calls the kernel through the dynamic symbol table), so each library is stored
stripped as Debian strips shared libraries (`strip --strip-unneeded`, without .comment
and the build id): fewer bytes that can differ between builders, and a third of the
size. A host without `strip` stores the library as it is: loadable, and reproducible
as far as the path maps reach.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import aotcache.envs as envs

log = logging.getLogger("aotcache.precompile")

STRIP_ARGS = ("--strip-unneeded", "--remove-section=.comment", "--remove-section=.note.gnu.build-id")
_warned = False


def library_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a compiled kernel library as the entry stores it."""
    global _warned
    strip = shutil.which(envs.get(envs.STRIP) or "strip")
    if strip is None:
        if not _warned:
            _warned = True
            log.warning("no `strip` on PATH: kernel libraries are stored unstripped (debug sections, build id)")
        return Path(path).read_bytes()
    with tempfile.TemporaryDirectory(prefix="aotcache-strip-") as folder:
        stripped = os.path.join(folder, "kernel.so")
        done = subprocess.run(
            [strip, *STRIP_ARGS, "-o", stripped, os.fspath(path)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            log.warning("strip failed on %s (%s); stored as it is", path, done.stderr.strip()[:200])
            return Path(path).read_bytes()
        return Path(stripped).read_bytes()
