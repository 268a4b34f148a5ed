"""Every torch-internal API the compile side relies on, in one place.

tests/test_torch_internals.py exercises each of these against the installed torch, so a
torch upgrade that moves or changes one fails loudly there, not deep in a precompile.

aotcache supports torch 2.11 to 2.15. Where they differ, this module asks torch what it
has (does the setting exist, what does the function accept), never its version number:
* `torch._inductor.config.cpp.march` (TORCHINDUCTOR_CPP_MARCH) exists from 2.13; before,
  Inductor always compiles CPU kernels with -march=native (see `cpp_march`).
* `cpp_builder.get_cpp_compiler` takes an optional `device_type` from 2.15.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch

import aotcache.envs as envs
from aotcache.errors import CompileError

log = logging.getLogger("aotcache.precompile")

# -- Dynamo ------------------------------------------------------------------------------


@contextlib.contextmanager
def recording_inlined_files(files: set[str]) -> Iterator[None]:
    """Record the file of every function Dynamo inlines (as vLLM does)."""
    from torch._dynamo.symbolic_convert import InliningInstructionTranslator

    original = InliningInstructionTranslator.inline_call_

    def patched(self_: Any) -> Any:
        files.add(self_.f_code.co_filename)
        return original(self_)

    InliningInstructionTranslator.inline_call_ = patched  # type: ignore[method-assign]
    try:
        yield
    finally:
        InliningInstructionTranslator.inline_call_ = original  # type: ignore[method-assign]


def traced_code_files() -> list[str]:
    """Files of the code objects the current Dynamo trace went through (inside a backend)."""
    code = torch._guards.TracingContext.get_traced_code() or []
    return [c.co_filename for c in code]


def forget_compiled_code(function: Callable[..., Any]) -> None:
    """Drop Dynamo's cache entry for a function, so a later capture traces it again."""
    torch._dynamo.eval_frame.remove_from_cache(function)


def splitting_op_files(names: list[str]) -> tuple[set[str], list[str]]:
    """Source files of the Python implementations of custom ops (Dynamo does not trace
    into opaque ops, so their files would otherwise be missing from the key): from
    torch.library.custom_op's definition, else from where the fake impl was registered.
    Also returns the ops for which no file was found (e.g. ops implemented in C++)."""
    from torch._library.custom_ops import OPDEFS
    from torch._library.simple_registry import singleton

    files: set[str] = set()
    unfound = []
    for name in names:
        qualname = name.split(".")[0]
        found = set()
        opdef = OPDEFS.get(qualname)
        functions = [getattr(opdef, "_init_fn", None), getattr(opdef, "_abstract_fn", None)] if opdef else []
        for fn in functions:
            try:
                path = inspect.getsourcefile(fn) if fn is not None else None
            except (TypeError, OSError):  # a builtin or C function has no source file
                path = None
            if path:
                found.add(path)
        kernel = singleton.find(qualname).fake_impl.kernel
        source = getattr(kernel, "source", None)
        if isinstance(source, str) and ":" in source:
            found.add(source.rsplit(":", 1)[0])
        if not found:
            unfound.append(name)
        files |= found
    return files, unfound


def made_with_custom_op(name: str) -> bool:
    """Whether an op was defined with torch.library.custom_op (whose wrapper imports
    Dynamo on the op's first call in any process, eager included)."""
    from torch._library.custom_ops import OPDEFS

    return name.split(".")[0] in OPDEFS


def op_qualname(target: Any) -> str | None:
    """'ns::op' for an OpOverloadPacket and for the default OpOverload (torch leaves out
    ".default"), 'ns::op.overload' for another OpOverload; None for anything else."""
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name
    if isinstance(target, torch._ops.OpOverload):
        return target.name()
    return None


