"""A tiny vision-language model served as parts, as vLLM's multimodal models are: the
model class is not decorated; its language model is, and its vision encoder is too,
compiled only with compile_mm_encoder (enable_if=should_compile_mm_encoder). The
encoder's dynamic size (patches) is not the model's (tokens), and the encoder class has
config fields of its own (a split point), which its entry must be built with."""

from __future__ import annotations

import torch
from torch import nn

import aotcache

HIDDEN = 16
PATCH = 12
VOCAB = 32


ENCODER_CONFIG = {"compile_ranges_split_points": [8]}


@aotcache.support_compile(
    dynamic_arg_dims={"patches": 0}, enable_if=aotcache.should_compile_mm_encoder, config=ENCODER_CONFIG
)
class TinyVisionEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(PATCH, HIDDEN)
        self.mlp = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.nn.functional.gelu(self.proj(patches)))


@aotcache.support_compile(dynamic_arg_dims={"embeds": 0})
class TinyLanguageModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(HIDDEN, 2 * HIDDEN)
        self.head = nn.Linear(2 * HIDDEN, VOCAB)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.head(torch.nn.functional.silu(self.up(embeds)))


class TinyVLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.vision = TinyVisionEncoder()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.language = TinyLanguageModel()

    def forward(self, input_ids: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        # the image, pooled over its patches, added to every token's embedding (the glue
        # runs eagerly)
        image = self.vision(patches).mean(0)
        return self.language(self.embed(input_ids) + image)

    def example_inputs(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n tokens and an image of n // 2 + 1 patches."""
        generator = torch.Generator().manual_seed(n)
        ids = torch.randint(0, VOCAB, (n,), generator=generator)
        return ids, torch.randn(n // 2 + 1, PATCH, generator=generator)


CONFIG = {"compile_sizes": [], "max_num_batched_tokens": 16}
