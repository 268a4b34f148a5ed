"""aotcache's own ops: `aotcache::attention`, the opaque attention op `hf:` models are
split at (torch.library.Library with a fake kernel, so graphs that call it trace, store
and load like any other op). Registered at import, without importing transformers: a
serving process imports this module (serve/runtime.py) before it loads any graph, and
aotcache.hf routes transformers' attention to the op."""

from __future__ import annotations

import torch

ATTENTION_OP = "aotcache::attention"

_lib = torch.library.Library("aotcache", "DEF")
# softcap and sinks have defaults, so that graphs stored before they existed still call it.
_lib.define(
    "attention(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale, bool is_causal, float softcap=0.0, "
    "Tensor? sinks=None) -> Tensor"
)


def _attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    is_causal: bool,
    softcap: float = 0.0,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [batch, heads, seq, dim], k and v [batch, kv_heads, kv_seq, dim] (grouped-query
    heads repeated here) -> [batch, seq, heads, dim], contiguous (what transformers'
    attention functions return). A boolean mask keeps what is True; a query row with
    nothing to attend to gives zeros, as sdpa with a boolean mask does. `softcap` (> 0)
    caps the scaled scores, `tanh(s / softcap) * softcap`, before the mask (Gemma 2);
    `sinks` [heads] adds one logit per head to the softmax's denominator (gpt-oss)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    if softcap == 0.0 and sinks is None:
        sdpa = torch.nn.functional.scaled_dot_product_attention
        out = sdpa(q, k, v, attn_mask=mask, scale=scale, is_causal=is_causal)
    else:
        out = _explicit_attention(q, k, v, mask, scale, is_causal, softcap, sinks)
    return out.transpose(1, 2).contiguous()


def _explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    is_causal: bool,
    softcap: float,
    sinks: torch.Tensor | None,
) -> torch.Tensor:
    """Attention as transformers' eager functions compute it for softcap and sinks (the
    softmax in float32), with sdpa's rule for rows that attend to nothing (zeros)."""
    scores = (q @ k.transpose(-1, -2)).float() * scale
    if softcap > 0.0:
        scores = torch.tanh(scores / softcap) * softcap
    allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device)
    if is_causal:
        allowed = allowed.tril()
    if mask is not None and mask.dtype == torch.bool:
        allowed = allowed & mask
    elif mask is not None:
        scores = scores + mask.float()
    scores = scores.masked_fill(~allowed, float("-inf"))
    if sinks is not None:
        sink = sinks.float().reshape(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
        weights = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    else:
        weights = torch.softmax(scores, dim=-1)
    weights = weights.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)  # nothing to attend: zeros
    return weights.to(v.dtype) @ v


def _attention_fake(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    is_causal: bool,
    softcap: float = 0.0,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    batch, heads, seq, _ = q.shape
    return q.new_empty((batch, seq, heads, v.shape[-1]))


_lib.impl("attention", _attention, "CompositeExplicitAutograd")
_lib._register_fake("attention", _attention_fake)
