"""Named fault-injection points (as etcd's and TiKV's failpoints), for the fault suite.

`AOTCACHE_FAILPOINT=<name>` makes the process SIGKILL itself when it reaches the point
named; `AOTCACHE_FAILPOINT=enospc:<name>` makes that point raise "No space left on
device" instead. `AOTCACHE_FAILPOINT_ANNOUNCE=1` makes every point print
`aotcache-failpoint: <name>` on stderr as it is reached, so that a test can kill the
build at a random moment inside a chosen stage. Unset (always, outside tests), a point
costs two dict lookups.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

import aotcache.envs as envs

ENV = envs.AOTCACHE_FAILPOINT
ANNOUNCE_ENV = envs.AOTCACHE_FAILPOINT_ANNOUNCE
ANNOUNCE_PREFIX = "aotcache-failpoint: "

# The points, in the order a precompile reaches them.
POINTS = (
    "before-trace",
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
    if envs.get(ANNOUNCE_ENV):
        sys.stderr.write(f"{ANNOUNCE_PREFIX}{name}\n")
        sys.stderr.flush()
    wanted = envs.get(ENV)
    if not wanted:
        return
    if wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if wanted == f"enospc:{name}":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