def op_names(target: Any) -> list[str]:
    """Every name a node's op goes by: op_qualname's, and 'ns::op.default' for the
    default OpOverload (vLLM's should_split takes both); [] for anything else."""
    name = op_qualname(target)
    if name is None:
        return []
    default = isinstance(target, torch._ops.OpOverload) and target._overloadname == "default"
    return [name, f"{name}.default"] if default else [name]


def registered_op_names() -> set[str]:
    """Every op torch's dispatcher knows, as 'ns::op' and 'ns::op.overload' (the default
    overload also as 'ns::op.default')."""
    names = set(torch._C._dispatch_get_all_op_names())
    return names | {f"{n}.default" for n in names if "." not in n.split("::", 1)[-1]}


def traced_lower_bound(example_values: list[Any], symbol: Any) -> int:
    """The smallest value the trace lets the dynamic size take (2 for a backed size:
    Dynamo specialises 0 and 1), from the ShapeEnv's range of the symbol; 1 if unknown."""
    for value in example_values:
        if isinstance(value, torch.SymInt):
            bounds = value.node.shape_env.var_to_range.get(symbol)
            try:
                return max(1, int(bounds.lower)) if bounds is not None else 1
            except (TypeError, ValueError):  # -oo
                return 1
    return 1


def dim_repr(dim: Any) -> Any:
    """An int, or the printed sympy expression of a symbolic dimension."""
    if isinstance(dim, torch.SymInt):
        return str(dim.node.expr)
    return int(dim)


def fx_module_source(graph: torch.fx.GraphModule) -> str:
    """The graph's generated `forward` preceded by the imports its globals need (the
    same import block GraphModule pickling uses)."""
    from torch.fx.graph_module import _format_import_block
    from torch.package import sys_importer

    # Type annotations add nothing at run time and may be unimportable strings.
    annotated = [(node, node.type) for node in graph.graph.nodes if node.type is not None]
    for node, _ in annotated:
        node.type = None
    try:
        code = graph.graph.python_code(root_module="self")
    finally:
        for node, annotation in annotated:
            node.type = annotation
    imports = _format_import_block(code.globals, sys_importer)
    return f"{imports}\n{code.src.strip()}\n"


# -- Inductor ----------------------------------------------------------------------------


def standalone_compile(
    graph: torch.fx.GraphModule, example_inputs: list[Any], dynamic_shapes: str, config_patches: dict[str, Any]
) -> Any:
    from torch._inductor import standalone_compile as compile_fn

    # The artifact must carry its Triton kernels (cubins, launch metadata): without the
    # bundle a load would compile them again, or take them from a shared cache.
    patches = {**config_patches, "bundle_triton_into_fx_graph_cache": True}
    options = {"config_patches": patches}
    return compile_fn(graph, example_inputs, dynamic_shapes=dynamic_shapes, options=options)


def compiled_graph_info(artifact: Any) -> dict[str, Any]:
    """What standalone_compile's result knows about the compiled graph."""
    fn = artifact._compiled_fn
    return {
        "source_code": getattr(fn, "source_code", None),
        "guards_expr": getattr(fn, "guards_expr", None),
        "mutated_inputs": sorted(getattr(fn, "mutated_inputs", None) or []),
        "constants": sorted((getattr(fn, "constants", None) or {}).keys()),
        "device_types": sorted(getattr(fn, "device_types", None) or []),
    }


def triton_launch(artifact: Any) -> dict[str, Any] | None:
    """The Triton kernels a compiled graph bundles, and which of them torch's static
    launcher cannot take (num_ctas != 1, scratch memory, user kernels): those go through
    Triton's own launcher at load, which builds a C stub (a C compiler and Python.h).
    None for a graph without Triton kernels."""
    bundle = getattr(artifact._compiled_fn, "_triton_bundle", None)
    if bundle is None:
        return None
    names: set[str] = set()
    for kernel in bundle.kernel_artifacts:
        for file in kernel.artifacts:
            stem, extension = os.path.splitext(file.filename)
            if extension in (".cubin", ".hsaco", ".zebin", ".spv"):
                names.add(stem)
    autotuners = getattr(bundle, "static_autotuners", None)
    static = {autotuner.kernel_name for autotuner in autotuners or []}
    if not names and not static:
        return None
    # a torch whose bundle does not list them: which kernels need Triton's launcher is unknown
    dynamic = sorted(names - static) if autotuners is not None else None
    return {"triton_kernels": len(names | static), "dynamic_launch": dynamic}


