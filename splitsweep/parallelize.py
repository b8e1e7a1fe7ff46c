"""How a model is laid out for training: activation checkpointing, then compile, then FSDP2 with a
mixed-precision policy (torchtitan's order, with torchtitan's own helpers).

Precision. `fp32` computes everything in fp32. `bf16` runs the matmuls in bf16 and keeps in fp32 the
master weights (and so the checkpoints), the optimizer state, the gradient reduction, and the softmax and
cross-entropy of the loss. Under several ranks this is FSDP2's `MixedPrecisionPolicy(param_dtype=bf16,
reduce_dtype=fp32)`; in one process it is `torch.autocast(bf16)` around the forward. Evaluation runs under
the same policy as training: FSDP2 fixes the parameters' compute dtype when a module is wrapped, so this
is the one way 1 and N ranks record the same loss for the same model.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .distributed import DistEnv, shard_model

PRECISIONS = ("fp32", "bf16")
ACTIVATION_CHECKPOINTING = ("none", "full", "selective")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TrainLayout:
    precision: str = "fp32"
    """fp32 | bf16: the dtype of the matmuls (weights, optimizer, reductions and the loss stay fp32)."""
    compile: bool = False
    """torch.compile each transformer block (fullgraph), as torchtitan does."""
    activation_checkpointing: str = "none"
    """none | full (recompute each block in backward) | selective (torchtitan's per-op policy: keep matmul
    and attention outputs, recompute the rest)."""

    def autocast(self, env: DistEnv):
        """The context of a forward pass: autocast to bf16 in one process (FSDP2 casts by itself)."""
        if self.precision == "fp32" or env.distributed:
            return contextlib.nullcontext()
        return torch.autocast(env.device.type, dtype=DTYPES[self.precision])


class Fp32Attention(torch.nn.Module):
    """Scaled dot-product attention computed in fp32 inside a bf16 model. On CPU (torch 2.13) the bf16 flash
    attention backward is about 5x slower than the fp32 one, which cancels what bf16 matmuls gain elsewhere
    (benchmarks/README.md); attention's own matmuls are a small share of a step. Holds no parameters, so
    state dicts and checkpoints are unchanged."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, q, k, v, **kwargs):
        with torch.autocast(q.device.type, enabled=False):
            return self.inner(q.float(), k.float(), v.float(), **kwargs).to(q.dtype)


def parallelize(model: torch.nn.Module, env: DistEnv, layout: TrainLayout) -> torch.nn.Module:
    """Apply activation checkpointing, compile and FSDP2 to a freshly built (fp32) model."""
    if layout.precision != "fp32" and env.device.type == "cpu":
        for block in model.layers.values():
            block.attention.inner_attention = Fp32Attention(block.attention.inner_attention)
    if layout.activation_checkpointing != "none":
        from torchtitan.config.job_config import ActivationCheckpoint
        from torchtitan.distributed.activation_checkpoint import apply_ac
        from torchtitan.models.llama3.infra.parallelize import _op_sac_save_list

        apply_ac(model, ActivationCheckpoint(mode=layout.activation_checkpointing, selective_ac_option="op"),
                 model_compile_enabled=layout.compile, op_sac_save_list=_op_sac_save_list)
    if layout.compile:
        from torchtitan.config.job_config import Compile
        from torchtitan.models.llama3.infra.parallelize import apply_compile

        apply_compile(model, Compile(enable=True))
    mp_policy = None
    if layout.precision != "fp32":
        from torch.distributed.fsdp import MixedPrecisionPolicy

        mp_policy = MixedPrecisionPolicy(param_dtype=DTYPES[layout.precision], reduce_dtype=torch.float32)
    return shard_model(model, env, mp_policy)


def adamw(model: torch.nn.Module, env: DistEnv, lr: float, betas, eps: float, weight_decay: float):
    """AdamW with fp32 state; the multi-tensor (foreach) kernels on CUDA, where per-parameter launches
    would dominate a small model's step."""
    extra = {"foreach": True} if env.device.type == "cuda" else {}
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=tuple(betas), eps=float(eps),
                             weight_decay=float(weight_decay), **extra)
