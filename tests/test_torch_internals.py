"""Every torch internal aotcache relies on, checked against the installed torch.

If a torch upgrade moves or changes one of these, this file fails first and says which;
the fix belongs in aotcache/_torch_internals.py, aotcache/inductor_runtime.py or
aotcache/backend/_torch_compat.py, the only places that touch them."""

from __future__ import annotations

import inspect
import json
import os

import torch
from _support import run_python

from aotcache.backend import _torch_compat as compat
from aotcache.backend.native import export
from aotcache.formats import Artifact, inductor_runtime
from aotcache.formats import torch_internals as internals
from aotcache.serve.runtime import artifact_call


def _small_graph() -> torch.fx.GraphModule:
    def f(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.relu(x @ w).sum(-1, keepdim=True) * x,)

    return torch.fx.symbolic_trace(f)


def test_kernel_loading_protocol() -> None:
    from torch._inductor.codecache import CppPythonBindingsCodeCache

    assert CppPythonBindingsCodeCache.entry_function == internals.KERNEL_ENTRY_FUNCTION
    assert internals.TENSOR_DATA_PTR_ENV in inspect.getsource(CppPythonBindingsCodeCache._load_library_inner)
    assert internals.tensor_data_ptr_address() > 0


def test_inductor_helpers_we_replace_still_exist_and_agree() -> None:
    import importlib

    for module, names in inductor_runtime.REPLACED_IMPORTS.items():
        loaded = importlib.import_module(module)
        for name in names:
            assert hasattr(loaded, name), f"{module}.{name} is gone"
    from torch._inductor.utils import ALIGN_BYTES

    assert ALIGN_BYTES == inductor_runtime.ALIGN_BYTES
    for nbytes in (0, 1, 63, 64, 65, 1000, 4096, 4097):
        assert inductor_runtime._align(nbytes) == compat.inductor_align(nbytes)
    for name in ("mm", "bmm", "addmm", "baddbmm", "convolution"):
        assert getattr(inductor_runtime.extern_kernels, name) is compat.extern_kernel(name), name


