"""A small Llama-style decoder: embedding, RMSNorm, attention as an opaque custom op
(the splitting op), SwiGLU MLP, LM head. The token dimension is dynamic.

    aotcache precompile examples/tiny_llama.py:spec           # 2 layers
    aotcache precompile examples/tiny_llama.py:spec_8_layers  # same units, 8 layers
"""

from __future__ import annotations

import torch
from torch import nn

from aotcache.target import ModelSpec

VOCAB = 128
HIDDEN = 32
HEADS = 4


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention over the token dimension; q, k, v are [tokens, heads, head_dim]."""
    out = nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True
    )
    return out.transpose(0, 1).contiguous()


# Registered through torch.library.Library, as compiled attention kernels are: an opaque
# op that Dynamo records as one node and the graph is split at.
_lib = torch.library.Library("tinyllama", "DEF")
_lib.define("attention(Tensor q, Tensor k, Tensor v) -> Tensor")
_lib.impl("attention", attention, "CompositeExplicitAutograd")


@torch.library.register_fake("tinyllama::attention")
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(q)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class DecoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.hidden, self.heads = hidden, heads
        self.input_norm = RMSNorm(hidden, norm_eps)
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)
        self.post_norm = RMSNorm(hidden, norm_eps)
        self.gate_up = nn.Linear(hidden, 4 * hidden, bias=False)
        self.down = nn.Linear(2 * hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.shape[0]
        q, k, v = self.qkv(self.input_norm(x)).split(self.hidden, dim=-1)
        shape = (tokens, self.heads, self.hidden // self.heads)
        a = torch.ops.tinyllama.attention(q.reshape(shape), k.reshape(shape), v.reshape(shape))
        x = x + self.out(a.reshape(tokens, self.hidden))
        gate, up = self.gate_up(self.post_norm(x)).chunk(2, dim=-1)
        return x + self.down(nn.functional.silu(gate) * up)


class TinyLlama(nn.Module):
    def __init__(
        self, layers: int = 2, vocab: int = VOCAB, hidden: int = HIDDEN, heads: int = HEADS, norm_eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(DecoderLayer(hidden, heads, norm_eps) for _ in range(layers))
        self.norm = RMSNorm(hidden, norm_eps)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def example_inputs(num_tokens: int) -> tuple[torch.Tensor]:
    generator = torch.Generator().manual_seed(num_tokens)
    return (torch.randint(0, VOCAB, (num_tokens,), generator=generator),)


CONFIG = {
    "compile_sizes": [1, 2, 4, 8],
    "compile_ranges_split_points": [16],
    "max_num_batched_tokens": 64,
    "splitting_ops": ["tinyllama::attention"],
}


def build(layers: int = 2, seed: int = 0, norm_eps: float = 1e-6) -> TinyLlama:
    """`norm_eps`, a plain setting the trace bakes into the graph: an entry built with one
    value never serves a model with another (the load is a miss naming it)."""
    torch.manual_seed(seed)
    return TinyLlama(layers=layers, norm_eps=norm_eps).eval()


spec = ModelSpec(
    model=lambda: build(2), example_inputs=example_inputs, config=CONFIG, dynamic_arg_dims={"input_ids": 0}
)
spec_8_layers = ModelSpec(
    model=lambda: build(8), example_inputs=example_inputs, config=CONFIG, dynamic_arg_dims={"input_ids": 0}
)

# The same model on a GPU: pieces compile with Inductor (Triton) and are stored in the
# inductor format (`aotcache precompile examples/tiny_llama.py:spec_cuda`).
spec_cuda = ModelSpec(
    model=lambda: build(2).cuda(), example_inputs=example_inputs, config=CONFIG, dynamic_arg_dims={"input_ids": 0}
)
