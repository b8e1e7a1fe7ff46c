"""Learning-rate schedules along one expert path: seed steps [0, S) then expert steps [S, S + E).

Both are pure functions of the step, so nothing about the schedule needs checkpointing.

- `wsd` (warmup-stable-decay, the default): warmup, then constant through the whole seed; the decay to
  `min_lr_factor` happens in the expert phase over its last `decay_fraction` of steps. The seed never
  depends on its length, so seeds for every D are checkpoints of one trajectory per model.
- `cosine` (independent cosine): each seed has its own warmup + cosine decay over its D tokens; the expert
  re-warms for `warmup_steps` (at most its length) and decays by cosine over D'. A seed is then tied to
  its D, so no trajectory is shared between seeds of different D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("wsd", "cosine")


@dataclass(frozen=True)
class Schedule:
    name: str
    peak_lr: float
    warmup_steps: int
    min_lr_factor: float
    decay_fraction: float = 1.0

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ValueError(f"train.schedule={self.name!r} is unknown; choose one of {SCHEDULES}")

    @property
    def seed_depends_on_length(self) -> bool:
        return self.name == "cosine"

    def lr(self, step: int, seed_steps: int, expert_steps: int) -> float:
        if self.name == "wsd":
            return self.peak_lr * self._wsd(step, seed_steps, expert_steps)
        if step < seed_steps:
            return self.peak_lr * self._warm_cosine(step, seed_steps)
        return self.peak_lr * self._warm_cosine(step - seed_steps, expert_steps)

    def _warmup(self, step: int) -> float:
        return min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0

    def _wsd(self, step: int, seed_steps: int, expert_steps: int) -> float:
        factor = self._warmup(step)
        decay_steps = math.ceil(self.decay_fraction * expert_steps)
        decay_start = seed_steps + expert_steps - decay_steps
        if decay_steps > 0 and step >= decay_start:
            progress = (step - decay_start + 1) / decay_steps
            factor = min(factor, 1.0 - (1.0 - self.min_lr_factor) * progress)
        return factor

    def _warm_cosine(self, step: int, length: int) -> float:
        warmup = min(self.warmup_steps, max(length - 1, 0))
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup + 1) / max(length - warmup, 1)
        return self.min_lr_factor + (1 - self.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
