"""Every torch-internal API the serving path relies on, in one place.

The serving path imports nothing from torch._inductor or torch._dynamo. What it needs
from torch's internals is listed here; tests/test_torch_internals.py checks each item
against the installed torch, so an upgrade that changes one fails loudly.
"""

from __future__ import annotations

from typing import Any

import torch

# Inductor's CPU kernels are Python extension modules whose init function is
# PyInit_kernel and whose callable is `kernel` (CppPythonBindingsCodeCache).
KERNEL_ENTRY_FUNCTION = "kernel"

# A kernel module reads, at import, the address of the C function it uses to get a
# tensor's data pointer from this environment variable (set by Inductor's loader).
TENSOR_DATA_PTR_ENV = "_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR"


def tensor_data_ptr_address() -> int:
    return int(torch._C._dynamo.guards._torchinductor_pyobject_tensor_data_ptr)  # type: ignore[attr-defined]


def load_compiled_artifact(path: str) -> Any:
    """torch's CompiledArtifact saved in the binary format at `path` (imports Inductor:
    only for entries in the inductor format)."""
    from torch._inductor.standalone_compile import CompiledArtifact

    return CompiledArtifact.load(path=path, format="binary")
