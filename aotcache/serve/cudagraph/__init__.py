"""CUDA graphs, after vLLM's compilation/ package: one module per mechanism.

* `dispatcher`: which graph serves a batch (vLLM's CudagraphDispatcher; its keys are
  the only source of truth);
* `padding`: padding a batch to a capture size, and the check that padding leaves the
  real rows alone (a model that mixes tokens outside a masked splitting op is refused);
* `backends`: capturing and replaying a graph: real CUDA graphs, or EmulatedGraphs,
  the same semantics on the CPU, so that everything above the backend is tested
  without a GPU; chosen by the model's device, never by whether the host has CUDA;
* `wrapper`: CUDAGraphWrapper, one graph per batch key for one runnable;
* `runner`: GraphRunner, wiring graphs into a loaded entry: static input buffers,
  capture at start-up (largest first, one pool, one clean-up), replay.

It lives on the serving side (not in aotcache.backend) because graphs are captured
after an entry is loaded, by the loader, which must not import the compile side.
"""

from __future__ import annotations

from .backends import CUDAGraphs, EmulatedGraphs, GraphBackend, graph_backend, use_graph_backend
from .dispatcher import BatchDescriptor, CudagraphDispatcher
from .padding import PaddingError, pad_tensor, unpad_tensor
from .runner import GraphRunner, StaticInputs, dummy_arguments
from .wrapper import CUDAGraphWrapper, graph_context

__all__ = [
    "BatchDescriptor",
    "CUDAGraphWrapper",
    "CUDAGraphs",
    "CudagraphDispatcher",
    "EmulatedGraphs",
    "GraphBackend",
    "GraphRunner",
    "PaddingError",
    "StaticInputs",
    "dummy_arguments",
    "graph_backend",
    "graph_context",
    "pad_tensor",
    "unpad_tensor",
    "use_graph_backend",
]
