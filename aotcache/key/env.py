"""Environment factors a serving host can compute cheaply: no compiler, no Dynamo.

Costs, measured on the development machine (2 cores): all lookup factors together take
well under a millisecond after `import torch`; reading /proc/cpuinfo takes ~0.2 ms. The
compile-side factors (compiler version, the vector ISA Inductor picks with its probe
compiles, torch_key()) cost ~1.1 s and ~0.1 s plus an Inductor import, so they are
computed at precompile time, recorded in the manifest, and checked at load against
what the host can tell without a compiler (its CPU flags).
"""

from __future__ import annotations

import functools
import platform
import sys
from collections.abc import Iterable
from typing import Any

import torch

import aotcache.envs as envs
from aotcache.errors import Difference

from .factors import Factor

# CPU flags that kernels compiled for this host may depend on. With -march=native the
# compiler may use any of them, so an entry records the ones its build host had.
_ISA_FLAG_PREFIXES = (
    "avx",
    "amx",
    "fma",
    "f16c",
    "sse",
    "ssse3",
    "bmi",
    "popcnt",
    "lzcnt",
    "movbe",
    "adx",
    "sha_ni",
    "vaes",
    "vpclmulqdq",
    "gfni",
    "asimd",
    "sve",
    "neon",
    "fp16",
    "bf16",
    "i8mm",
    "dotprod",
)

# gcc -m option -> /proc/cpuinfo flag, where the two spellings differ.
_GCC_TO_CPUINFO = {
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "avx512vbmi2": "avx512_vbmi2",
    "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq",
    "amx-tile": "amx_tile",
    "amx-bf16": "amx_bf16",
    "amx-int8": "amx_int8",
    "amx-fp16": "amx_fp16",
}

CPU_FLAGS_OVERRIDE_ENV = envs.AOTCACHE_CPU_FLAGS
# Names of the lookup factors that describe the host rather than the model or config.
ENV_FACTOR_PREFIXES = ("aotcache.", "torch.", "python.", "platform.", "cpu.", "device.", "cuda.", "hip.", "triton.")


def lookup_env_factors(device_type: str = "cpu", device_index: int | None = None) -> list[Factor]:
    """The environment part of the lookup key. For a CUDA model, the device it is on:
    Inductor's CUDA code names the device index it was compiled for, so an entry is for
    one index (vLLM keeps one cache per rank)."""
    factors = [
        Factor("torch.version", torch.__version__),
        Factor("torch.git_version", getattr(torch.version, "git_version", None)),
        Factor("python.version", f"{sys.version_info.major}.{sys.version_info.minor}"),
        Factor("python.implementation", sys.implementation.name),
        Factor("platform.system", platform.system()),
        Factor("platform.machine", platform.machine()),
        Factor("cpu.capability", torch.backends.cpu.get_cpu_capability()),
        Factor("torch.default_dtype", str(torch.get_default_dtype())),
        Factor("torch.deterministic", torch.are_deterministic_algorithms_enabled()),
        Factor("torch.matmul_precision", torch.get_float32_matmul_precision()),
        Factor("device.type", device_type),
    ]
    if device_type == "cuda":
        factors += cuda_factors(device_index)
    return factors


def cuda_factors(index: int | None = None) -> list[Factor]:
    """The CUDA facts of the device a model is on (`index`; the current one if None) that
    determine the code: the capability (what Triton and Inductor compile for), the CUDA,
    HIP and Triton versions. Not the device's name: an H100 and an H200 (both sm_90) run
    the same kernels, so an entry built on one serves the other; the name is recorded
    in the manifest (`recorded.cuda_device_name`), not keyed."""
    index = torch.cuda.current_device() if index is None else index
    return [
        Factor("cuda.version", torch.version.cuda),
        Factor("hip.version", getattr(torch.version, "hip", None)),
        Factor("cuda.device_index", index),
        Factor("cuda.capability", list(torch.cuda.get_device_capability(index))),
        Factor("triton.version", triton_version()),
    ]


# Triton's distribution is named `triton` on PyPI, `pytorch-triton` in PyTorch's own
# nightly and CUDA indexes, `pytorch-triton-rocm` / `triton-rocm` for ROCm.
TRITON_DISTRIBUTIONS = ("triton", "pytorch-triton", "pytorch-triton-rocm", "triton-rocm")


def triton_version() -> str | None:
    from importlib import metadata

    for name in TRITON_DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def thread_count() -> int:
    """The thread count Inductor's CPU code generation bakes into kernels."""
    configured = envs.get(envs.TORCHINDUCTOR_CPP_THREADS)
    if configured and configured.lstrip("-").isdigit() and int(configured) > 0:
        return int(configured)
    return torch.get_num_threads()


@functools.cache
def _proc_cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def host_cpu_flags() -> frozenset[str]:
    """The CPU flags of this host. AOTCACHE_CPU_FLAGS overrides them, to simulate a host
    with fewer features (tests, and checking an entry before rolling it out elsewhere)."""
    override = envs.get(CPU_FLAGS_OVERRIDE_ENV)
    if override is not None:
        return frozenset(override.replace(",", " ").split())
    return _proc_cpu_flags()


def isa_flags(flags: Iterable[str]) -> list[str]:
    return sorted(f for f in flags if f.startswith(_ISA_FLAG_PREFIXES))


def flags_from_arch_options(options: str) -> list[str]:
    """'-mavx512f -mfma -mavx512vnni' -> ['avx512_vnni', 'avx512f', 'fma']."""
    flags = set()
    for option in options.split():
        if option.startswith("-m") and not option.startswith("-march") and "=" not in option:
            name = option[2:]
            flags.add(_GCC_TO_CPUINFO.get(name, name.replace("-", "_")))
    return sorted(flags)


def required_cpu_flags(build: dict[str, object]) -> list[str]:
    """The CPU flags a host needs to run an entry's kernels, from its build record."""
    needed = set(flags_from_arch_options(str(build.get("vec_isa_flags") or "")))
    if build.get("march") == "native":
        needed.update(build.get("cpu_flags") or [])  # type: ignore[arg-type]
    return sorted(needed)


def host_problems(build: dict[str, Any]) -> list[Difference]:
    """What this host lacks to run an entry's kernels, from the entry's build record:
    CPU features (running AVX-512 kernels without AVX-512 crashes; beside ATen at another
    capability they gave NaNs on this project's test machine), and the versioned
    C++/C runtime symbols the kernels were linked against (a newer compiler's kernels
    need a newer libstdc++)."""
    if not build.get("kernels"):
        return []
    problems = []
    missing = sorted(set(required_cpu_flags(build)) - host_cpu_flags())
    if missing:
        problems.append(Difference("cpu.flags", "present", "missing: " + " ".join(missing)))
    from .elfdeps import missing_versions

    lacking = missing_versions(build.get("runtime_versions") or {})
    if lacking:
        what = "; ".join(f"{library} lacks {', '.join(versions)}" for library, versions in lacking.items())
        problems.append(Difference("compiler", build.get("compiler", "?"), f"this host's runtime: {what}"))
    return problems
