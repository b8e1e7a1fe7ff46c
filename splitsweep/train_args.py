"""The train section as typed values: `TrainArgs.of(cfg.train)`, built once its values are checked (plan.py).

conf/train/cpu.yaml declares every key and its default, once (gpu.yaml and the sweeps override some); a key it
does not declare is refused before this (plan.check_known_keys). This module declares each key's type and
meaning; typed_config.typed converts the values, once. Code reads `plan.train.<key>`, never
`cfg.train.get(key, default)`.
"""
from __future__ import annotations

from dataclasses import dataclass

from .typed_config import Section


@dataclass(frozen=True)
class OptimizerArgs:
    betas: tuple[float, float]
    """AdamW's (beta1, beta2)."""
    eps: float
    weight_decay: float


@dataclass(frozen=True)
class TrainArgs(Section):
    section = "train"
    global_batch: int
    """Sequences per optimizer step, over all ranks: D and D' are whole numbers of global_batch x seq_len."""
    micro_batch: int | None
    """Sequences per rank per forward pass (gradient accumulation); None: the whole local batch."""
    seq_len: int
    lr: float
    """Peak learning rate (a sweep may make it a function of N: ${ss_by_n:...})."""
    schedule: str
    """wsd (warmup, constant seed, decay in the expert phase) or cosine (independent runs)."""
    warmup_steps: int
    min_lr_factor: float
    decay_fraction: float
    """wsd: share of the expert phase spent decaying."""
    pretrain_only_cooldown: float
    """wsd, D' = 0: the run branches this share of D early and decays on the mixture (a finished run)."""
    eval_scope: str
    """all: every run on every domain; own: an expert on its own domain only."""
    grad_clip: float
    optimizer: OptimizerArgs
    checkpoint_every_steps: int
    eval_batch: int
    progress_every_s: float
    lock_stale_s: float
    """A lock whose holder stopped heartbeating this long ago is broken."""
    device: str
    threads: int | None
    """Torch threads per rank; None: the CPUs the job was given."""
    precision: str
    compile: bool
    activation_checkpointing: str
    sync_every_steps: int
    """The host reads the loss and the stop flag this often (and before every checkpoint)."""
    handle_signals: bool
    """SIGUSR2/SIGTERM: checkpoint, then stop."""
