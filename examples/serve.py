"""The serving side of the demo: load the precompiled tiny_llama entry (no compiler, no
Dynamo, no Inductor) and check its outputs against eager PyTorch.

    python examples/serve.py --cache-dir .aotcache/demo
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

started = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import aotcache  # noqa: E402
from aotcache.serve import COMPILE_SIDE_MODULES  # noqa: E402
from examples import tiny_llama  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    model = tiny_llama.build(layers=2)
    loaded = aotcache.load(model, tiny_llama.CONFIG, cache_dir=args.cache_dir, strict=True)
    assert loaded is not None
    first = loaded(*tiny_llama.example_inputs(5))
    ready = time.perf_counter() - started
    print(
        f"loaded entry {loaded.entry_id} and ran it: {ready:.2f} s from process start "
        f"(import torch included); output {tuple(first.shape)}"
    )
    worst = 0.0
    for size in (1, 2, 3, 4, 8, 12, 16, 17, 40, 64):
        inputs = tiny_llama.example_inputs(size)
        with torch.no_grad():
            expected = model(*inputs)
        diff = float((loaded(*inputs) - expected).abs().max())
        worst = max(worst, diff)
        unit = loaded.dispatch(size)
        print(f"  size {size:>3} -> unit [{unit.start}, {unit.end}]  max |aotcache - eager| = {diff:.2e}")
    compile_side = [m for m in sys.modules if m.startswith(COMPILE_SIDE_MODULES)]
    print(f"worst difference {worst:.2e}; compile-side modules imported: {len(compile_side)}")
    return 0 if worst <= 1e-4 and not compile_side else 1


if __name__ == "__main__":
    sys.exit(main())
