"""An entry built under one torch and loaded under another is a clean miss that names
torch.version, checked across two real torch installs: `make test-matrix` runs this with
AOTCACHE_BUILD_PYTHON set to the interpreter of another torch version's venv."""

from __future__ import annotations

import json
import os

import pytest
from _support import TINY_CONFIG, last_json, run_argv, run_python

pytestmark = pytest.mark.cross_torch

BUILD = """
import json, sys, torch, aotcache
from examples import tiny_llama
result = aotcache.precompile(tiny_llama.spec, json.loads(sys.argv[1]), cache_dir=sys.argv[2])
print(json.dumps({"entry": result.entry_id, "torch": torch.__version__}))
"""

LOAD = """
import json, torch, aotcache
from examples import tiny_llama
try:
    aotcache.load(tiny_llama.build(2), {config!r}, cache_dir={cache!r}, strict=True)
    print(json.dumps({{"loaded": True}}))
except aotcache.CacheMiss as exc:
    print(json.dumps({{"loaded": False, "error": type(exc).__name__, "message": exc.one_line(),
                      "differences": [d.to_json() for d in exc.differences], "torch": torch.__version__}}))
"""


def test_an_entry_built_under_another_torch_is_a_miss_naming_torch_version(tmp_path) -> None:
    build_python = os.environ.get("AOTCACHE_BUILD_PYTHON")
    if not build_python:
        pytest.skip("needs AOTCACHE_BUILD_PYTHON, another torch version's interpreter (make test-matrix sets it)")
    cache = tmp_path / "cache"
    built = run_argv([build_python, "-c", BUILD, json.dumps(TINY_CONFIG), str(cache)], timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    build = last_json(built.stdout)
    done = run_python(LOAD.format(config=TINY_CONFIG, cache=str(cache)))
    assert done.returncode == 0, done.stderr[-3000:]
    result = last_json(done.stdout)
    assert result["torch"] != build["torch"], "both interpreters run the same torch"
    assert result["loaded"] is False and result["error"] == "IncompatibleEnvironment", result
    differences = {d["name"]: (d["old"], d["new"]) for d in result["differences"]}
    assert differences["torch.version"] == (build["torch"], result["torch"]), differences
    assert "torch.version" in result["message"]