def test_standalone_compile_and_native_export_round_trip() -> None:
    graph = _small_graph()
    x, w = torch.randn(6, 8), torch.randn(8, 8)
    with torch.no_grad():
        artifact = compat.standalone_compile(graph, [x, w], "from_example_inputs", {})
    info = compat.compiled_graph_info(artifact)
    assert isinstance(info["source_code"], str) and "def call(" in info["source_code"]
    assert info["mutated_inputs"] == [] and info["constants"] == [] and info["device_types"] == ["cpu"]
    native = export(info["source_code"])
    assert "torch._inductor" not in native.wrapper and native.kernels
    for library in native.kernels.values():
        assert os.path.isfile(library) and library.endswith(".so")
    blobs = {"artifacts/w.py": native.wrapper.encode()}
    kernels = {}
    for digest, library in native.kernels.items():
        blobs[f"kernels/{digest}.so"] = open(library, "rb").read()
        kernels[digest] = f"kernels/{digest}.so"
    record = Artifact.from_json({"format": "native", "wrapper": "artifacts/w.py", "kernels": kernels})
    call = artifact_call(blobs, record, "test")
    with torch.no_grad():
        (ours,) = call([x, w])
        (theirs,) = artifact(x, w)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_dynamo_and_fx_hooks() -> None:
    files: set[str] = set()
    seen: list[list[str]] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        seen.append(compat.traced_code_files())
        return gm.forward

    def helper(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    def top(x: torch.Tensor) -> torch.Tensor:
        return helper(x) + 1

    with compat.recording_inlined_files(files):
        torch.compile(top, backend=backend, fullgraph=True)(torch.randn(3))
    assert __file__ in files and seen and __file__ in seen[0]
    compat.forget_compiled_code(top)
    source = compat.fx_module_source(_small_graph())
    namespace: dict = {}
    exec(compile(source, "<fx>", "exec"), namespace)
    assert callable(namespace["forward"])


def test_op_names_and_splitting_op_files() -> None:
    from examples import tiny_llama

    packet = torch.ops.tinyllama.attention
    assert compat.op_qualname(packet) == "tinyllama::attention"
    assert compat.op_qualname(packet.default) == "tinyllama::attention"
    assert compat.op_qualname(torch.relu) is None
    files, unfound = compat.splitting_op_files(["tinyllama::attention"])
    assert tiny_llama.__file__ in files and unfound == []
    files, unfound = compat.splitting_op_files(["aten::relu"])  # C++: no file, and we say so
    assert files == set() and unfound == ["aten::relu"]


def test_build_host_probes() -> None:
    isa = compat.vec_isa()
    assert set(isa) == {"vec_isa", "vec_isa_flags", "march"}
    assert compat.compiler_identity().split(":")[0] in ("g++", "c++", "gcc", "clang++", "cc")
    assert os.path.basename(compat.cpp_compiler()) in ("g++", "c++", "gcc", "clang++", "cc")
    assert len(compat.torch_key()) == 64
    assert len(compat.inductor_config_digest()) == 16
    listed = compat.listed_vec_isas()  # torch._inductor.cpu_vec_isa
    assert set(compat.valid_vec_isas()) <= set(listed) or not listed


def test_the_predicted_vector_isa_is_the_probed_one_and_leaves_nothing_behind() -> None:
    """A unit key names the ISA Inductor will pick before anything compiles (a fresh CI
    runner that reuses every unit never probes); the guess must be the probes' answer on
    a normal host, and must not stand in for the probes afterwards. In a fresh process:
    this one may have probed already."""
    code = """
import json
import sys
from aotcache.backend import _torch_compat as compat
assert "torch._inductor.config" not in sys.modules
march_unimported = compat.cpp_march_unimported()
from torch._inductor import cpu_vec_isa
predicted = compat.predicted_vec_isa()
checks = [type(isa).__bool__ for isa in cpu_vec_isa.supported_vec_isa_list]
left = compat.vec_isa_probed() or any(c.cache_info().currsize for c in checks if hasattr(c, "cache_info"))
print(json.dumps({"predicted": predicted, "left": bool(left), "probed": compat.vec_isa(),
                  "march": march_unimported == compat.cpp_march()}))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["predicted"] == found["probed"] and not found["left"] and found["march"], found


def test_inductor_settings_are_read_by_feature_not_by_version() -> None:
    """A setting the running torch lacks is (False, None), never an AttributeError:
    `cpp.march` exists from torch 2.13, and before it kernels are built -march=native."""
    assert compat.inductor_setting("cpp.no_such_setting") == (False, None)
    assert compat.inductor_setting("no_such_group.x") == (False, None)
    assert compat.inductor_setting("compile_threads")[0]
    assert compat.inductor_setting("cpp.threads")[0] and compat.inductor_setting("cpp.vec_isa_ok")[0]
    has_march, march = compat.inductor_setting("cpp.march")
    assert compat.cpp_march() == ("native" if not has_march or march is None else march)
    with compat.one_compile_thread():
        assert compat.inductor_setting("compile_threads") == (True, 1)
    with compat.isa_probes_skipped():
        assert compat.inductor_setting("cpp.vec_isa_ok") == (True, True)


def test_march_follows_the_setting_where_torch_has_it() -> None:
    code = """
import os
from aotcache.backend import _torch_compat as compat
has, _ = compat.inductor_setting("cpp.march")
print(has, compat.cpp_march())
"""
    done = run_python(code, env={"TORCHINDUCTOR_CPP_MARCH": "x86-64-v2"})
    has, march = done.stdout.split()
    assert march == ("x86-64-v2" if has == "True" else "native"), done.stderr[-2000:]
    if has == "False":
        assert "TORCHINDUCTOR_CPP_MARCH is set" in done.stderr


def test_dynamo_marks_and_artifact_loading(tmp_path) -> None:
    x = torch.randn(4, 3)
    compat.mark_dynamic(x, [0])
    y = torch.randn(5, 3)
    compat.mark_unbacked(y, 0, 5)  # torch._dynamo.decorators.mark_unbacked(hint_override=)
    captured = {}

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        captured["graph"] = gm
        return gm.forward

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ w) * 2

    torch.compile(f, backend=backend, fullgraph=True, dynamic=False)(torch.randn(6, 8), torch.randn(8, 8))
    with torch.no_grad():  # a Dynamo graph: what precompile gives standalone_compile, and what saves
        artifact = compat.standalone_compile(
            captured["graph"], [torch.randn(6, 8), torch.randn(8, 8)], "from_example_inputs", {}
        )
    path = tmp_path / "a.bin"
    artifact.save(path=str(path), format="binary")
    loaded = internals.load_compiled_artifact(str(path))
    x, w = torch.randn(6, 8), torch.randn(8, 8)
    torch.testing.assert_close(loaded(x, w)[0], artifact(x, w)[0])


def test_inductor_config_digest_is_the_same_before_and_after_a_compile() -> None:
    """A compile patches Inductor settings and restores them; the digest (part of every
    unit key) must not see that, or the first build of a process reuses nothing."""
    code = """
from aotcache.backend import _torch_compat as compat
import torch
before = compat.inductor_config_digest()
graph = torch.fx.symbolic_trace(lambda x: (x * 2).relu())
compat.standalone_compile(graph, [torch.randn(4, 4)], "from_example_inputs", {})
print(before == compat.inductor_config_digest())
"""
    done = run_python(code)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "True", done.stderr[-2000:]


def test_the_partition_wrapper_hook() -> None:
    """CUDA graphs per Inductor partition rest on post_compile applying the registered
    wrapper with CUDAGraphWrapperMetadata(num_partitions, partition_index), and on the
    partition count a wrapper's `Runner(partitions=[...])` names."""
    import dataclasses

    import torch._inductor.output_code as output_code
    import torch._inductor.utils as inductor_utils

    from aotcache.configuration.compilation import torch_without_partition_wrappers

    assert callable(inductor_utils.set_customized_partition_wrappers)
    assert inductor_utils._unstable_customized_partition_wrapper.wrapper is None
    fields = [f.name for f in dataclasses.fields(inductor_utils.CUDAGraphWrapperMetadata)]
    assert fields[:2] == ["num_partitions", "partition_index"]
    assert "_unstable_customized_partition_wrapper" in vars(output_code)  # what post_compile reads
    assert torch_without_partition_wrappers() is None
