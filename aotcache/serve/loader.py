"""The serving path: find an entry by lookup key, verify it, bind the live model's
tensors, and dispatch each call by its size. Imports nothing of the compile side."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

import aotcache.envs as envs
from aotcache.compilation_counter import counters
from aotcache.configuration import CompilationConfig, Range, current_config, from_dict
from aotcache.errors import (
    AotCacheError,
    CacheMiss,
    CorruptEntry,
    EntryNotFound,
    IncompatibleEnvironment,
    RemoteError,
)
from aotcache.key.env import ENV_FACTOR_PREFIXES
from aotcache.key.factors import explain, lookup_hash
from aotcache.key.identity import class_name
from aotcache.key.lookup import lookup_factors
from aotcache.stats.recorder import recorder_for
from aotcache.store.checks import OpenedEntry, open_entry
from aotcache.store.root import CacheRoot, held, resolve_cache_dir
from aotcache.store.scan import candidate_entries, nearest_entry

from .binding import GraphBinder, load_treespec, unflatten
from .dispatch import SizeDispatcher
from .inputs import InputSpec
from .parts import compiled_parts
from .runtime import build_variants, fx_forward, partition_slots, piece_order

log = logging.getLogger("aotcache")

FORCE_LOAD_ENV = envs.AOTCACHE_FORCE_LOAD


def strict_from_env(strict: bool | None) -> bool:
    if strict is not None:
        return strict
    return envs.enabled(FORCE_LOAD_ENV)


def _hint_parts(miss: CacheMiss, model: torch.nn.Module, config: CompilationConfig) -> None:
    """A model served as parts has no entry of its own: its parts load theirs."""
    parts = compiled_parts(model, lambda fields: config)
    if parts:
        names = ", ".join(part.path for part in parts)
        miss.hint = (
            f"{type(model).__qualname__} is served as parts ({names}): each loads its own entry on its first "
            "call; call the model, or load a part"
        )


def as_config(config: CompilationConfig | dict[str, Any] | None) -> CompilationConfig:
    """A dict is a set of fields over the defaults; None is the config in effect (the
    innermost `with aotcache.config(...)`, else pyproject and AOTCACHE_COMPILATION_CONFIG)."""
    if isinstance(config, CompilationConfig):
        return config
    if config is None:
        return current_config()
    return from_dict(dict(config))


class LoadedModel:
    """A callable that runs an entry's compiled pieces with a live model's tensors.

    Besides being called, it offers the small interface the CUDA-graph runner (and the
    benchmarks) build on, so that neither reaches into its internals:
    `unit_index(size)`, `unit_pieces` (per compile unit, the runnable of every piece by
    name), `piece_order`, `splitting_op_pieces`, `stitch(pieces, *values)`, `graph_values(arguments,
    size)`, `run_unit(arguments, size, unit)`, `finish(outputs)` and `output_dims`."""

    def __init__(self, opened: OpenedEntry, model: torch.nn.Module) -> None:
        manifest = opened.manifest
        self.entry_id = manifest.entry_id
        self.path = opened.path
        self.manifest = manifest
        self.model = model
        self.spec = InputSpec.from_json(manifest.input_spec)
        self.units = [Range(u.start, u.end) for u in manifest.units]
        self.binder = GraphBinder(model, manifest.graph_inputs, self.spec)
        refused = {u.start: u.refused for u in manifest.units if u.refused is not None}
        self.unit_index = SizeDispatcher(self.units, refused)
        self.unit_pieces: list[SimpleNamespace] = build_variants(manifest, opened.blobs)
        self.piece_order = piece_order(manifest.pieces)
        self.partition_slots = partition_slots(self.unit_pieces)  # Inductor's graph partitions, if any
        self.splitting_op_pieces = frozenset(
            name for name, piece in manifest.pieces.items() if piece.kind == "splitting_op"
        )
        self.stitch: Callable[..., tuple[Any, ...]] = fx_forward(opened.blobs, manifest.stitch, "graph")
        self.output_dims: list[list[int]] = manifest.output_dims
        self._output_spec = load_treespec(manifest.output_spec)
        self._graphs: Any = None
        self._call_counts: dict[int, int] | None = None  # calls by size, when stats are recorded

    def rebind(self) -> None:
        """Bind the model's current tensors (call after replacing a parameter object;
        in-place updates such as load_state_dict need no rebind)."""
        self.binder.rebind()

    def dispatch(self, size: int) -> Range:
        """The compile unit that serves a call of this size (raises DispatchError)."""
        return self.units[self.unit_index(size)]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run_batch(*args, **kwargs)

    def run_batch(self, *args: Any, uniform_decode: bool = False, **kwargs: Any) -> Any:
        """Call with the batch kind CUDA-graph dispatch needs: `uniform_decode=True` for a
        batch of decode requests of uniform_decode_query_len tokens each."""
        arguments = self.binder.arguments(args, kwargs)
        size = self.binder.size(arguments)
        if self._graphs is not None:
            result = self._graphs.run(arguments, size, uniform_decode=uniform_decode)
        else:
            result = self.finish(self.run_unit(arguments, size, self.unit_index(size)))
        counts = self._call_counts
        if counts is not None:  # a served size only: the sizes are those the entry accepts
            counts[size] = counts.get(size, 0) + 1
        return result

    def served_by(self, size: int) -> str:
        """What serves a call of `size`: its compile unit ("size 4", "range 9-32"), after
        the graph that replays it where one does ("graph FULL 8, range 5-8": padded to 8)."""
        graph = ""
        if self._graphs is not None:
            from .cudagraph import BatchDescriptor

            mode, key = self._graphs.dispatcher.dispatch(BatchDescriptor(size))
            if key is not None:
                graph, size = f"graph {mode.name} {key.num_tokens}, ", key.num_tokens
        unit = self.dispatch(size)
        return graph + (f"size {unit.start}" if unit.start == unit.end else f"range {unit.start}-{unit.end}")

    def graph_values(self, arguments: dict[str, Any], size: int) -> list[Any]:
        """The stitching graph's inputs for a call: bound tensors, arguments, the size."""
        return self.binder.values(arguments, size)

    def run_unit(self, arguments: dict[str, Any], size: int, unit: int) -> tuple[Any, ...]:
        """The flat graph outputs of a call, run on the pieces of compile unit `unit`."""
        values = self.binder.values(arguments, size)
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self.stitch(self.unit_pieces[unit], *values)
        return self.stitch(self.unit_pieces[unit], *values)

    def finish(self, outputs: Any) -> Any:
        """Forward's return value (a tensor, tuple, dict...) from the flat graph outputs."""
        return unflatten(outputs, self._output_spec)

    def enable_cudagraphs(self, config: CompilationConfig, *, copy_outputs: bool = False) -> bool:
        """Dispatch calls to graphs as `config`'s cudagraph_* fields say, once they are
        captured (capture_cudagraphs). Returns whether graphs are in use: not with
        cudagraph_mode NONE, nor for a model that is not on a CUDA device (said once)."""
        from .cudagraph import GraphRunner

        self._graphs = GraphRunner.create(self, config, copy_outputs=copy_outputs)
        return self._graphs is not None

    def capture_cudagraphs(self, progress: Any = None, *, strict: bool = True) -> int:
        """Capture every configured CUDA graph now, largest first, in one session (the
        loader does it when the entry is loaded: graphs are never captured later).
        Returns how many; 0 without graphs. Where padding a batch to a capture size would
        change its real rows: PaddingError when `strict`, else that size gets no graph
        (its batches run without one, right) and a warning says so."""
        if self._graphs is None:
            return 0
        return self._graphs.capture_all(progress, strict=strict)

    @property
    def graph_runner(self) -> Any:
        """The CUDA-graph runner in use, or None (for inspection: captures, replays)."""
        return self._graphs

    def __repr__(self) -> str:
        return f"LoadedModel(entry={self.entry_id}, model={self.manifest.model_class})"


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Which directory `path` is now: a removed and re-created entry may reuse the
    inode number, but not the change time."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_ctime_ns