def extern_kernel(name: str) -> Any:
    from torch._inductor.select_algorithm import extern_kernels

    return getattr(extern_kernels, name, None)


def inductor_align(nbytes: int) -> int:
    from torch._inductor.codegen.memory_planning import _align

    return _align(nbytes)


def kernel_library(argtypes: list[str], source: str) -> str:
    """The path of the compiled .so for a `cpp_pybinding` kernel (compiled by Inductor
    moments ago, so this is a cache hit)."""
    from torch._inductor.codecache import CppPythonBindingsCodeCache

    kernel = CppPythonBindingsCodeCache.load_pybinding(argtypes, source)
    return kernel.__self__.__file__


def inductor_setting(name: str) -> tuple[bool, Any]:
    """(whether this torch's Inductor has the setting, its value): `name` is dotted as in
    `config.patch` ("cpp.march"). A setting the running torch lacks is reported, never an
    AttributeError."""
    from torch._inductor import config

    target: Any = config
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            return False, None
    return True, target


MARCH_ENV = envs.TORCHINDUCTOR_CPP_MARCH
_warned_march_ignored = False


def cpp_march() -> str:
    """The -march Inductor compiles CPU kernels for: "native", a named target such as
    "x86-64-v3", or "" (no -march: the compiler's default). Read from `cpp.march` where
    this torch has the setting (2.13+, set by TORCHINDUCTOR_CPP_MARCH; None is native);
    older torch always compiles with -march=native and ignores the variable (said once)."""
    global _warned_march_ignored
    has_setting, march = inductor_setting("cpp.march")
    if not has_setting:
        if envs.get(MARCH_ENV) and not _warned_march_ignored:
            _warned_march_ignored = True
            log.warning(
                "%s is set, but torch %s has no such Inductor setting: kernels are compiled with -march=native "
                "(torch 2.13 or newer honours it)",
                MARCH_ENV,
                torch.__version__,
            )
        return "native"
    return "native" if march is None else str(march)


def vec_isa() -> dict[str, str]:
    """The vector ISA Inductor picks on this host (it runs probe compiles: ~1 s once)."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    isa = pick_vec_isa()
    return {
        "vec_isa": type(isa).__name__,
        "vec_isa_flags": isa.build_arch_flags() if isa else "",
        "march": cpp_march(),
    }


def cpp_compiler() -> str:
    """The C++ compiler Inductor compiles CPU kernels with (a name or a path)."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    return get_cpp_compiler()  # 2.15 added an optional device_type; CPU is its default


def listed_vec_isas() -> list[str]:
    """The vector ISAs this x86 CPU lists, which Inductor probes before its first compile."""
    from torch._inductor.cpu_vec_isa import supported_vec_isa_list, x86_isa_checker

    flags = x86_isa_checker()
    return [str(isa) for isa in supported_vec_isa_list if all(f in flags for f in str(isa).split())]


def valid_vec_isas() -> list[str]:
    """The vector ISAs that passed Inductor's probes in this process."""
    from torch._inductor.cpu_vec_isa import valid_vec_isa_list

    return [str(isa) for isa in valid_vec_isa_list()]


def cpp_march_unimported() -> str:
    """cpp_march() without importing Inductor (~1.6 s: it imports Dynamo) when nothing
    has imported it yet, so nothing can have changed `cpp.march` in this process: what
    Inductor would read from the environment (2.13+), else "native". Once Inductor is
    imported, its own setting."""
    import sys

    if "torch._inductor.config" in sys.modules:
        return cpp_march()
    march = envs.get(MARCH_ENV) if _config_source_has(r"^\s+march\b") else None
    return "native" if march is None else march


