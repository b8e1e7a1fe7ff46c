"""The train section as typed values: `TrainArgs.of(cfg.train)`, built once its values are checked (plan.py).

conf/train/cpu.yaml declares every key and its default, once (gpu.yaml and the sweeps override some); a key it
does not declare is refused before this (plan.check_known_keys). This module declares each key's type and
meaning, and `of` is the one place a value is converted: a whole number where an int is declared (never a
bool, never 2.5), any number where a real is, true or false for a switch, else a ConfigError naming the key.
Code reads `plan.train.<key>`, never `cfg.train.get(key, default)`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass

from omegaconf import OmegaConf

from .errors import ConfigError


@dataclass(frozen=True)
class OptimizerArgs:
    betas: tuple[float, float]
    """AdamW's (beta1, beta2)."""
    eps: float
    weight_decay: float


@dataclass(frozen=True)
class TrainArgs:
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

    @classmethod
    def of(cls, node) -> "TrainArgs":
        """The typed values of a composed `train` section (every key declared: conf/train/cpu.yaml)."""
        plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        return _typed("train", plain, cls)


def _typed(name: str, value, kind):
    """`value` as `kind` (a dataclass, int, float, bool, str, a tuple of them, or X | None)."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{name}={value!r} must be a mapping of {', '.join(f.name for f in dataclasses.fields(kind))}")
        hints = typing.get_type_hints(kind)
        missing = [f.name for f in dataclasses.fields(kind) if f.name not in value]
        if missing:
            raise ConfigError(f"{name} has no {', '.join(missing)}: the config files declare every key "
                              f"(conf/train/cpu.yaml); was one removed with ~{name}.{missing[0]}?")
        return kind(**{f.name: _typed(f"{name}.{f.name}", value[f.name], hints[f.name])
                       for f in dataclasses.fields(kind)})
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(name, value, inner)
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{name}={value!r} must be a list of {len(args)} values")
        return tuple(_typed(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ConfigError(f"{name}={value!r} must be a whole number")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}={value!r} must be a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} must be a string")
        return value
    raise TypeError(f"{name}: no conversion to {kind!r}")
