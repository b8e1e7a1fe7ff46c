"""From a job's config to a checked plan: token counts in whole steps, and the identities of its seed
and of the run. Every check here runs before any compute is spent."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .data import MIXTURE, TokenSource, build_source
from .errors import ConfigError
from .model import ModelSpec
from .schedule import Schedule
from .store import signature
from .train import BatchSpec

# Bump when a change to training semantics makes stored seeds and runs invalid.
STORE_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _whole_steps(name: str, tokens, tokens_per_step: int) -> int:
    if tokens is None or isinstance(tokens, bool) or float(tokens) != int(float(tokens)):
        raise ConfigError(f"{name}={tokens!r} must be a whole number of tokens")
    tokens = int(float(tokens))
    if tokens < 0:
        raise ConfigError(f"{name}={tokens} is negative")
    if tokens % tokens_per_step:
        lower = tokens // tokens_per_step * tokens_per_step
        raise ConfigError(
            f"{name}={tokens:,} is not a whole number of batches of {tokens_per_step:,} tokens "
            f"(global_batch x seq_len); nearest valid values: {lower:,} or {lower + tokens_per_step:,}")
    return tokens // tokens_per_step


@dataclass
class Plan:
    cfg: DictConfig
    spec: ModelSpec
    source: TokenSource
    schedule: Schedule
    batch: BatchSpec
    seed: int
    seed_steps: int
    expert_steps: int
    expert_domain: str
    trajectory_id: str
    run_id: str
    config_hash: str
    seed_offsets: np.ndarray
    epochs_max: float

    @property
    def pretrain_tokens(self) -> int:
        return self.seed_steps * self.batch.tokens_per_step

    @property
    def special_tokens(self) -> int:
        return self.expert_steps * self.batch.tokens_per_step

    @property
    def n_params(self) -> int:
        return self.spec.non_embedding_params()

    @property
    def n_params_total(self) -> int:
        return self.spec.total_params(self.source.vocab_size)

    def mixture_weight(self, domain: str) -> float:
        if domain == MIXTURE:
            return 1.0
        counts = self.source.mixture.counts
        return float(counts[self.source.domain_index(domain)] / counts.sum())


def split_tokens(split, tokens_per_step: int) -> tuple[int, int]:
    """(D, D') in steps: from split.pretrain_fraction of split.budget_tokens when a fraction is set,
    else from split.pretrain_tokens and split.special_tokens (budget_tokens only pairs with a fraction)."""
    fraction = split.get("pretrain_fraction")
    if fraction is not None:
        if split.get("pretrain_tokens") is not None or split.get("special_tokens") is not None:
            raise ConfigError("give either split.pretrain_fraction (with split.budget_tokens), or "
                              "split.pretrain_tokens and split.special_tokens, not both")
        if split.get("budget_tokens") is None:
            raise ConfigError("split.pretrain_fraction needs split.budget_tokens (T = D + D')")
        if isinstance(fraction, str) or not 0.0 <= float(fraction) <= 1.0:
            raise ConfigError(f"split.pretrain_fraction={fraction} is outside [0, 1]")
        budget_steps = _whole_steps("split.budget_tokens", split.budget_tokens, tokens_per_step)
        seed_steps = float(fraction) * budget_steps
        if abs(seed_steps - round(seed_steps)) > 1e-6:
            low = int(seed_steps)
            raise ConfigError(
                f"split.pretrain_fraction={fraction} of split.budget_tokens={int(split.budget_tokens):,} is "
                f"{seed_steps:.2f} batches of {tokens_per_step:,} tokens, not a whole number; nearest valid "
                f"fractions: {low / budget_steps:g} or {(low + 1) / budget_steps:g}")
        seed_steps = int(round(seed_steps))
        return seed_steps, budget_steps - seed_steps
    if split.get("pretrain_tokens") is None or split.get("special_tokens") is None:
        raise ConfigError("set split.pretrain_tokens and split.special_tokens "
                          "(or split.budget_tokens and split.pretrain_fraction)")
    return (_whole_steps("split.pretrain_tokens", split.pretrain_tokens, tokens_per_step),
            _whole_steps("split.special_tokens", split.special_tokens, tokens_per_step))


def make_plan(cfg: DictConfig) -> Plan:
    t = cfg.train
    spec = ModelSpec.from_config(cfg.model)
    micro = t.get("micro_batch")
    batch = BatchSpec(int(t.global_batch), int(micro) if micro else None, int(t.seq_len))
    if batch.global_batch <= 0 or batch.seq_len <= 0 or (batch.micro_batch or 1) <= 0:
        raise ConfigError(f"train.global_batch, train.micro_batch and train.seq_len must be positive, got "
                          f"{batch.global_batch}, {batch.micro_batch}, {batch.seq_len}")
    schedule = Schedule(str(t.schedule), float(t.lr), int(t.warmup_steps), float(t.min_lr_factor),
                        float(t.get("decay_fraction", 1.0)))
    seed = int(cfg.seed)
    source = build_source(cfg.data, seq_len=batch.seq_len, seed=seed)
    expert_domain = str(cfg.split.expert_domain)
    if expert_domain != MIXTURE and expert_domain not in source.domains:
        raise ConfigError(f"split.expert_domain={expert_domain!r} is unknown; this data set's domains are "
                          f"{source.domains}, or '{MIXTURE}' for the no-split baseline")
    seed_steps, expert_steps = split_tokens(cfg.split, batch.tokens_per_step)
    if seed_steps + expert_steps == 0:
        raise ConfigError("split: D + D' is 0 tokens; nothing to train")

    # Repetition: passes over each domain's training text along this path.
    seed_offsets = source.mixture.consumed(seed_steps * batch.global_batch)
    read = seed_offsets.astype(float).copy()
    if expert_domain == MIXTURE:
        read = source.mixture.consumed((seed_steps + expert_steps) * batch.global_batch).astype(float)
    else:
        read[source.domain_index(expert_domain)] += expert_steps * batch.global_batch
    sizes = [source.domain_train_sequences(k) for k in range(len(source.domains))]
    epochs = [r / s for r, s in zip(read, sizes) if s]
    epochs_max = float(max(epochs)) if epochs else 0.0
    if epochs_max > 1.0 and not bool(cfg.data.get("allow_repetition", False)):
        worst = int(np.argmax([r / s if s else 0 for r, s in zip(read, sizes)]))
        raise ConfigError(
            f"domain {source.domains[worst]!r} has {sizes[worst]:,} training sequences but this run reads "
            f"{int(read[worst]):,} of them ({epochs_max:.2f} epochs); lower split.special_tokens or set "
            f"data.allow_repetition=true")

    optimizer = {k: (list(v) if OmegaConf.is_list(v) else v) for k, v in
                 OmegaConf.to_container(t.optimizer, resolve=True).items()}
    trajectory = {
        "version": STORE_VERSION, "model": spec.__dict__, "vocab_size": source.vocab_size,
        "data": source.identity(), "seq_len": batch.seq_len, "global_batch": batch.global_batch,
        "optimizer": optimizer, "grad_clip": float(t.grad_clip), "seed": seed,
        "schedule": {"name": schedule.name, "peak_lr": schedule.peak_lr, "warmup_steps": schedule.warmup_steps},
        "mixture_counts": source.mixture.counts.tolist(),
    }
    if schedule.seed_depends_on_length:
        trajectory["schedule"].update(min_lr_factor=schedule.min_lr_factor, seed_steps=seed_steps)
    trajectory_id = signature(trajectory)
    run = {"trajectory": trajectory_id, "seed_steps": seed_steps, "expert_steps": expert_steps,
           "expert_domain": expert_domain, "min_lr_factor": schedule.min_lr_factor,
           "decay_fraction": schedule.decay_fraction, "version": STORE_VERSION}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for volatile in ("paths", "logger", "report"):
        resolved.pop(volatile, None)
    return Plan(cfg, spec, source, schedule, batch, seed, seed_steps, expert_steps, expert_domain,
                trajectory_id, signature(run), signature(resolved), seed_offsets, epochs_max)
