"""What loading an entry's artifacts needs besides torch (an inductor-format artifact:
Inductor, a C++ compiler on CPU, Triton on CUDA), and which of that this host lacks."""

from __future__ import annotations

import aotcache.envs as envs

from .artifact import INDUCTOR, Artifact


def load_needs(artifacts: dict[str, Artifact]) -> list[str]:
    """What loading these artifacts needs besides torch on this host: [] for compiler-free
    entries. Triton kernels that torch's static launcher cannot take go through Triton's
    own launcher, whose C stub is built at load: that needs a C compiler. So do all of
    them where the static launcher is switched off (TORCHINDUCTOR_USE_STATIC_CUDA_LAUNCHER
    other than 1), and where the build could not tell which kernels it takes (a torch
    whose Triton bundle does not say: `dynamic_launch` unknown)."""
    needs: set[str] = set()
    static_launcher = envs.get(envs.TORCHINDUCTOR_USE_STATIC_CUDA_LAUNCHER) in (None, "1")
    for artifact in artifacts.values():
        if artifact.format == INDUCTOR:
            needs.add("inductor")
            devices = artifact.device_types or ("cpu",)
            if "cpu" in devices:
                needs.add("c++ compiler")
            if "cuda" in devices:
                needs.add("triton")
            triton = bool(artifact.triton_kernels)
            unknown = triton and artifact.dynamic_launch is None
            if artifact.dynamic_launch or unknown or (triton and not static_launcher):
                needs.add("c compiler")  # Triton's launcher stub, built at load for those kernels
    return sorted(needs)


def missing_needs(needs: list[str]) -> list[str]:
    """Which of `needs` this host lacks (checked without running anything)."""
    import importlib.util
    import shutil

    have = {
        "inductor": importlib.util.find_spec("torch._inductor") is not None,
        "c++ compiler": any(shutil.which(c) for c in filter(None, (envs.get(envs.CXX), "g++", "c++", "clang++"))),
        "triton": importlib.util.find_spec("triton") is not None,
        "c compiler": _c_compiler_and_headers(),
    }
    return [need for need in needs if not have.get(need, False)]


def _c_compiler_and_headers() -> bool:
    """What Triton's launcher stub needs: a C compiler and Python.h."""
    import os
    import shutil
    import sysconfig

    compiler = any(shutil.which(c) for c in filter(None, (envs.get(envs.CC), "cc", "gcc", "clang")))
    return compiler and os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