def _config_source_has(pattern: str) -> bool:
    """Whether Inductor's config.py defines a setting, read from its source (importing
    it imports Dynamo); a torch without that file answers no."""
    import re

    path = os.path.join(os.path.dirname(torch.__file__), "_inductor", "config.py")
    try:
        with open(path, encoding="utf-8") as source:
            return re.search(pattern, source.read(), re.MULTILINE) is not None
    except OSError:
        return False


def _clear_isa_caches() -> None:
    """Drop every answer Inductor cached about vector ISAs (the list and each ISA's own
    check, sub-ISA builds included), so the next question probes for real."""
    from torch._inductor import cpu_vec_isa

    cpu_vec_isa.valid_vec_isa_list.cache_clear()  # vec_isa_probed() saw that it has one
    for isa in cpu_vec_isa.supported_vec_isa_list:
        for klass in type(isa).__mro__:
            for method in vars(klass).values():
                if callable(getattr(method, "cache_clear", None)):
                    method.cache_clear()


def vec_isa_probed() -> bool:
    """Whether Inductor has run (or been told the answer of) its ISA probes in this process
    (True where this torch does not say: then nothing is predicted)."""
    from torch._inductor.cpu_vec_isa import valid_vec_isa_list

    info = getattr(valid_vec_isa_list, "cache_info", None)
    return info is None or info().currsize > 0


def predicted_vec_isa() -> dict[str, str]:
    """vec_isa() as Inductor answers it where every ISA this CPU lists (sub-ISAs such as
    avx512_bf16 included) passes its probe compiles (nearly every host), without running
    them (~10 s with an empty Inductor cache): a unit key's build environment is known
    before anything compiles. Inductor's cached answers are dropped after, so the first
    real compile still probes; precompile checks the prediction against that
    (backend/entry.py)."""
    from torch._inductor import cpu_vec_isa

    isa_class = getattr(cpu_vec_isa, "VecISA", None)
    if vec_isa_probed() or not hasattr(isa_class, "check_build") or not hasattr(cpu_vec_isa, "supported_vec_isa_list"):
        return vec_isa()  # probed already, or a torch whose probes this cannot answer: ask them
    # Each ISA object records what its sub-ISA checks found (avx512_bf16...): kept aside
    # and put back, with every cached answer dropped, so nothing of the guess remains.
    states = [(isa, dict(vars(isa))) for isa in cpu_vec_isa.supported_vec_isa_list]
    original_check = cpu_vec_isa.VecISA.check_build
    cpu_vec_isa.VecISA.check_build = lambda self, code: True  # what the CPU lists, the compiler builds
    try:
        with isa_probes_skipped():
            return vec_isa()
    finally:
        cpu_vec_isa.VecISA.check_build = original_check
        for isa, state in states:
            vars(isa).clear()
            vars(isa).update(state)
        _clear_isa_caches()


def isa_probes_skipped() -> Any:
    """A context in which Inductor takes every listed vector ISA as valid, without its
    probe compiles (`cpp.vec_isa_ok`)."""
    from torch._inductor import config

    return config.patch({"cpp.vec_isa_ok": True})


# Where build paths are mapped to in a kernel's bytes (the __FILE__ of the kernel source
# and of torch's headers in assert messages, and the debug sections): the same kernel
# whatever the Inductor cache dir, TMPDIR, HOME, venv or Python install it was built in.
# In this order on the command line: gcc and clang try the last -ffile-prefix-map first,
# so a path inside another (torch inside the venv) comes after it.
BUILD_PATH_PREFIXES = (
    ("python", "/aotcache/python"),
    ("venv", "/aotcache/venv"),
    ("torch", "/aotcache/torch"),
    ("inductor", "/aotcache/inductor"),
)


