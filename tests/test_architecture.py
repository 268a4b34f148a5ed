"""The package's shape, enforced: wings import only lower layers, the serving side never
imports the compile side, functions stay short, the top level stays small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from _support import REPO

PACKAGE = REPO / "aotcache"
SHARED = {
    "errors",
    "modes",
    "envs",
    "configuration",
    "custom_op",
    "ops",
    "model_spec",
    "compilation_counter",
    "version",
    "target",
    "hf",
    "progress",
}
FACE = {"__init__", "api", "decorators"}
WINGS = ("key", "store", "serve", "formats", "fleet", "verify", "stats")
# What each layer may import, besides itself and the shared modules at the top.
ALLOWED = {
    "shared": set(),
    "key": set(),
    "formats": set(),
    "store": {"key", "formats"},  # formats: the names of the known artifact formats
    "fleet": {"key", "store", "formats"},  # moves entries; never runs them
    "stats": {"key", "store", "fleet"},  # read and sent as data: a stats dir, a remote
    "serve": {"key", "store", "formats", "fleet", "stats"},  # load(remote=...) pulls on a miss; records stats
    "verify": {"key", "store", "formats", "serve"},  # checks an entry, loads it in a child
}


def _layer(module: str) -> str | None:
    """'aotcache.store.scan' -> 'store'; shared top-level modules -> 'shared'."""
    parts = module.split(".")
    if parts[0] != "aotcache":
        return None
    if len(parts) == 1:
        return "face"
    if parts[1] in WINGS:
        return parts[1]
    if parts[1] in SHARED:
        return "shared"
    if parts[1] in FACE:
        return "face"
    return parts[1]  # backend, cli


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file (or in `text`, as that file),
    at any depth."""
    tree = ast.parse(path.read_text() if text is None else text)
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _upward_imports(added: dict[Path, str] | None = None) -> list[str]:
    """Every import of a lower layer from a higher one, in the package and in `added`
    (files as if they were in it, by path and text: nothing is written to the tree)."""
    files: dict[Path, str | None] = {path: None for path in _package_files()}
    files.update(added or {})
    wrong = []
    for path, text in files.items():
        layer = _layer(_module_name(path))
        if layer not in ALLOWED:
            continue
        for line, module in _imports(path, text):
            target = _layer(module)
            if target is None or target in ("shared", layer) or target in ALLOWED[layer]:
                continue
            if module.split(".")[-1] in SHARED | FACE and target == "face":
                continue  # `from aotcache import errors`-style names resolve to shared modules
            wrong.append(f"{path.relative_to(REPO)}:{line} ({layer}) imports {module} ({target})")
    return wrong


def test_wings_import_only_lower_layers() -> None:
    wrong = _upward_imports()
    assert not wrong, "\n".join(wrong)


def test_the_layering_check_catches_an_upward_import() -> None:
    """The check above is not vacuous: a store module importing serve is flagged (a
    module checked as if it were in the package, never written there: another test
    may be building a wheel of the tree at the same time)."""
    probe = PACKAGE / "store" / "_probe_upward.py"
    wrong = _upward_imports({probe: "from aotcache.serve.loader import load\n"})
    assert any("_probe_upward" in line and "serve" in line for line in wrong), wrong