def find_and_open(
    model: torch.nn.Module,
    config: CompilationConfig,
    root: CacheRoot,
    verify_signature: Any = None,
) -> OpenedEntry:
    """The newest entry for this model and config that passes every check, the settings
    its trace read included (an entry of the same lookup key traced from a model with
    another eps is a miss naming it, and the next candidate is tried)."""
    factors = lookup_factors(config, model)
    key = lookup_hash(factors)
    failures: list[CacheMiss] = []
    for path in candidate_entries(root, key):
        identity = _identity(path)
        try:
            return open_entry(path, verify_signature=verify_signature, model=model)
        except (CacheMiss, FileNotFoundError) as exc:
            if _identity(path) != identity:  # removed or replaced while we read it: a clean miss
                failures.append(EntryNotFound(f"entry {path.name} was removed while loading", entry_id=path.name))
            elif isinstance(exc, CacheMiss):
                failures.append(exc)
            else:
                raise
    if failures:
        raise failures[0]
    near = nearest_entry(root, factors)
    if near is not None:
        differences = explain(near.lookup, factors)
        # (no differences: the entry was published after we listed; a clean miss)
        if differences and all(d.name.startswith(ENV_FACTOR_PREFIXES) for d in differences):
            raise IncompatibleEnvironment(
                f"the entry for {type(model).__qualname__} with this config ({near.entry_id}) was built for "
                "another environment",
                differences=differences,
                entry_id=near.entry_id,
                hint="precompile on a host with the same software and CPU capability",
            )
        raise EntryNotFound(
            f"no entry for {type(model).__qualname__} with this config and environment in {root.path}; "
            f"nearest is {near.entry_id} (lookup key {key})",
            differences=differences,
            hint="precompile with this config on a host like this one",
        )
    raise EntryNotFound(
        f"no entry for {type(model).__qualname__} (lookup key {key}) in {root.path}",
        hint="run `aotcache precompile` for this model and config",
    )


