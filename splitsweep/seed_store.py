"""The seed store: trained seeds shared by every job and sweep.

`store/seeds/<trajectory_id>/tokens_<D>` are checkpoints of one trajectory (a hash of everything that
determines it, identity.py). Under the wsd schedule a job needing a larger D extends the trajectory from the
largest checkpoint below D. A lock file with a heartbeat keeps concurrent jobs (processes, or cluster tasks on
a shared filesystem) from training the same seed twice, checkpoints are published by rename, so a half-written
one is never read, and `segments.jsonl` is the audit trail of the training done.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from omegaconf import DictConfig

from . import checkpoint as ckpt
from .data import MIXTURE
from .distributed import DistEnv
from .fsio import append_jsonl
from .layout import SEED_PREFIX, StoreLayout
from .steps import SeedStep, check_planned
from .store import FileLock, LeaseLost, is_debris, write_json_atomic
from .train import TrainingPath
from .worker import Worker

PROGRESS = "progress"  # the periodic checkpoint slot of a trajectory (and of a run directory)


def trajectory_checkpoints(trajectory_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a trajectory as (step, path), the periodic progress slot included."""
    found = []
    for path in list(trajectory_dir.glob(SEED_PREFIX + "*")) + [trajectory_dir / PROGRESS]:
        if path.is_dir() and ckpt.is_complete(path):
            found.append((int(ckpt.read_meta(path)["step"]), path))
    return sorted(found)


def clear_debris(directory: Path) -> None:
    """Half-written checkpoints of killed writers; call it holding the directory's lock."""
    for tmp in directory.glob(".*.tmp-*"):
        if is_debris(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    for old in [*directory.glob(".*.old"), *directory.glob(".*.tmp")]:  # the layout before leases
        shutil.rmtree(old, ignore_errors=True)
    ckpt.clear_debris(directory / PROGRESS)


class SeedBuilder:
    """The seed of a worker's grid point: found in the store, or trained (extended) and published there."""

    def __init__(self, worker: Worker):
        self.worker, self.plan, self.env = worker, worker.plan, worker.env
        self.store = StoreLayout(worker.cfg.paths.store)
        self.trajectory_dir = self.store.trajectory(self.plan.trajectory_id)
        self.tokens_trained = 0

    def ensure(self) -> Path | None:
        """Path of the seed at D (trained now if no job trained it before); None when D = 0."""
        plan, env = self.plan, self.env
        if plan.seed_steps == 0:
            return None
        final = self.store.seed(plan.trajectory_id, plan.seed_tokens)
        if ckpt.is_complete(final) and ckpt.is_good(final):
            return final
        if env.is_main:
            self.trajectory_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.trajectory_dir / "trajectory.json", {
                "trajectory_id": plan.trajectory_id, "model": plan.spec.name, "schedule": plan.schedule.name})
        while True:
            lease = self.worker.lock(self.trajectory_dir / ".lock", f"seed {plan.trajectory_id}")
            try:
                if env.broadcast(self._needs_building(final) if env.is_main else None):
                    self._train(final, lease)
                env.barrier()
                return final
            except LeaseLost as err:
                self.worker.lost(err)
            finally:
                if lease is not None:
                    lease.release()

    def _needs_building(self, checkpoint: Path) -> bool:
        """Holding its lock: whether `checkpoint` must be (re)built; a corrupt one is moved aside first."""
        clear_debris(checkpoint.parent)
        if not ckpt.is_complete(checkpoint):
            return True
        try:
            ckpt.verify(checkpoint)
            return False
        except ckpt.CorruptCheckpoint as err:
            aside = ckpt.quarantine(checkpoint)
            print(f"[{self.plan.run_id}] {err}; moved to {aside} and rebuilding it", flush=True)
            return True

    def _start(self, model, optimizer) -> tuple[int, Path | None]:
        """Load the largest good checkpoint of the trajectory at or below D; (its step, its path)."""
        candidates = [(step, path) for step, path in trajectory_checkpoints(self.trajectory_dir)
                      if step <= self.plan.seed_steps]
        for step, path in reversed(candidates):
            try:
                ckpt.load(path, model, optimizer)
            except ckpt.CorruptCheckpoint as err:  # verified before anything is loaded: the model is untouched
                self.worker.set_aside(path, err, "starting from the one below")
                continue
            self.worker.reapply_hparams(optimizer)
            return step, path
        return 0, None

    def _train(self, final: Path, lease: FileLock | None) -> None:
        plan, env, worker = self.plan, self.env, self.worker
        model, optimizer = worker.build()
        start_step, start = self._start(model, optimizer)
        label = f"seed {plan.spec.name} D={plan.seed_tokens:,}"
        worker.say(f"[{label}] training steps {start_step}..{plan.seed_steps}"
                   + (f" from {start.name}" if start else " from scratch"))
        trainer = worker.trainer(model, optimizer)
        logger = worker.logger(f"seed-{plan.trajectory_id}", f"seed {plan.spec.name}", "seed",
                               {"trajectory_id": plan.trajectory_id}, ledger_dir=self.trajectory_dir)
        started = time.time()
        check = lease.check if lease is not None else None

        def save(step: int, target: Path = self.trajectory_dir / PROGRESS) -> None:
            ckpt.save(target, model, optimizer, {"step": step, "tokens": step * plan.batch.tokens_per_step,
                                                 "trajectory_id": plan.trajectory_id}, env,
                      slot=target.name == PROGRESS, before_publish=check)

        try:
            worker.train(trainer, TrainingPath(plan.seed_steps, 0, MIXTURE), start_step, plan.seed_steps, label,
                         save, logger)
            save(plan.seed_steps, final)
        finally:
            logger.finish()
        self.tokens_trained += trainer.tokens_trained
        if env.is_main:
            progress = self.trajectory_dir / PROGRESS
            if ckpt.is_complete(progress) and int(ckpt.read_meta(progress)["step"]) <= plan.seed_steps:
                ckpt.remove(progress)
            # No flock in the store (NFS): the seed's lease serialises its writers.
            append_jsonl(self.trajectory_dir / "segments.jsonl", [{
                "from_step": start_step, "to_step": plan.seed_steps, "tokens": trainer.tokens_trained,
                "run_id": plan.run_id, "wall_s": round(time.time() - started, 3)}], lock=False)


def seed_checkpoint(cfg: DictConfig, env: DistEnv | None = None) -> Path | None:
    """A seed job (slurm.SeedTask): the seed of cfg's grid point, from the seed's own config alone; what only
    the expert and its evaluation need (lm-eval tasks) is neither prepared nor checked."""
    return SeedBuilder(Worker(cfg, env)).ensure()


def run_seed(step: SeedStep, cfg: DictConfig, env: DistEnv | None = None) -> Path:
    """SeedStep.run: `step`, from the config of a grid point whose seed it is."""
    worker = Worker(cfg, env)
    check_planned(step, worker.plan.expert.seed)
    return SeedBuilder(worker).ensure()
