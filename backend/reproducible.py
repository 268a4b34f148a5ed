"""Kernel libraries as the same bytes on every builder.

Inductor compiles each CPU kernel in its cache dir (under TMPDIR by default) with line
tables (-g1), and names the source after a hash of its command line, so a library
records the cache dir and that hash in its debug sections, its symbol table and its
GNU build id: two runners that compile the same kernel get other bytes. The loader
needs none of those (it calls the kernel through the dynamic symbol table), so each
library is stored stripped as Debian strips shared libraries (`strip --strip-unneeded`,
without .comment and the build id), and torch's own install paths never reach it
(_torch_compat.reproducible_build_paths). A host without `strip` stores the library as
it is: loadable, only not reproducible.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger("aotcache.precompile")

STRIP_ARGS = ("--strip-unneeded", "--remove-section=.comment", "--remove-section=.note.gnu.build-id")
_warned = False


def library_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a compiled kernel library as the entry stores it."""
    global _warned
    strip = shutil.which(os.environ.get("STRIP", "strip"))
    if strip is None:
        if not _warned:
            _warned = True
            log.warning("no `strip` on PATH: kernel libraries keep their build paths (entries are not reproducible)")
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