def build_paths() -> dict[str, str]:
    """The placeholder that stands for each build path in a hashed command line (see
    reproducible_build_paths), and that path on this host: as given and resolved."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        inductor_cache = cache_dir()
    except (ImportError, AttributeError):  # then kernels keep that path (not reproducible)
        inductor_cache = ""
    found = {"python": sys.base_prefix, "venv": sys.prefix, "torch": os.path.dirname(torch.__file__)}
    found["inductor"] = inductor_cache
    paths = {}
    for name, _ in BUILD_PATH_PREFIXES:
        paths[f"@aotcache-{name}@"] = found[name]
        paths[f"@aotcache-{name}-resolved@"] = os.path.realpath(found[name]) if found[name] else ""
    return paths


def _prefix_map_flags() -> str:
    """The -ffile-prefix-map flags with placeholders for the paths: the same text on
    every host, so Inductor's hash of the command line (the kernel's name, which its
    bytes record) is too."""
    return " ".join(
        f"-ffile-prefix-map=@aotcache-{name}{variant}@={new}"
        for name, new in BUILD_PATH_PREFIXES
        for variant in ("", "-resolved")
    )


def _usable(path: str) -> bool:
    return bool(path) and path != "/" and not any(c.isspace() for c in path)


def _with_placeholders(cmd_line: str, paths: dict[str, str]) -> str:
    """The command line with each build path (include dirs, the output in the Inductor
    cache) written as its placeholder, longest first: what Inductor hashes."""
    for placeholder, path in sorted(paths.items(), key=lambda item: len(item[1]), reverse=True):
        if _usable(path):
            cmd_line = cmd_line.replace(path, placeholder)
    return cmd_line


def _with_paths(cmd_line: str, paths: dict[str, str]) -> str:
    """The command as it runs: each placeholder replaced by its path (one with a space
    or none at all stays a placeholder: a prefix that matches nothing)."""
    for placeholder, path in paths.items():
        if _usable(path):
            cmd_line = cmd_line.replace(placeholder, path)
    return cmd_line


@contextlib.contextmanager
def reproducible_build_paths() -> Iterator[None]:
    """Kernels compiled inside this record no build path. Every command line Inductor
    builds (`CppBuilder.get_command_line`, which it also hashes to name the kernel
    source) has its build paths written as placeholders and gains -ffile-prefix-map
    flags for them, and each command it runs (`cpp_builder.run_compile_cmd`) gets the
    real paths back (gcc 8+, clang 10+). So the kernel's name is the same on every host
    whatever its venv, TMPDIR or cache dir, and differs from
    that of a kernel built without the maps (in this process before, or in a shared
    Inductor cache), which is never taken instead. Inductor's own compile pool (fresh
    processes, without this) is off inside; precompile parallelises with its own forked
    workers (--jobs). Without the internals, kernels compile as before (entries are then
    not reproducible)."""
    try:
        from torch._inductor import config, cpp_builder
    except ImportError:
        yield
        return
    run = getattr(cpp_builder, "run_compile_cmd", None)
    builder = getattr(cpp_builder, "CppBuilder", None)
    command_line = getattr(builder, "get_command_line", None)
    if run is None or command_line is None:
        yield
        return
    flags, paths = _prefix_map_flags(), build_paths()

    @functools.wraps(command_line)
    def with_prefix_maps(self: Any) -> str:
        compiler, _, rest = _with_placeholders(command_line(self), paths).partition(" ")
        return f"{compiler} {flags} {rest}"

    @functools.wraps(run)
    def with_paths(cmd_line: str, *args: Any, **kwargs: Any) -> Any:
        return run(_with_paths(cmd_line, paths), *args, **kwargs)

    builder.get_command_line = with_prefix_maps
    cpp_builder.run_compile_cmd = with_paths
    try:
        with config.patch(compile_threads=1):
            yield
    finally:
        builder.get_command_line = command_line
        cpp_builder.run_compile_cmd = run


def one_compile_thread() -> Any:
    """A context in which Inductor compiles kernels in-process (no compile pool)."""
    from torch._inductor import config

    return config.patch(compile_threads=1)


def set_kernel_threads(threads: int) -> None:
    """Make Inductor generate CPU code for `threads` threads (a worker compiles for its
    parent's count while it runs torch itself with one)."""
    from torch._inductor import config

    config.cpp.threads = threads


def mark_dynamic(tensor: torch.Tensor, dims: list[int]) -> None:
    torch._dynamo.mark_dynamic(tensor, dims)


def mark_unbacked(tensor: torch.Tensor, dim: int, hint: int) -> None:
    """An unbacked dynamic dim, with the example's size as the hint Inductor tunes for."""
    torch._dynamo.decorators.mark_unbacked(tensor, dim, hint_override=hint)


def compiler_identity() -> str:
    """'g++ (Debian 12.2.0-14) 12.2.0': the compiler Inductor uses, by name and version."""
    compiler = cpp_compiler()
    path = shutil.which(compiler) or compiler
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, env=envs.child_environment(LC_ALL="C")
        )
        first = (out.stdout or out.stderr).splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        first = "unknown"
    return f"{os.path.basename(path)}: {first}"