def _log_wait(who: str, seconds: float) -> None:
    log.info("aotcache: waiting %.0f s for %s", seconds, who)


def _signature_checker(trusted_key: str | os.PathLike[str] | None) -> Any:
    from aotcache.store.signing import signature_checker

    return signature_checker(trusted_key)


def _find_or_pull(
    model: torch.nn.Module, config: CompilationConfig, root: CacheRoot, remote: str | None, checker: Any
) -> OpenedEntry:
    """The local entry, else (with a remote) the one pulled from there."""
    try:
        return find_and_open(model, config, root, verify_signature=checker)
    except CacheMiss as local_miss:
        if not remote:
            raise
        log.info("aotcache: local miss (%s); trying %s", local_miss.reason, remote)
        return _pull_and_open(model, config, root, remote, checker)


def _pull_and_open(
    model: torch.nn.Module, config: CompilationConfig, root: CacheRoot, remote: str, checker: Any
) -> OpenedEntry:
    """Pull this lookup key's entry from the remote, under a per-key file lock: of the
    replicas that miss at once, the first downloads, the others find it published."""
    from aotcache.fleet.connect import open_remote
    from aotcache.fleet.pull import pull_for_lookup

    factors = lookup_factors(config, model)
    key = lookup_hash(factors)
    try:
        from aotcache.fleet.http import Deadline

        deadline = Deadline()  # AOTCACHE_REMOTE_TIMEOUT: the whole pull, the wait for another replica's included
        root.ensure_writable()
        with held(root.lock(f"{key}.pull"), _log_wait, "pulls the same entry", timeout=deadline.remaining()):
            try:
                return find_and_open(model, config, root, verify_signature=checker)
            except CacheMiss:
                pass
            done = pull_for_lookup(root, open_remote(remote, deadline=deadline), key, checker, model, factors)
            counters.remote_pulls += 1
            counters.bytes_downloaded += done.bytes_transferred
    except CacheMiss:
        raise
    except Exception as exc:  # a read-only cache dir, a broken remote: a miss, never a crash
        message = exc.message if isinstance(exc, AotCacheError) else f"{type(exc).__name__}: {exc}"
        raise RemoteError(f"could not pull from {remote} into {root.path}: {message}") from exc
    return find_and_open(model, config, root, verify_signature=checker)


