"""Hugging Face transformers models, first class.

* `hf:PATH` TARGETs (`aotcache precompile hf:./my-model`): the model class comes from
  PATH's config.json (AutoModelForCausalLM unless `--hf-class` says otherwise, e.g.
  AutoModel for an encoder). The model is built from the config alone, with random
  weights and without reading any: the entry binds weights by name, shape and dtype, and
  a serving process loads its real weights with `from_pretrained` as usual. Nothing
  touches the network. It is split at attention (below); `default_config(PATH)` gives
  the config fields to serve it with.
* The calling convention users already have: `runner(input_ids=..., attention_mask=...)`
  with `[1, seq]` tensors, the sequence dimension dynamic, `use_cache=False` set for
  them, and the model's own output type back (`CausalLMOutputWithPast` with `.logits`,
  `BaseModelOutput...` with `.last_hidden_state`).
* `split_attention(model_or_config)`: one line that makes attention an opaque op
  (`aotcache::attention`, registered with torch.library.Library and a fake
  implementation), so that aotcache splits the graph at it and identical decoder layers
  compile once, as vLLM does. Precompile with `splitting_ops=["aotcache::attention"]`.
  A serving process needs nothing of this: the stored graphs call the op, which
  `import aotcache` registers.

transformers is an optional extra: `pip install 'aotcache[hf]'`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from aotcache.errors import TargetError
from aotcache.target import ModelSpec

PREFIX = "hf:"
DEFAULT_CLASS = "AutoModelForCausalLM"
ATTENTION_OP = "aotcache::attention"
ATTENTION_NAME = "aotcache"  # the attn_implementation name registered with transformers
DEFAULT_MAX_TOKENS = 8192

# -- attention as an opaque op ---------------------------------------------------------------

_lib = torch.library.Library("aotcache", "DEF")
_lib.define("attention(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale, bool is_causal) -> Tensor")


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float, is_causal: bool
) -> torch.Tensor:
    """q [batch, heads, seq, dim], k and v [batch, kv_heads, kv_seq, dim] (grouped-query
    heads repeated here) -> [batch, seq, heads, dim], contiguous (what transformers'
    attention functions return)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, is_causal=is_causal)
    return out.transpose(1, 2).contiguous()


def _attention_fake(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float, is_causal: bool
) -> torch.Tensor:
    batch, heads, seq, _ = q.shape
    return q.new_empty((batch, seq, heads, v.shape[-1]))


_lib.impl("attention", _attention, "CompositeExplicitAutograd")
_lib._register_fake("attention", _attention_fake)


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function (registered as attn_implementation "aotcache")
    that calls the opaque op, with sdpa's rules for causality."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(query.shape[2] > 1 and attention_mask is None and causal)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    mask = attention_mask
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros_like(mask, dtype=query.dtype).masked_fill(~mask, torch.finfo(query.dtype).min)
    return torch.ops.aotcache.attention(query, key, value, mask, float(scale), causal), None


def split_attention(model_or_config: Any) -> Any:
    """Make a transformers model's attention the opaque op aotcache splits at: registers
    the "aotcache" attention implementation and sets it on the model (or config).
    Returns its argument. Precompile with splitting_ops=["aotcache::attention"]."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    if hasattr(model_or_config, "set_attn_implementation"):
        model_or_config.set_attn_implementation(ATTENTION_NAME)
    else:
        model_or_config._attn_implementation = ATTENTION_NAME
    return model_or_config


# -- models from a checkpoint directory ---------------------------------------------------------


def parse_target(target: str) -> tuple[Path, str]:
    """`hf:PATH` or `hf:PATH@Class` -> (PATH, class name)."""
    rest = target[len(PREFIX) :]
    path, _, hf_class = rest.rpartition("@") if "@" in rest else (rest, "", "")
    return Path(path), hf_class or DEFAULT_CLASS


def default_config(config: Any, **overrides: Any) -> dict[str, Any]:
    """The CompilationConfig fields an `hf:` TARGET is precompiled with (pass the same to
    `aotcache.load` when serving): split at attention, and sizes never beyond the
    positions the model has. `config` is a transformers config, model or directory."""
    if isinstance(config, (str, os.PathLike)):
        config = _read_config(Path(config))
    config = getattr(config, "config", config)
    positions = getattr(config, "max_position_embeddings", None) or DEFAULT_MAX_TOKENS
    fields = {"max_num_batched_tokens": min(DEFAULT_MAX_TOKENS, int(positions)), "splitting_ops": [ATTENTION_OP]}
    return {**fields, **overrides}


def spec(target: str) -> ModelSpec:
    """The ModelSpec of an `hf:PATH[@Class]` TARGET, built offline from config.json."""
    path, class_name = parse_target(target)
    if not (path / "config.json").is_file():
        raise TargetError(
            f"{target}: {path} has no config.json",
            hint="give a directory in the Hugging Face layout (save_pretrained writes one)",
        )
    hf_config = _read_config(path)
    model_class = _model_class(class_name)

    def build() -> torch.nn.Module:
        model = model_class.from_config(hf_config)
        return split_attention(model).eval()

    return ModelSpec(
        model=build,
        example_inputs=example_inputs_for(hf_config),
        config=default_config(hf_config),
        dynamic_arg_dims={"input_ids": 1, "attention_mask": 1},
        name=target,
    )


def example_inputs_for(config: Any) -> Any:
    vocab = int(getattr(config, "vocab_size", 2) or 2)

    def example_inputs(num_tokens: int) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(num_tokens)
        ids = torch.randint(0, vocab, (1, num_tokens), generator=generator)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False}

    return example_inputs


def _read_config(path: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # offline by construction
    try:
        from transformers import AutoConfig
    except ImportError:
        raise TargetError("hf: targets need transformers", hint="pip install 'aotcache[hf]'") from None
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise TargetError(f"cannot read the transformers config in {path}: {exc}") from None


def _model_class(name: str) -> Any:
    import transformers

    model_class = getattr(transformers, name, None)
    if model_class is None or not hasattr(model_class, "from_config"):
        raise TargetError(f"{name!r} is not a transformers model class", hint="e.g. AutoModelForCausalLM, AutoModel")
    return model_class
