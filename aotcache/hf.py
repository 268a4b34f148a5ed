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
  (`aotcache::attention`, defined in aotcache.ops), so that aotcache splits the graph at
  it and identical decoder layers compile once, as vLLM does. Precompile with
  `splitting_ops=["aotcache::attention"]`. A serving process needs nothing of this
  module: the stored graphs call the op, which the serving path registers.

transformers is an optional extra: `pip install 'aotcache[hf]'`.
"""

from __future__ import annotations

import inspect
import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import aotcache.envs as envs
from aotcache.errors import TargetError
from aotcache.model_spec import ModelSpec, without_weights
from aotcache.ops import ATTENTION_OP

PREFIX = "hf:"
DEFAULT_CLASS = "AutoModelForCausalLM"
ATTENTION_NAME = "aotcache"  # the attn_implementation name registered with transformers
DEFAULT_MAX_TOKENS = 8192

_calls: list[int] = []  # one item per call of attention_forward, for check_routed


class UnsupportedAttention(TargetError):
    """A model passes its attention function something aotcache::attention would drop."""


# Keyword arguments transformers' models pass that do not change attention's result
# (position_ids reach rotary embeddings before attention; use_cache and the router flag
# are for the layers around it), and the ones allowed only with a value that changes
# nothing: anything else is refused by name, never dropped.
_NEUTRAL_KWARGS = frozenset({"position_ids", "use_cache", "output_router_logits", "cache_position"})
_EMPTY_KWARGS = frozenset(
    {
        "output_attentions",  # attention weights are not returned (None), as with sdpa
        "encoder_hidden_states",
        "position_bias",
        "cu_seq_lens_q",
        "cu_seq_lens_k",
        "max_length_q",
        "max_length_k",
        "head_mask",
    }
)


def _model_name(module: torch.nn.Module) -> str:
    model_type = getattr(getattr(module, "config", None), "model_type", None)
    return f"{model_type} ({type(module).__name__})" if model_type else type(module).__name__


def _refuse(module: torch.nn.Module, name: str, value: Any, why: str) -> UnsupportedAttention:
    shown = f"<a tensor of shape {list(value.shape)}>" if isinstance(value, torch.Tensor) else repr(value)
    return UnsupportedAttention(
        f"{_model_name(module)} passes {name}={shown} to its attention function: {why}",
        hint="precompile it whole: --no-split for an hf:PATH TARGET; or open an issue naming the model",
    )


def _empty(value: Any) -> bool:
    """None, False, 0 or an empty container: never a tensor (whose truth is its values)."""
    return value is None or (not isinstance(value, torch.Tensor) and not value)


def _check_kwargs(module: torch.nn.Module, dropout: float, kwargs: dict[str, Any]) -> None:
    if dropout:
        raise _refuse(module, "dropout", dropout, "dropout must be 0 at inference (call model.eval())")
    for name, value in kwargs.items():
        if name in _NEUTRAL_KWARGS or (name in _EMPTY_KWARGS and _empty(value)):
            continue
        why = "aotcache::attention would ignore it" if name in _EMPTY_KWARGS else "aotcache::attention does not know it"
        raise _refuse(module, name, value, why)


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    softcap: float | None = None,
    sliding_window: int | None = None,
    s_aux: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function (registered as attn_implementation "aotcache")
    that calls the opaque op with every argument that changes the result: scaling,
    causality (sdpa's rules), softcap, sinks (`s_aux`), grouped-query heads (from the
    shapes). `sliding_window` is honoured by the mask transformers builds for each
    layer (as for sdpa); anything the op would drop is an error naming the model."""
    _check_kwargs(module, dropout, kwargs)
    if not torch.compiler.is_compiling():  # counted in eager runs only: a trace would bake the count in
        _calls.append(1)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(query.shape[2] > 1 and attention_mask is None and causal)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    cap = float(softcap) if softcap else 0.0
    out = torch.ops.aotcache.attention(query, key, value, attention_mask, float(scale), causal, cap, s_aux)
    return out, None


