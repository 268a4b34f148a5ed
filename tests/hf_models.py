"""Tiny configs of the transformers architectures the HF suite runs (decoders and
encoders), each exercising what its attention passes: grouped-query heads, sliding
windows smaller than the sequences tested, Gemma 2's softcap, gpt-oss's sinks, OPT's
pre-scaled queries, Falcon's own attention module.

FAST is what `make test` runs (with Llama and BERT, served by test_hf's own tests); the
rest run under `--run-slow` (the torch matrix)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import transformers as t

VOCAB = 128
COMMON = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "max_position_embeddings": 64}
LLAMA_LIKE = {**COMMON, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}


@dataclass(frozen=True)
class Architecture:
    name: str
    config: Any  # a no-argument factory of the transformers config
    model_class: str = "AutoModelForCausalLM"

    @property
    def output(self) -> str:
        return "logits" if self.model_class == "AutoModelForCausalLM" else "last_hidden_state"


def _gemma(config_class: Any, **extra: Any) -> Any:
    return lambda: config_class(**LLAMA_LIKE, head_dim=8, query_pre_attn_scalar=8, **extra)


OPT = {**COMMON, "ffn_dim": 64, "num_attention_heads": 4, "word_embed_proj_dim": 32}
NEOX = {**COMMON, "intermediate_size": 64, "num_attention_heads": 4}
ENCODER = {**COMMON, "intermediate_size": 64, "num_attention_heads": 4}
FALCON = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
GPT_OSS = {
    **LLAMA_LIKE,
    "head_dim": 8,
    "num_local_experts": 2,
    "num_experts_per_tok": 1,
    "sliding_window": 4,
    "layer_types": ["sliding_attention", "full_attention"],
}
QWEN2 = {**LLAMA_LIKE, "use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}

ARCHITECTURES = [
    Architecture("gpt2", lambda: t.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)),
    Architecture("llama", lambda: t.LlamaConfig(**LLAMA_LIKE)),
    Architecture("mistral", lambda: t.MistralConfig(**LLAMA_LIKE, sliding_window=4)),
    Architecture("qwen2", lambda: t.Qwen2Config(**QWEN2)),
    Architecture("qwen3", lambda: t.Qwen3Config(**LLAMA_LIKE, head_dim=8)),
    Architecture("gemma", _gemma(t.GemmaConfig)),
    # weights large enough, and a cap small enough, that the softcap changes the logits
    # (by 1.6 here; with Gemma 2's own cap of 50 on a tiny random model, by 1e-5)
    Architecture("gemma2", _gemma(t.Gemma2Config, sliding_window=4, attn_logit_softcapping=5.0, initializer_range=0.3)),
    Architecture("gemma3", _gemma(t.Gemma3TextConfig, sliding_window=4)),
    Architecture("phi3", lambda: t.Phi3Config(**LLAMA_LIKE, sliding_window=4, pad_token_id=0)),
    Architecture("opt", lambda: t.OPTConfig(**OPT)),
    Architecture("gpt_neox", lambda: t.GPTNeoXConfig(**NEOX)),
    Architecture("stablelm", lambda: t.StableLmConfig(**LLAMA_LIKE)),
    Architecture("starcoder2", lambda: t.Starcoder2Config(**LLAMA_LIKE, sliding_window=4)),
    Architecture("olmo2", lambda: t.Olmo2Config(**LLAMA_LIKE)),
    Architecture("bert", lambda: t.BertConfig(**ENCODER), "AutoModel"),
    Architecture("roberta", lambda: t.RobertaConfig(**ENCODER, pad_token_id=1), "AutoModel"),
    Architecture("falcon", lambda: t.FalconConfig(**FALCON)),
    Architecture("gpt_oss", lambda: t.GptOssConfig(**GPT_OSS)),
]
# Llama and BERT are served with both masks in test_hf's own checkpoints too.
FAST = ("gemma2", "falcon")
BY_NAME = {a.name: a for a in ARCHITECTURES}
