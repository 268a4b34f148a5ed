"""Export an Inductor-compiled piece as a native artifact: Inductor's own wrapper code,
rewritten to import its few runtime helpers from aotcache.formats.inductor_runtime, plus the
compiled kernel libraries it calls.

Loading such an artifact needs neither a C++ compiler nor Inductor: the wrapper is plain
Python over torch, and each kernel is a shared library. Anything in the wrapper this
rewrite does not understand makes the export fail loudly (UnsupportedWrapper), never
produce an artifact that might behave differently.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from aotcache.errors import CompileError
from aotcache.formats import inductor_runtime

from . import _torch_compat as compat

# Modules a rewritten wrapper may import (besides aotcache.formats.inductor_runtime).
ALLOWED_IMPORTS = frozenset({"ctypes", "torch", "math", "random", "os", "tempfile", "cmath"})
RUNTIME_MODULE = "aotcache.formats.inductor_runtime"
# Generated helpers that only serve Inductor's benchmarking harness.
DROPPED_FUNCTIONS = frozenset({"get_args", "benchmark_compiled_module"})


class UnsupportedWrapper(CompileError):
    """The generated code uses something the native artifact format cannot carry."""


@dataclass
class NativeArtifact:
    wrapper: str
    kernels: dict[str, str] = field(default_factory=dict)  # source sha256 -> .so path on this host
    extern_kernels: list[str] = field(default_factory=list)


def export(source_code: str) -> NativeArtifact:
    tree = ast.parse(source_code)
    tree.body = [node for node in tree.body if not _dropped(node)]
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module in inductor_runtime.REPLACED_IMPORTS:
            _rewrite_import(node)
    _check_imports(tree)
    kernels = _kernels(tree)
    externs = _extern_kernels(tree)
    return NativeArtifact(ast.unparse(tree) + "\n", kernels, externs)


def _dropped(node: ast.stmt) -> bool:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return True  # docstrings, including the commented-out autotuning block
    if isinstance(node, ast.FunctionDef) and node.name in DROPPED_FUNCTIONS:
        return True
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _rewrite_import(node: ast.ImportFrom) -> None:
    allowed = inductor_runtime.REPLACED_IMPORTS[node.module or ""]
    for alias in node.names:
        if alias.name not in allowed:
            raise UnsupportedWrapper(
                f"generated code imports {alias.name} from {node.module}, which aotcache cannot provide"
            )
    node.module = RUNTIME_MODULE


def _check_imports(tree: ast.Module) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            if name != RUNTIME_MODULE and name.split(".")[0] not in ALLOWED_IMPORTS:
                raise UnsupportedWrapper(f"generated code imports {name}")
            if name.startswith(("torch._inductor", "torch._dynamo")):
                raise UnsupportedWrapper(f"generated code imports {name}, which needs Inductor at load time")


def _kernels(tree: ast.Module) -> dict[str, str]:
    """Every `async_compile.<kind>(...)` call must be a CPU pybinding kernel with literal
    arguments; returns source digest -> the compiled library Inductor made for it."""
    kernels = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Name) and owner.id == "async_compile"):
            continue
        if node.func.attr == "wait":
            continue
        if node.func.attr != "cpp_pybinding" or len(node.args) != 2 or node.keywords:
            raise UnsupportedWrapper(f"generated code compiles a kernel with async_compile.{node.func.attr}")
        argtypes: Any = ast.literal_eval(node.args[0])
        source: Any = ast.literal_eval(node.args[1])
        kernels[inductor_runtime.kernel_source_digest(source)] = compat.kernel_library(argtypes, source)
    return kernels


def _extern_kernels(tree: ast.Module) -> list[str]:
    names = sorted(
        {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "extern_kernels"
        }
    )
    for name in names:
        ours = getattr(inductor_runtime.extern_kernels, name, None)
        if ours is None or ours is not compat.extern_kernel(name):
            raise UnsupportedWrapper(f"generated code calls extern kernel {name}, which aotcache cannot provide")
    return names
