"""Named fault-injection points (as etcd's and TiKV's failpoints), for the fault suite.

`AOTCACHE_FAILPOINT=<name>` makes the process SIGKILL itself when it reaches the point
named; `AOTCACHE_FAILPOINT=enospc:<name>` makes that point raise "No space left on
device" instead. Unset (always, outside tests), a point costs one dict lookup.
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "AOTCACHE_FAILPOINT"

# The points, in the order a precompile reaches them.
POINTS = (
    "after-trace",
    "after-first-compile",
    "kernel-write",
    "manifest-write",
    "before-publish",
    "after-publish",
)
# Reached only by a precompile with --sign-key, between manifest-write and before-publish.
SIGNING_POINTS = ("signature-write",)


def failpoint(name: str) -> None:
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    if wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if wanted == f"enospc:{name}":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
