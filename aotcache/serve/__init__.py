"""Serving: from a live model and a config to a callable that runs a verified entry.

Owns finding and loading an entry (`loader`), binding call arguments and the model's
tensors to graph inputs (`inputs`, `binding`), picking a compile unit by size
(`dispatch`), turning the entry's graphs into callables (`runtime`), CUDA graphs
(`cudagraph`) and a model served as parts, whose parts load their own entries
(`parts`). Depends on `key`, `store`, `formats` and `fleet`; never on the compile side
(a lint rule enforces it).
"""

# Modules whose presence in sys.modules means the compile side was imported: a serving
# process that loads entries must never import them (tests, the demo and the benchmark
# check sys.modules against this list).
COMPILE_SIDE_MODULES = ("torch._inductor", "torch._dynamo", "aotcache.backend")
