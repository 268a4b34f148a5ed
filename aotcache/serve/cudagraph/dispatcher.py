"""Which graph serves a batch: vLLM's CudagraphDispatcher. The keys (one set per runtime
mode) are the only source of truth for what can be dispatched."""

from __future__ import annotations

from typing import NamedTuple

from aotcache.configuration import CompilationConfig
from aotcache.modes import CUDAGraphMode


class BatchDescriptor(NamedTuple):
    """What a batch looks like to the graph cache: its (padded) token count, and whether
    it is a uniform decode batch (every request has uniform_decode_query_len tokens)."""

    num_tokens: int
    uniform_decode: bool = False

    @property
    def non_uniform(self) -> BatchDescriptor:
        return BatchDescriptor(self.num_tokens, uniform_decode=False)


class CudagraphDispatcher:
    """Holds the keys of the graphs that may exist, one set per runtime mode; the keys are
    the only source of truth for what can be dispatched."""

    def __init__(self, config: CompilationConfig) -> None:
        self.config = config
        self.capture_sizes = list(config.cudagraph_capture_sizes or [])
        self.padded = config.compute_bs_to_padded_graph_size() if self.capture_sizes else []
        self.keys: dict[CUDAGraphMode, set[BatchDescriptor]] = {
            CUDAGraphMode.PIECEWISE: set(),
            CUDAGraphMode.FULL: set(),
        }
        self.initialize_keys(config.cudagraph_mode, config.uniform_decode_query_len)

    def add_key(self, mode: CUDAGraphMode, descriptor: BatchDescriptor) -> None:
        if mode not in self.keys:
            raise ValueError(f"graphs are captured in PIECEWISE or FULL mode, not {mode.name}")
        self.keys[mode].add(descriptor)

    def initialize_keys(self, mode: CUDAGraphMode, uniform_decode_query_len: int) -> None:
        for key_set in self.keys.values():
            key_set.clear()
        mixed = mode.mixed_mode()
        if mixed != CUDAGraphMode.NONE:
            for size in self.capture_sizes:
                self.add_key(mixed, BatchDescriptor(size, uniform_decode=False))
        if mode.separate_routine() and mode.decode_mode() == CUDAGraphMode.FULL:
            # a uniform decode batch holds whole requests of uniform_decode_query_len tokens
            for size in self.capture_sizes:
                if size >= uniform_decode_query_len and size % uniform_decode_query_len == 0:
                    self.add_key(CUDAGraphMode.FULL, BatchDescriptor(size, uniform_decode=True))

    def padded_size(self, num_tokens: int) -> int | None:
        if num_tokens < 1 or num_tokens >= len(self.padded):
            return None
        return self.padded[num_tokens]

    def dispatch(self, descriptor: BatchDescriptor) -> tuple[CUDAGraphMode, BatchDescriptor | None]:
        """Pad num_tokens to the graph size, then prefer FULL (the exact key, then relaxed
        to non-uniform), then PIECEWISE, else NONE (sizes above the largest capture size,
        and empty batches, run without a graph)."""
        padded = self.padded_size(descriptor.num_tokens)
        if padded is None:
            return CUDAGraphMode.NONE, None
        key = BatchDescriptor(padded, descriptor.uniform_decode)
        full = self.keys[CUDAGraphMode.FULL]
        if key in full:
            return CUDAGraphMode.FULL, key
        if key.non_uniform in full:
            return CUDAGraphMode.FULL, key.non_uniform
        if key.non_uniform in self.keys[CUDAGraphMode.PIECEWISE]:
            return CUDAGraphMode.PIECEWISE, key.non_uniform
        return CUDAGraphMode.NONE, None

    def all_keys(self) -> list[tuple[CUDAGraphMode, BatchDescriptor]]:
        """Every (mode, key) to capture, largest first (as vLLM captures)."""
        items = [(mode, key) for mode, keys in self.keys.items() for key in keys]
        return sorted(items, key=lambda item: (-item[1].num_tokens, item[0].value, item[1].uniform_decode))
