"""What a transformers model's entry is checked on, beyond Dynamo's guards (guards.py).

* Every field of the model's config (config.json's) is a check too, whether forward
  reads it or not: the conservative fallback, so that a fine-tuned checkpoint whose
  config differs from the base model's in one number is never served the base model's
  entry, even where a value only shaped the model at construction. Left out: the fields
  that name the checkpoint and the library that saved it.
* How aotcache.hf routes attention to aotcache::attention is not the model's setting:
  the config naming the "aotcache" implementation, transformers' registrations under
  that name, Falcon's attention modules' forward. An entry computes attention with the
  op whatever implementation the served model's config names (the op computes what sdpa
  and transformers' eager attention compute), so a replica may load it with
  transformers' defaults, without calling split_attention.
"""

from __future__ import annotations

import logging
from typing import Any

from aotcache.store.plain import NotPlain, encode, qualified

log = logging.getLogger("aotcache.capture")

COVERED_ROUTING = "the attention implementation aotcache.hf routes to aotcache::attention (the entry's op computes it)"

# Fields of a transformers config that name a checkpoint or the library that saved it.
CONFIG_METADATA = frozenset({"_name_or_path", "name_or_path", "transformers_version", "_commit_hash"})

_CONFIG_CLASSES = {  # transformers 5 renamed it; 4 has the first spelling
    "transformers.configuration_utils:PretrainedConfig",
    "transformers.configuration_utils:PreTrainedConfig",
}
_ATTENTION_IMPLEMENTATION = ("._attn_implementation", "._attn_implementation_internal")
_MAX_DEPTH = 4  # sub-configs (a multimodal model's text_config) are read this deep


def is_transformers_config(value: Any) -> bool:
    return any(qualified(cls) in _CONFIG_CLASSES for cls in type(value).__mro__)


def add_config_fields(recorder: Any, model: Any) -> None:
    """An `equals` check on `recorder` (a guards.StateRecorder) for every plain field of
    the model's transformers config, sub-configs included."""
    config = getattr(model, "config", None)
    if is_transformers_config(config):
        _fields(recorder, recorder.node(recorder.node(-1, "model"), "attr", "config"), config, 0)


def _fields(recorder: Any, node: int, config: Any, depth: int) -> None:
    stored = vars(config)  # as the `fields` check reads them (store/traced_state.py)
    for name in sorted(config.to_dict()):
        if name in CONFIG_METADATA or not (isinstance(name, str) and name.isidentifier()):
            continue
        value = stored[name] if name in stored else getattr(config, name, None)
        if is_transformers_config(value) and depth < _MAX_DEPTH:
            _fields(recorder, recorder.node(node, "attr", name), value, depth + 1)
            continue
        try:
            recorder.check(node, "equals", name, encode(value))
        except NotPlain:
            log.debug("config field %s is not plain data; its value is not recorded", name)


def is_routing(path: str, kind: str, arg: Any, expected: Any) -> bool:
    """A check of aotcache.hf's attention routing, by the path it reads: the config
    naming the "aotcache" implementation, or transformers' registrations under it."""
    from aotcache.hf import ATTENTION_NAME

    if path.endswith(_ATTENTION_IMPLEMENTATION) and expected == ATTENTION_NAME:
        return True
    registered = f"._global_mapping.{ATTENTION_NAME}"
    return registered in f"{path}." or (path.endswith("._global_mapping") and ATTENTION_NAME in (arg, expected))