def torch_key() -> str:
    from torch._inductor.codecache import torch_key as key

    return key().hex()


# Settings that change how Inductor works, never what it generates (precompile --jobs
# turns Inductor's own compile pool off while its workers run).
# And cpp.vec_isa_ok, which vec_isa_memo sets only where the probes' answer is on record.
_NOT_IN_THE_CODE = frozenset({"compile_threads", "worker_start_method", "cpp.vec_isa_ok"})


def inductor_config_digest() -> str:
    """A digest of the Inductor settings that differ from their defaults (env vars such as
    TORCHINDUCTOR_* included); the per-entry inductor_compile_config is keyed separately."""
    import hashlib

    from torch._inductor import config

    values = config.get_config_copy()
    # By value, not by Inductor's "was it ever set" flag: a compile patches settings and
    # restores them, which flips that flag without changing a value, and the digest must
    # be the same before and after the first compile of a process.
    changed = sorted(
        (name, _setting_repr(values[name]))
        for name, entry in config._config.items()
        if name in values and values[name] != entry.default and name not in _NOT_IN_THE_CODE
    )
    return hashlib.sha256(repr(changed).encode()).hexdigest()[:16]


def inductor_partition_count(wrapper_source: str) -> int | None:
    """How many graph partitions an Inductor CPU wrapper runs (its `Runner(partitions=
    [...])`; the CPU never has one: every CPU op is outside CUDA-graph partitions), None
    where the wrapper names none."""
    found = re.search(r"Runner\(partitions=\[([^\]]*)\]\)", wrapper_source)
    if found is None:
        return None
    return len([name for name in found.group(1).split(",") if name.strip()])


def _setting_repr(value: Any) -> str:
    """A setting as the digest sees it: a custom graph pass by its uuid (its repr holds an
    address, different in every process), a list of them by theirs."""
    passes = value if isinstance(value, (list, tuple)) else [value]
    if passes and all(callable(getattr(p, "uuid", None)) for p in passes):
        return repr([_uuid_text(p.uuid()) for p in passes])
    return repr(value)


def _uuid_text(uuid: Any) -> str:
    return uuid.hex() if isinstance(uuid, bytes) else str(uuid)


def is_graph_pass(value: Any) -> bool:
    from torch._inductor.custom_graph_pass import CustomGraphPass

    return isinstance(value, CustomGraphPass)


