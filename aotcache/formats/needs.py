"""What loading an entry's artifacts needs besides torch (an inductor-format artifact:
Inductor, a C++ compiler on CPU, Triton on CUDA), and which of that this host lacks."""

from __future__ import annotations

import aotcache.envs as envs

from .artifact import INDUCTOR, Artifact


def load_needs(artifacts: dict[str, Artifact]) -> list[str]:
    """What loading these artifacts needs besides torch: [] for compiler-free entries."""
    needs: set[str] = set()
    for artifact in artifacts.values():
        if artifact.format == INDUCTOR:
            needs.add("inductor")
            devices = artifact.device_types or ("cpu",)
            if "cpu" in devices:
                needs.add("c++ compiler")
            if "cuda" in devices:
                needs.add("triton")
            if artifact.dynamic_launch:
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