def _falcon_forward(
    self: Any,
    hidden_states: torch.Tensor,
    alibi: torch.Tensor | None,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    layer_past: Any = None,
    use_cache: bool = False,
    output_attentions: bool = False,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """FalconAttention.forward's sdpa path (transformers 5: modeling_falcon.py), with
    attention through aotcache::attention. Falcon calls sdpa directly instead of an
    attention function, and transformers refuses to switch its implementation."""
    from transformers.models.falcon.modeling_falcon import apply_rotary_pos_emb

    qkv = self._split_heads(self.query_key_value(hidden_states))
    batch, length = qkv[0].shape[:2]
    kv_heads = self.num_heads if self.new_decoder_architecture else self.num_kv_heads
    heads = [self.num_heads, kv_heads, kv_heads]
    query, key, value = (
        t.transpose(1, 2).reshape(batch, n, length, self.head_dim) for t, n in zip(qkv, heads, strict=True)
    )
    if alibi is None:  # alibi reaches attention inside the float mask, as it does sdpa
        query, key = apply_rotary_pos_emb(query, key, *position_embeddings)  # type: ignore[misc]
    if layer_past is not None:
        key, value = layer_past.update(key, value, self.layer_idx)
    out, _ = attention_forward(self, query, key, value, attention_mask, output_attentions=output_attentions)
    return self.dense(out.reshape(batch, length, self.num_heads * self.head_dim)), None


def _route_modules_transformers_cannot(model: torch.nn.Module) -> int:
    """Patch the attention modules of architectures whose implementation transformers
    will not switch (Falcon before transformers 5.25): how many were patched."""
    try:
        from transformers.models.falcon import modeling_falcon
    except ImportError:
        return 0
    if "alibi" not in inspect.signature(modeling_falcon.FalconAttention.forward).parameters:
        return 0  # transformers >= 5.25: Falcon calls the attention interface like the others
    patched = 0
    for module in model.modules():
        if type(module) is modeling_falcon.FalconAttention:
            module.forward = types.MethodType(_falcon_forward, module)  # type: ignore[method-assign]
            patched += 1
    return patched


def _set_implementation(model_or_config: Any) -> None:
    if hasattr(model_or_config, "set_attn_implementation"):
        model_or_config.set_attn_implementation(ATTENTION_NAME)
    else:
        model_or_config._attn_implementation = ATTENTION_NAME


def split_attention(model_or_config: Any) -> Any:
    """Make a transformers model's attention the opaque op aotcache splits at: registers
    the "aotcache" attention implementation and sets it on the model (or config); the
    attention modules of architectures transformers will not switch (Falcon) are routed
    to the op directly. Returns its argument. Precompile with
    splitting_ops=["aotcache::attention"]; `check_routed(model, inputs)` proves it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    if isinstance(model_or_config, torch.nn.Module) and _route_modules_transformers_cannot(model_or_config):
        return model_or_config  # its config stays "sdpa": its masks and modules expect that
    _set_implementation(model_or_config)
    return model_or_config


def check_routed(model: torch.nn.Module, inputs: dict[str, Any]) -> None:
    """Run the model once, eagerly, and count the calls of aotcache::attention: one per
    layer at least, or a TargetError naming the architecture (never a silent single
    piece)."""
    config = getattr(model, "config", None)
    _calls.clear()
    with torch.no_grad():
        model(**inputs)
    _require_routed(config, getattr(config, "model_type", type(model).__name__), len(_calls))


def _require_routed(config: Any, kind: str, calls: int) -> None:
    """A TargetError unless the op is called once per layer at least."""
    layers = int(getattr(config, "num_hidden_layers", 1) or 1)
    if calls < layers:
        raise TargetError(
            f"{kind}: {calls} of its {layers} layers' attention goes through aotcache::attention, so the graph "
            "cannot be split at attention",
            hint="precompile it whole: --no-split for an hf:PATH TARGET",
        )


# -- models from a checkpoint directory ---------------------------------------------------------


WHOLE = "+whole"  # the TARGET suffix of --no-split: the model compiled whole, not split at attention


def parse_target(target: str) -> tuple[Path, str, bool]:
    """`hf:PATH[@Class][+whole]` -> (PATH, class name, whether to split at attention)."""
    rest = target[len(PREFIX) :]
    split = not rest.endswith(WHOLE)
    rest = rest.removesuffix(WHOLE)
    path, _, hf_class = rest.rpartition("@") if "@" in rest else (rest, "", "")
    return Path(path), hf_class or DEFAULT_CLASS, split


def default_config(config: Any, *, split: bool = True, **overrides: Any) -> dict[str, Any]:
    """The CompilationConfig fields an `hf:` TARGET is precompiled with (pass the same to
    `aotcache.load` when serving): split at attention (unless `split=False`), and sizes
    never beyond the positions the model has. `config` is a transformers config, model
    or directory."""
    if isinstance(config, (str, os.PathLike)):
        config = _read_config(Path(config))
    config = getattr(config, "config", config)
    positions = getattr(config, "max_position_embeddings", None) or DEFAULT_MAX_TOKENS
    fields = {
        "max_num_batched_tokens": min(DEFAULT_MAX_TOKENS, int(positions)),
        "splitting_ops": [ATTENTION_OP] if split else [],
    }
    return {**fields, **overrides}


def spec(target: str) -> ModelSpec:
    """The ModelSpec of an `hf:PATH[@Class][+whole]` TARGET, built offline from
    config.json; split at attention (checked: every layer's attention goes through the
    op) unless `+whole` (precompile --no-split) compiles it in one piece."""
    path, class_name, split = parse_target(target)
    if not (path / "config.json").is_file():
        raise TargetError(
            f"{target}: {path} has no config.json",
            hint="give a directory in the Hugging Face layout (save_pretrained writes one)",
        )
    hf_config = _read_config(path)
    model_class = _model_class(class_name)

    example_inputs = example_inputs_for(hf_config)

    def build() -> torch.nn.Module:
        model = model_class.from_config(hf_config).eval()
        if split:
            split_attention(model)
            check_routed(model, example_inputs(2))
        return model

    def build_without_weights() -> torch.nn.Module:
        with without_weights():
            model = model_class.from_config(hf_config).eval()
        return split_attention(model) if split else model

    return ModelSpec(
        model=build,
        example_inputs=example_inputs,
        config=default_config(hf_config, split=split),
        dynamic_arg_dims={"input_ids": 1, "attention_mask": 1},
        name=target,
        model_without_weights=build_without_weights,
        check_graph=routed_in_graph(hf_config) if split else None,
    )


def routed_in_graph(config: Any) -> Callable[[torch.fx.GraphModule], None]:
    """check_routed for a traced graph (a model built without weights cannot run): the
    graph calls aotcache::attention once per layer at least, or a TargetError."""

    def check(graph: torch.fx.GraphModule) -> None:
        op = torch.ops.aotcache.attention
        calls = sum(1 for n in graph.graph.nodes if n.op == "call_function" and n.target in (op, op.default))
        _require_routed(config, getattr(config, "model_type", "the model"), calls)

    return check


def example_inputs_for(config: Any) -> Any:
    vocab = int(getattr(config, "vocab_size", 2) or 2)

    def example_inputs(num_tokens: int) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(num_tokens)
        ids = torch.randint(0, vocab, (1, num_tokens), generator=generator)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False}

    return example_inputs


def _read_config(path: Path) -> Any:
    envs.put_default(envs.HF_HUB_OFFLINE, "1")  # offline by construction
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