def graph_pass(function: Callable[[torch.fx.Graph], None], uuid: str) -> Any:
    """A plain function taking the graph, as the CustomGraphPass Inductor needs to cache
    (and aotcache to key) a compile it ran in: `uuid` names its code."""
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class FunctionPass(CustomGraphPass):
        def __call__(self, graph: torch.fx.Graph) -> None:
            function(graph)

        def uuid(self) -> str:
            return uuid

        def __repr__(self) -> str:
            return f"<pass {getattr(function, '__qualname__', function)} {uuid[:12]}>"

    return FunctionPass()


def graph_pass_uuid(value: Any) -> str:
    """A CustomGraphPass's uuid as text; ValueError where it has none (Inductor would
    then compile without its cache, and aotcache could not key the pass)."""
    uuid = value.uuid()
    if not uuid:
        raise ValueError(f"{type(value).__name__}.uuid() returned {uuid!r}")
    return _uuid_text(uuid)


@contextlib.contextmanager
def inductor_settings(settings: dict[str, Any]) -> Iterator[None]:
    """Inductor settings (pass slots among them) for every compile inside; a setting the
    running torch lacks was refused before (inductor_setting)."""
    if not settings:
        yield
        return
    from torch._inductor import config

    with config.patch(settings):
        yield


@contextlib.contextmanager
def backed_size_oblivious(enabled: bool) -> Iterator[None]:
    """Backed sizes reasoned about as unbacked where torch can (no 0/1 specialisation
    where the code allows): for the trace only, as vLLM sets it."""
    if not enabled:
        yield
        return
    from torch.fx.experimental import _config

    with _config.patch(backed_size_oblivious=True):
        yield


def guard_source(entry: Any) -> Any:
    """The Source a guard of `guard_filter_fn`'s list is about (how Dynamo reached it)."""
    return entry.orig_guard.originating_source


def guard_keyword(entry: Any, name: str) -> Any:
    """A guard's own argument (the attribute of NOT_PRESENT_IN_GENERIC_DICT, the key of
    DICT_CONTAINS, the other source of DUPLICATE_INPUT), which Dynamo keeps in the
    guard's create_fn."""
    keywords = getattr(entry.orig_guard.create_fn, "keywords", None) or {}
    if name not in keywords:
        raise CompileError(f"Dynamo's {entry.guard_type} guard on {entry.name!r} carries no {name!r}")
    return keywords[name]


def hasattr_guard(entry: Any) -> tuple[Any, str]:
    """(source of the object, attribute name) of a HASATTR guard: newer torch keeps the
    name as the guard's argument, the object being its source; 2.11 guards the attribute's
    own source (object.name)."""
    keywords = getattr(entry.orig_guard.create_fn, "keywords", None) or {}
    source = guard_source(entry)
    if "attr" in keywords:
        return source, keywords["attr"]
    while type(source).__name__.endswith("NNModuleSource"):  # what the guard builder unwraps
        source = source.base
    if not hasattr(source, "member"):
        raise CompileError(f"Dynamo's HASATTR guard on {entry.name!r} names no attribute")
    return source.base, source.member


def contains_guard(entry: Any, present: bool) -> tuple[Any, bool]:
    """(key, whether it must be present) of a DICT_/SET_(NOT_)CONTAINS guard: 2.11 has one
    kind per container with an `invert` argument; newer torch a NOT_ kind of its own
    (`present` says which of those `entry` is)."""
    keywords = getattr(entry.orig_guard.create_fn, "keywords", None) or {}
    return guard_keyword(entry, "key"), present != bool(keywords.get("invert", False))


def compile_recording_guards(
    function: Callable[..., Any], backend: Callable[..., Any], on_guards: Callable[[list[Any]], None]
) -> Callable[..., Any]:
    """torch.compile of `function` (one full graph, static unless marked dynamic) that
    hands every guard Dynamo installs to `on_guards` and keeps them all."""

    def keep_all(entries: Any) -> list[bool]:
        on_guards(list(entries))
        return [True] * len(entries)

    return torch.compile(
        function, backend=backend, fullgraph=True, dynamic=False, options={"guard_filter_fn": keep_all}
    )
