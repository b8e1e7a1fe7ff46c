"""Where a grid point becomes steps: the units of work, each a frozen object named by its identity.

  Trajectory   the seed models' training path: model, data, batch, optimizer, schedule, RNG seed
  SeedStep     a checkpoint of a trajectory at D tokens             store/seeds/<trajectory>/tokens_<D>
  ExpertStep   a grid point's run: from the seed at D, D' tokens on a domain, evaluated and recorded
                                                                    sweeps/<name>/runs/<run_id>, rows in results.jsonl
  DownstreamStep  lm-eval tasks on an expert's final model          rows in downstream.jsonl, keyed by eval_id

The fields that determine a step's output are declared `defining` next to them; `identity.identity` hashes
those (and a dependency as its own identity), and the output's path follows from it (layout.py). `done()` reads
the step's output, never its config: a finished step is not run again. plan.make_plan builds a grid point's
steps from its config (all checks before any compute); seed_store.py runs a seed step, job.py an expert
step (its seed first) and downstream.py its evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .identity import defining, identity
from .layout import DOWNSTREAM_FILE, StoreLayout, SweepLayout


class _Step:
    is_step: ClassVar[bool] = True  # a field holding a step enters an identity as the step's identity

    @property
    def identity(self) -> str:
        return identity(self)


@dataclass(frozen=True)
class TrajectorySchedule:
    """The learning-rate schedule as far as the seed trajectory depends on it."""
    name: str = defining()
    peak_lr: float = defining()
    warmup_steps: int = defining()
    # Only for a schedule whose seed depends on its length (cosine): then every D is its own trajectory.
    min_lr_factor: float | None = defining(omitted_at=None, default=None)
    seed_steps: int | None = defining(omitted_at=None, default=None)


@dataclass(frozen=True)
class Trajectory(_Step):
    """One seed trajectory: every checkpoint of it at any D is the same model at a different length."""
    version: int = defining(doc="STORE_VERSION: bumped when training semantics change")
    model: dict = defining(doc="the ModelSpec's fields")
    vocab_size: int = defining()
    data: dict = defining(doc="the token source's identity (the data set, its tokenizer, its split)")
    seq_len: int = defining()
    global_batch: int = defining()
    optimizer: dict = defining()
    grad_clip: float = defining()
    seed: int = defining(doc="the RNG seed of initialization and data order (not the seed model)")
    schedule: TrajectorySchedule = defining()
    mixture_counts: list = defining(doc="training sequences per domain: the mixture's weights")
    precision: str = defining(omitted_at="fp32", default="fp32")

    def output(self, store: str | Path) -> Path:
        return StoreLayout(store).trajectory(self.identity)


@dataclass(frozen=True)
class SeedStep(_Step):
    """The seed checkpoint of `trajectory` after `steps` optimizer steps (D = steps x tokens per step)."""
    trajectory: Trajectory = defining()
    steps: int = defining()

    @property
    def tokens(self) -> int:
        return self.steps * self.trajectory.seq_len * self.trajectory.global_batch

    def output(self, store: str | Path) -> Path:
        return StoreLayout(store).seed(self.trajectory.identity, self.tokens)

    def done(self, store: str | Path) -> bool:
        from . import checkpoint as ckpt  # torch: only when a checkpoint is inspected

        path = self.output(store)
        return ckpt.is_complete(path) and ckpt.is_good(path)


@dataclass(frozen=True)
class ExpertStep(_Step):
    """A grid point's run: the trajectory to `seed_steps`, then `expert_steps` on `expert_domain` (the mixture
    for the baseline; an annealed pretraining-only run decays on the mixture for its last
    `pretrain_only_cooldown_steps` of D)."""
    trajectory: Trajectory = defining()
    seed_steps: int = defining()
    expert_steps: int = defining()
    expert_domain: str = defining()
    min_lr_factor: float = defining()
    decay_fraction: float = defining()
    version: int = defining()
    pretrain_only_cooldown_steps: int = defining(omitted_at=0, default=0)

    @property
    def seed(self) -> SeedStep | None:
        """The step this one continues from (None from scratch: D = 0)."""
        return SeedStep(self.trajectory, self.seed_steps) if self.seed_steps else None

    def output(self, sweep_dir: str | Path) -> Path:
        return SweepLayout(sweep_dir).run(self.identity)

    def done(self, sweep_dir: str | Path) -> bool:
        from .records import is_recorded

        return is_recorded(sweep_dir, self.identity)


@dataclass(frozen=True)
class DownstreamStep(_Step):
    """lm-eval's tasks on one run's final model: what decides its numbers (so new tasks, another few-shot or
    another lm-eval version on a recorded sweep are a new step, and an unchanged one is not run again)."""
    run_id: str = defining(doc="the ExpertStep evaluated")
    tasks: tuple = defining(doc="sorted task names")
    num_fewshot: int | None = defining()
    limit: float | None = defining()
    seed: int = defining()
    bootstrap_iters: int = defining()
    local_datasets: object = defining()
    lm_eval: str = defining(doc="lm-eval's version")

    def done(self, sweep_dir: str | Path) -> bool:
        from .records import is_recorded

        return is_recorded(sweep_dir, self.identity, DOWNSTREAM_FILE, key="eval_id")
