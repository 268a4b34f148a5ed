"""Traced source files: portable names and content hashes.

A file is named by its module path, relative to the import root it was imported from
(`torch/nn/modules/linear.py`, `examples/tiny_llama.py`), so the name is the same on
every host that imports the same code, wherever it is installed; the kind of root is
recorded too (the standard library, site-packages, or another sys.path entry such as a
project directory), never its absolute path.

A check finds each file as an import would: through this process's sys.path (where a
TARGET is given, its root is on it) and the modules it has imported. A file found with
other content makes the entry stale; a file that cannot be found from here (a command
run from another directory) is *unknown*: a warning, never stale, because a source that
cannot be found is not a changed source.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from aotcache.errors import Difference

ROOT_KINDS = ("stdlib", "site-packages", "path")


@dataclass(frozen=True)
class SourceFile:
    path: str
    sha256: str
    root: str | None = None  # one of ROOT_KINDS (entries of older versions have none)

    def to_json(self) -> dict[str, str]:
        data = {"path": self.path, "sha256": self.sha256}
        if self.root is not None:
            data["root"] = self.root
        return data

    @classmethod
    def from_json(cls, data: dict[str, str]) -> SourceFile:
        return cls(data["path"], data["sha256"], data.get("root"))


@dataclass
class SourceCheck:
    """What a check of the recorded sources found: files whose content differs (the
    entry is stale), and files that cannot be found from this process (unknown)."""

    changed: list[Difference]
    unknown: list[SourceFile]

    def unknown_message(self) -> str | None:
        if not self.unknown:
            return None
        shown = ", ".join(s.path for s in self.unknown[:3]) + (" ..." if len(self.unknown) > 3 else "")
        project = any(s.root in (None, "path") for s in self.unknown)
        fix = "run from the project root, set PYTHONPATH, or give the TARGET" if project else "check the environment"
        return f"{len(self.unknown)} traced source file(s) not found from here, so not checked ({shown}): {fix}"


def _search_roots() -> list[str]:
    roots = []
    for entry in sys.path:
        root = os.path.realpath(entry or os.getcwd())
        if os.path.isdir(root) and root not in roots:
            roots.append(root)
    return roots


_module_files: tuple[int, dict[str, str]] = (-1, {})


def _module_relpaths() -> dict[str, str]:
    """abspath of each imported module's file -> its path relative to its import root
    (`examples.tiny_llama` -> examples/tiny_llama.py), rebuilt when modules are added."""
    global _module_files
    count = len(sys.modules)
    if _module_files[0] != count:
        index = {}
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if not path or name == "__main__" or not path.endswith(".py"):
                continue
            parts = name.split(".")
            if path.endswith("__init__.py"):
                parts.append("__init__")
            index[os.path.abspath(path)] = "/".join(parts) + ".py"
        _module_files = (count, index)
    return _module_files[1]


def _root_kind(real: str) -> str:
    """Which kind of import root holds a file: the standard library, site-packages (or
    dist-packages), or any other sys.path entry (a project directory)."""
    parts = Path(real).parts
    if "site-packages" in parts or "dist-packages" in parts:
        return "site-packages"
    stdlib = os.path.realpath(os.path.dirname(os.__file__))
    if real.startswith(stdlib + os.sep):
        return "stdlib"
    return "path"


def portable_path(path: str | os.PathLike[str]) -> str:
    """The path relative to the root it is imported from: by module name where a
    module was imported from it, else the deepest sys.path entry holding it, else
    the absolute path."""
    absolute = os.path.abspath(path)
    relative = _module_relpaths().get(absolute)
    if relative and Path(absolute).as_posix().endswith("/" + relative):
        return relative
    real = os.path.realpath(path)
    best = None
    for root in _search_roots():
        if real.startswith(root.rstrip(os.sep) + os.sep) and (best is None or len(root) > len(best)):
            best = root
    if best is None:
        return Path(real).as_posix()
    return Path(os.path.relpath(real, best)).as_posix()


def locate(portable: str) -> Path | None:
    """Where a portable path lives on this host: searching sys.path as imports do, else
    the file of the imported module of that name (packages installed in editable mode
    are found by an import hook, not under any sys.path entry)."""
    if os.path.isabs(portable):
        return Path(portable) if os.path.isfile(portable) else None
    for root in _search_roots():
        candidate = Path(root, portable)
        if candidate.is_file():
            return candidate
    for path, relative in _module_relpaths().items():
        if relative == portable and os.path.isfile(path):
            return Path(path)
    return _in_imported_package(portable)


def _in_imported_package(portable: str) -> Path | None:
    """The file under the directory of an already imported package of the path's first
    name (aotcache itself, installed in editable mode, is found so from anywhere); no
    module is imported to find it, so nothing a manifest names is run."""
    top = portable.split("/", 1)[0]
    package = sys.modules.get(top)
    for folder in getattr(package, "__path__", None) or []:
        candidate = Path(folder).parent / portable
        if candidate.is_file():
            return candidate
    return None


def file_sha256(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def record(paths: set[str] | list[str]) -> list[SourceFile]:
    """Hash every existing file; pseudo-files such as '<string>' are skipped."""
    records = {}
    for path in paths:
        if path and os.path.isfile(path):
            name = portable_path(path)
            records[name] = SourceFile(name, file_sha256(path), _root_kind(os.path.realpath(path)))
    return [records[name] for name in sorted(records)]


def check(recorded: list[SourceFile]) -> SourceCheck:
    """Each recorded file, found as an import would find it: changed, or unknown."""
    result = SourceCheck([], [])
    for source in recorded:
        found = locate(source.path)
        if found is None:
            result.unknown.append(source)
            continue
        current = file_sha256(found)
        if current != source.sha256:
            result.changed.append(Difference(source.path, source.sha256[:12], current[:12]))
    return result


def sources_digest(recorded: list[SourceFile]) -> str:
    hasher = hashlib.sha256()
    for source in recorded:
        hasher.update(f"{source.path}\0{source.sha256}\n".encode())
    return hasher.hexdigest()