@pytest.mark.parametrize("wing", WINGS)
@pytest.mark.parametrize(
    "line", ["import torch._inductor", "from torch._dynamo import mark_dynamic", "from ..backend import capture"]
)
def test_lint_refuses_compile_side_imports_in_serving_side(wing: str, line: str) -> None:
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run(
        [str(ruff), "check", "--select", "TID253", "--stdin-filename", f"aotcache/{wing}/probe.py", "-"],
        input=f"{line}\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "TID253" in done.stdout, done.stdout + done.stderr


def test_every_wing_says_what_it_owns() -> None:
    for wing in WINGS:
        doc = ast.get_docstring(ast.parse((PACKAGE / wing / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 20, wing
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= len(SHARED | FACE) and set(top) <= SHARED | FACE, top
    assert (PACKAGE / "py.typed").is_file()


def test_no_function_over_60_lines() -> None:
    long = []
    for root in ("aotcache",):
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                    if lines > 60:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "\n".join(long)


def test_no_function_of_the_package_shadows_a_module() -> None:
    """`aotcache.config(...)` is a function and the config's modules live in
    `aotcache.configuration`: no name of the public face is also a submodule's, so no
    import order can replace one with the other."""
    import aotcache

    modules = {p.stem for p in PACKAGE.glob("*.py")} | {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    clashing = sorted(
        name
        for name in aotcache.__all__
        if name in modules and not isinstance(getattr(aotcache, name), type(aotcache))  # aotcache.hf is the module
    )
    assert not clashing, clashing
    assert callable(aotcache.config) and not (PACKAGE / "config.py").exists()


# The only files that touch torch's private modules (torch 2.11-2.15 differ there; see
# backend/_torch_compat.py). torch._check is public API; torch.utils._pytree is what
# torch's own documentation points users at.
TORCH_FENCE = {
    "aotcache/backend/_torch_compat.py",
    "aotcache/formats/torch_internals.py",
    "aotcache/formats/inductor_runtime.py",
}
_PUBLIC_PRIVATES = ("torch._check", "torch.utils._pytree")


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _torch_internals_used(source: str, label: str) -> list[str]:
    """Each private torch module or attribute a file names, and each comparison with
    torch's version number, as `label:line name`."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.Attribute):
            names = [_dotted(node) or ""]
        for name in names:
            parts = name.split(".")
            private = next((i for i, p in enumerate(parts[1:], 1) if p.startswith("_") and not p.startswith("__")), 0)
            prefix = ".".join(parts[: private + 1])
            if parts[0] == "torch" and private and not prefix.startswith(_PUBLIC_PRIVATES):
                found.add((node.lineno, prefix))
        if isinstance(node, ast.Compare):
            compared = [_dotted(n) for n in [node.left, *node.comparators]]
            if "torch.__version__" in compared:
                found.add((node.lineno, "a comparison with torch.__version__"))
    return [f"{label}:{line} {name}" for line, name in sorted(found)]


def test_torch_internals_stay_behind_the_fence() -> None:
    """Torch versions differ in their internals; aotcache handles that in three files, by
    feature detection, and nowhere compares torch's version number."""
    used = []
    for root in ("aotcache", "examples"):
        for path in sorted((REPO / root).rglob("*.py")):
            label = str(path.relative_to(REPO))
            if label not in TORCH_FENCE:
                used += _torch_internals_used(path.read_text(), label)
    assert not used, "\n".join(used)


def test_the_fence_check_catches_a_private_torch_use() -> None:
    source = "import torch\nx = torch._inductor.config.cpp.march\nif torch.__version__ >= '2.13':\n    pass\n"
    found = _torch_internals_used(source, "probe.py")
    assert found == ["probe.py:2 torch._inductor", "probe.py:3 a comparison with torch.__version__"], found


def _environment_reads(source: str, label: str) -> list[str]:
    """Each `os.environ` or `os.getenv` a file names, as `label:line`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _dotted(node) in ("os.environ", "os.getenv", "os.putenv", "os.unsetenv"):
            found.append(f"{label}:{node.lineno} {_dotted(node)}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{label}:{node.lineno} from os import {a.name}" for a in node.names if "env" in a.name]
    return found


def test_the_environment_is_read_only_through_envs() -> None:
    """One list of every environment variable (aotcache/envs.py); nothing else in the
    package touches os.environ."""
    used = []
    for path in _package_files():
        if path != PACKAGE / "envs.py":
            used += _environment_reads(path.read_text(), str(path.relative_to(REPO)))
    assert not used, "\n".join(used)
    assert _environment_reads("import os\nx = os.environ.get('A')\n", "probe.py") == ["probe.py:2 os.environ"]


def test_every_environment_variable_is_documented() -> None:
    """docs/configuration.md's table is envs.markdown_table(), and every AOTCACHE_* name
    the package's source spells is listed."""
    import re

    from aotcache import envs

    doc = (REPO / "docs" / "configuration.md").read_text()
    table = doc.split("<!-- envs:begin -->\n", 1)[1].split("\n<!-- envs:end -->", 1)[0]
    assert table == envs.markdown_table(), "paste envs.markdown_table() into docs/configuration.md"
    spelled = set()
    for path in _package_files():
        spelled |= set(re.findall(r"\bAOTCACHE_[A-Z_]+\b", path.read_text()))
    listed = {v.name for v in envs.VARIABLES}
    assert spelled <= listed, sorted(spelled - listed)
    assert {n for n in listed if n.startswith("AOTCACHE_")} <= spelled


def _import_graph(added: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at any depth, lazy imports too). A
    `from package import submodule` is an edge to the submodule alone."""
    files = {_module_name(path): path for path in _package_files()}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name in files}
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, node.module] if node.module else base)
                submodules = {f"{module}.{a.name}" for a in node.names} & set(files)
                found |= submodules
                if len(submodules) < len(node.names) and module in files:
                    found.add(module)
        graph[name] = found - {name}
    for name, extra in (added or {}).items():
        graph.setdefault(name, set()).update(extra)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    """No two modules of aotcache import each other, directly or around a loop, lazily
    or not; the check finds a loop that is there."""
    assert not _cycles(_import_graph())
    probe = _import_graph(
        {"aotcache.store.root": {"aotcache.store.scan"}, "aotcache.store.scan": {"aotcache.store.root"}}
    )
    assert ["aotcache.store.root", "aotcache.store.scan"] in _cycles(probe)


def test_every_package_lists_its_modules() -> None:
    """Each package's __init__ names each of its modules and subpackages (in backticks),
    one line each: the map of the house is in the house."""
    missing = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        names = [p.stem for p in init.parent.glob("*.py") if p.stem != "__init__"]
        names += [p.parent.name for p in init.parent.glob("*/__init__.py")]
        missing += [f"{init.relative_to(REPO)}: {n}" for n in sorted(names) if f"`{n}`" not in doc]
    assert not missing, "\n".join(missing)
