"""Configuration: what to compile, for which sizes and how, and where it comes from.

`compilation` holds CompilationConfig (vLLM's semantics) and Range; `values` the checks
every field's value goes through; `sources` builds a config from a dict (vLLM's names
read too), pyproject's [tool.aotcache], a TOML file, a JSON string and overrides;
`ambient` the config in effect for @support_compile models (`with aotcache.config(...)`).
Shared by every wing; imports no torch.
"""

from .ambient import current_config, use_config
from .compilation import CompilationConfig, Range, default_capture_sizes
from .sources import from_dict, load_config, parse_json
from .values import custom_op_enabled, pass_target

__all__ = [
    "CompilationConfig",
    "Range",
    "current_config",
    "custom_op_enabled",
    "default_capture_sizes",
    "from_dict",
    "load_config",
    "parse_json",
    "pass_target",
    "use_config",
]
