"""The model ladder: torchtitan 0.2.2 Llama configs named by non-embedding parameter count."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchtitan.models.llama3 import Transformer, TransformerModelArgs

from .typed_config import plain, typed


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    multiple_of: int
    ffn_dim_multiplier: float | None = None
    rope_theta: float = 10000.0

    @classmethod
    def from_config(cls, cfg) -> "ModelSpec":
        """The model section, typed (typed_config); n_kv_heads null: one KV head per attention head."""
        spec = plain(cfg)
        if spec.get("n_kv_heads") is None:
            spec["n_kv_heads"] = spec.get("n_heads")
        return typed("model", spec, cls)

    def model_args(self, vocab_size: int, seq_len: int) -> TransformerModelArgs:
        # max_seq_len sizes the RoPE table: torchtitan's default (131072) would dwarf a tiny model.
        return TransformerModelArgs(
            dim=self.dim,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            vocab_size=vocab_size,
            multiple_of=self.multiple_of,
            ffn_dim_multiplier=self.ffn_dim_multiplier,
            rope_theta=self.rope_theta,
            max_seq_len=seq_len,
            attn_type="sdpa",
        )

    def ffn_hidden(self) -> int:
        # Mirrors torchtitan's FeedForward sizing (SwiGLU 2/3 rule, then rounding up to multiple_of).
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def non_embedding_params(self) -> int:
        """N of the scaling law: transformer blocks plus the final norm (no embeddings, no head)."""
        head_dim = self.dim // self.n_heads
        attention = self.dim * head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        block = attention + 3 * self.dim * self.ffn_hidden() + 2 * self.dim
        return self.n_layers * block + self.dim

    def total_params(self, vocab_size: int) -> int:
        return self.non_embedding_params() + 2 * vocab_size * self.dim


def build_model(spec: ModelSpec, vocab_size: int, seq_len: int, seed: int) -> Transformer:
    """Full model, initialised identically on every rank (sharded init on CPU meshes is broken)."""
    if spec.dim % spec.n_heads:
        raise ValueError(f"model {spec.name}: dim={spec.dim} is not divisible by n_heads={spec.n_heads}")
    torch.manual_seed(seed)
    model = Transformer(spec.model_args(vocab_size, seq_len))
    with torch.no_grad():
        model.init_weights()
    counted = sum(p.numel() for n, p in model.named_parameters()
                  if not n.startswith(("tok_embeddings", "output")))
    assert counted == spec.non_embedding_params(), (counted, spec.non_embedding_params())
    return model
