"""Every environment variable aotcache reads or sets, in one list (as vLLM's envs.py).

The rest of the package reads the environment only through this module, and only the
names listed here: `get("AOTCACHE_DIR")` of a name not in `VARIABLES` is a KeyError, so
a new variable cannot slip in without its line of documentation. docs/configuration.md's
table of them is `markdown_table()`, checked by tests/test_architecture.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    name: str
    meaning: str
    unset: str  # what leaving it unset means
    ours: bool = True  # False: a variable of the tools around aotcache that it reads or sets


# -- aotcache's own --------------------------------------------------------------------
AOTCACHE_DIR = "AOTCACHE_DIR"
AOTCACHE_COMPILATION_CONFIG = "AOTCACHE_COMPILATION_CONFIG"
AOTCACHE_FORCE_LOAD = "AOTCACHE_FORCE_LOAD"
AOTCACHE_DISABLE_CACHE = "AOTCACHE_DISABLE_CACHE"
AOTCACHE_REMOTE = "AOTCACHE_REMOTE"
AOTCACHE_REMOTE_TIMEOUT = "AOTCACHE_REMOTE_TIMEOUT"
AOTCACHE_STATS_DIR = "AOTCACHE_STATS_DIR"
AOTCACHE_STATS_INTERVAL = "AOTCACHE_STATS_INTERVAL"
AOTCACHE_TRUSTED_KEY = "AOTCACHE_TRUSTED_KEY"
AOTCACHE_OCI_USERNAME = "AOTCACHE_OCI_USERNAME"
AOTCACHE_OCI_PASSWORD = "AOTCACHE_OCI_PASSWORD"
AOTCACHE_PROGRESS = "AOTCACHE_PROGRESS"
AOTCACHE_HEARTBEAT_SECONDS = "AOTCACHE_HEARTBEAT_SECONDS"
AOTCACHE_CPU_FLAGS = "AOTCACHE_CPU_FLAGS"
AOTCACHE_CHECK_BYTES = "AOTCACHE_CHECK_BYTES"
AOTCACHE_FAILPOINT = "AOTCACHE_FAILPOINT"
AOTCACHE_FAILPOINT_ANNOUNCE = "AOTCACHE_FAILPOINT_ANNOUNCE"
# -- the tools around it ------------------------------------------------------------------
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
TORCHINDUCTOR_CPP_MARCH = "TORCHINDUCTOR_CPP_MARCH"
TORCHINDUCTOR_CPP_THREADS = "TORCHINDUCTOR_CPP_THREADS"
TORCHINDUCTOR_CACHE_DIR = "TORCHINDUCTOR_CACHE_DIR"
TORCHINDUCTOR_TENSOR_DATA_PTR = "_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR"
TORCHINDUCTOR_USE_STATIC_CUDA_LAUNCHER = "TORCHINDUCTOR_USE_STATIC_CUDA_LAUNCHER"
TRITON_CACHE_DIR = "TRITON_CACHE_DIR"
CC = "CC"
CXX = "CXX"
STRIP = "STRIP"
DOCKER_CONFIG = "DOCKER_CONFIG"
HF_HUB_OFFLINE = "HF_HUB_OFFLINE"
COLUMNS = "COLUMNS"
PYTHONPATH = "PYTHONPATH"

VARIABLES: tuple[Variable, ...] = (
    Variable(
        AOTCACHE_DIR,
        "the cache dir: `--cache-dir` and `cache_dir=` win over it, it wins over the config's `cache_dir`",
        "the config's `cache_dir`, else the platform's user cache dir",
    ),
    Variable(
        AOTCACHE_COMPILATION_CONFIG,
        "a JSON object of config fields, under those given in code",
        "no fields from the environment",
    ),
    Variable(
        AOTCACHE_FORCE_LOAD,
        "`1`: any miss raises a typed error instead of compiling or running eagerly (as `strict=True`)",
        "a miss is logged and the model compiles or runs eagerly",
    ),
    Variable(
        AOTCACHE_DISABLE_CACHE,
        "`1`: a `@support_compile` model neither loads nor writes the cache: it compiles in a scratch dir",
        "the cache is used",
    ),
    Variable(
        AOTCACHE_REMOTE,
        "the remote a load pulls from on a miss and `push`/`pull`/`precompile --remote` default to",
        "no remote",
    ),
    Variable(AOTCACHE_REMOTE_TIMEOUT, "seconds: the overall deadline of one remote operation", "300"),
    Variable(
        AOTCACHE_STATS_DIR,
        "serving stats: each process records its loads, calls by size and misses there (`aotcache stats`)",
        "not recorded",
    ),
    Variable(AOTCACHE_STATS_INTERVAL, "seconds between two writes of a process's stats file", "60"),
    Variable(
        AOTCACHE_TRUSTED_KEY,
        "a public key (or HMAC key) file: only entries it signed are verified, loaded or pulled",
        "signatures are checked only if present",
    ),
    Variable(AOTCACHE_OCI_USERNAME, "the OCI registry's user (with the password)", "the docker config's credentials"),
    Variable(AOTCACHE_OCI_PASSWORD, "the OCI registry's password or token", "the docker config's credentials"),
    Variable(
        AOTCACHE_PROGRESS,
        "`0`: the library logs no progress lines of its own",
        "progress reaches stderr when nobody configured logging",
    ),
    Variable(AOTCACHE_HEARTBEAT_SECONDS, "seconds between the lines that say a long wait is still waiting", "10"),
    Variable(
        AOTCACHE_CHECK_BYTES,
        "bytes: what precompile's self-check may hold at once; it runs each range at sizes that fit",
        "1073741824 (1 GiB)",
    ),
    Variable(
        AOTCACHE_CPU_FLAGS,
        "the CPU flags this host claims (space or comma separated): simulate a smaller host",
        "/proc/cpuinfo",
    ),
    Variable(
        AOTCACHE_FAILPOINT, "a failpoint name: the process kills itself there (the fault suite)", "no failpoint fires"
    ),
    Variable(
        AOTCACHE_FAILPOINT_ANNOUNCE, "`1`: each failpoint reached is written to stderr (the fault suite)", "silent"
    ),
    Variable(
        SOURCE_DATE_EPOCH,
        "seconds since the epoch: the manifest's `created` (reproducible builds)",
        "the build's own time",
        ours=False,
    ),
    Variable(
        TORCHINDUCTOR_CPP_MARCH,
        "Inductor's `-march`: refused where this torch ignores it",
        "Inductor's default",
        ours=False,
    ),
    Variable(
        TORCHINDUCTOR_CPP_THREADS,
        "the thread count Inductor bakes into CPU kernels (a key factor)",
        "torch's thread count",
        ours=False,
    ),
    Variable(
        TORCHINDUCTOR_CACHE_DIR,
        "Inductor's cache; `verify --run` gives its child an empty one",
        "Inductor's default",
        ours=False,
    ),
    Variable(
        TORCHINDUCTOR_USE_STATIC_CUDA_LAUNCHER,
        "`0`: every Triton kernel goes through Triton's launcher, so a load needs a C compiler (`load_needs`)",
        "torch's static launcher where it can",
        ours=False,
    ),
    Variable(
        TORCHINDUCTOR_TENSOR_DATA_PTR,
        "set by the loader before a kernel library is loaded, as Inductor sets it",
        "set when needed",
        ours=False,
    ),
    Variable(
        TRITON_CACHE_DIR,
        "Triton's cache; a build points it into its scratch dir, `verify --run` at an empty one",
        "Triton's default",
        ours=False,
    ),
    Variable(CC, "the C compiler whose presence a load of Triton kernels may need", "cc, gcc, clang", ours=False),
    Variable(CXX, "the C++ compiler whose presence the inductor format needs", "g++, c++, clang++", ours=False),
    Variable(STRIP, "the strip tool kernel libraries go through (byte-identical builds)", "strip", ours=False),
    Variable(
        DOCKER_CONFIG, "the folder of the docker config the registry credentials come from", "~/.docker", ours=False
    ),
    Variable(
        HF_HUB_OFFLINE,
        "set to 1 (if unset) before an `hf:` config is read: never a download",
        "set by aotcache",
        ours=False,
    ),
    Variable(COLUMNS, "the CLI's table width where stdout is not a terminal", "200", ours=False),
    Variable(
        PYTHONPATH,
        "extended with the working directory for `verify --run`'s child",
        "the working directory only",
        ours=False,
    ),
)
_NAMES = frozenset(v.name for v in VARIABLES)


def _listed(name: str) -> str:
    if name not in _NAMES:
        raise KeyError(f"{name} is not listed in aotcache.envs.VARIABLES")
    return name


def get(name: str, default: str | None = None) -> str | None:
    """The variable's value (a listed name only), or `default`."""
    return os.environ.get(_listed(name), default)