def _build(opened: OpenedEntry, model: torch.nn.Module) -> LoadedModel:
    """The callable of a verified entry. The manifest's structure was checked when it
    was parsed; should anything in it still not fit this model (an edited entry with a
    valid checksum and no signature), that is a corrupt entry, a miss, never a crash."""
    try:
        return LoadedModel(opened, model)
    except AotCacheError:
        raise
    except Exception as exc:
        raise CorruptEntry(
            f"entry {opened.entry_id} could not be loaded: {type(exc).__name__}: {exc}",
            entry_id=opened.entry_id,
            hint="run `aotcache clear --broken` and precompile again",
        ) from exc


def _loaded(root: CacheRoot, loaded: LoadedModel, warnings: list[str]) -> None:
    """Count a load, say what is worth saying about it, and stamp the entry as used."""
    counters.entries_loaded += 1
    for warning in warnings:
        log.warning("aotcache: entry %s: %s", loaded.entry_id, warning)
    root.mark_used(loaded.entry_id)


def load(
    model: torch.nn.Module,
    config: CompilationConfig | dict[str, Any] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    strict: bool | None = None,
    trusted_key: str | os.PathLike[str] | None = None,
    capture_cudagraphs: bool = True,
    cudagraph_copy_outputs: bool = False,
    progress: Any = None,
    remote: str | None = None,
    stats_dir: str | os.PathLike[str] | None = None,
) -> LoadedModel | None:
    """Load the verified entry for `model` and `config`.

    With `remote` (or AOTCACHE_REMOTE): an OCI registry (`oci://host/repository`) or an
    fsspec URL (`s3://bucket/prefix`). On a local miss, the entry for this lookup key is
    pulled from there (verified, then published atomically) and loaded; replicas on one
    host that miss at once download it once (a file lock), the others wait and load it.

    On a miss (no entry, stale sources, corruption, another environment, bad signature)
    raise the typed error when strict (or AOTCACHE_FORCE_LOAD=1); otherwise log why
    and return None so that the caller may compile instead.

    CUDA graphs follow the cudagraph_* fields of the config given here (not the ones the
    entry was built with: they do not change the artifacts): with a cudagraph_mode other
    than NONE and a model on a CUDA device, every configured size is captured here, at
    start-up (`progress(done, total, label)` is told of each), and never later;
    capture_cudagraphs=False runs without graphs. Graph outputs alias graph memory until
    the next call unless cudagraph_copy_outputs=True. A model that is not on CUDA runs
    without graphs (logged once). With `stats_dir` (or AOTCACHE_STATS_DIR) the process
    records its loads, calls by size and misses there (`aotcache stats`).
    """
    started = time.perf_counter()
    recorder = recorder_for(stats_dir)
    config = as_config(config)
    strict = strict_from_env(strict)
    root = CacheRoot(resolve_cache_dir(cache_dir, config.cache_dir))
    remote = remote or envs.get(envs.AOTCACHE_REMOTE) or None
    try:
        opened = _find_or_pull(model, config, root, remote, _signature_checker(trusted_key))
        loaded = _build(opened, model)
    except CacheMiss as miss:
        counters.misses[miss.reason] += 1
        _hint_parts(miss, model, config)
        if recorder is not None:
            recorder.missed(class_name(model), lookup_hash(lookup_factors(config, model)), miss)
        if strict:
            raise
        log.warning("aotcache miss (%s): %s", miss.reason, miss.one_line())
        return None
    _loaded(root, loaded, opened.warnings)
    config.local_cache_dir = str(opened.path)  # vLLM's: the directory of what this config runs
    if capture_cudagraphs and loaded.enable_cudagraphs(config, copy_outputs=cudagraph_copy_outputs):
        loaded.capture_cudagraphs(progress, strict=strict)
    if recorder is not None:
        loaded._call_counts = recorder.loaded(loaded, time.perf_counter() - started)
    log.info("aotcache: loaded entry %s from %s", loaded.entry_id, root.path)
    return loaded