def text(name: str) -> str:
    """The variable's value stripped, "" when unset."""
    return (get(name) or "").strip()


def enabled(name: str) -> bool:
    """Whether the variable says yes: 1, true or yes, in any case."""
    return text(name).lower() in ("1", "true", "yes")


def put(name: str, value: str) -> None:
    os.environ[_listed(name)] = value


def put_default(name: str, value: str) -> None:
    os.environ.setdefault(_listed(name), value)


@contextlib.contextmanager
def setting(name: str, value: str) -> Iterator[None]:
    """The variable set to `value` for the block, restored (or unset) after."""
    before = get(name)
    put(name, value)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def child_environment(**changes: str) -> dict[str, str]:
    """A copy of this process's whole environment for a child process, with `changes`."""
    return {**os.environ, **changes}


def with_prefixes(prefixes: tuple[str, ...], ignored: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(name, value) of every variable whose name starts with one of `prefixes`: the
    settings of a tool (Inductor's TORCHINDUCTOR_*) fingerprinted as a whole."""
    return sorted((k, v) for k, v in os.environ.items() if k.startswith(prefixes) and k not in ignored)


def markdown_table() -> str:
    """The table of docs/configuration.md."""
    rows = ["| variable | meaning | unset |", "| --- | --- | --- |"]
    rows += [f"| `{v.name}` | {v.meaning} | {v.unset} |" for v in VARIABLES]
    return "\n".join(rows)
