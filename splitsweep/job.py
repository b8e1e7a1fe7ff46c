"""One job = one grid point (N, D, D', expert domain): make sure its seed exists, train the expert,
evaluate it on every domain, and record the rows.

Seeds live in a store shared by every job and sweep: `store/seeds/<trajectory_id>/tokens_<D>` are
checkpoints of one trajectory (a hash of everything that determines it). Under the wsd schedule a job
needing a larger D extends the trajectory from the largest checkpoint below D. A lock file with a
heartbeat keeps concurrent jobs (processes, or cluster tasks on a shared filesystem) from training the
same seed twice, and checkpoints are published by rename, so a half-written one is never read.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import checkpoint as ckpt
from .data import MIXTURE
from .distributed import DistEnv, allocated_threads, init_distributed
from .downstream import DownstreamEval, append_downstream, is_evaluated
from .fsio import append_jsonl
from .layout import SEED_PREFIX, StoreLayout, SweepLayout
from .logger import RunLogger, check_logger
from .model import build_model
from .parallelize import adamw, parallelize
from .plan import ConfigError, Plan, git_sha, make_plan
from .records import ResultRow, append_rows, is_recorded, recorded_rows
from .store import FileLock, LeaseLost, is_debris, write_json_atomic
from .train import TrainingPath
from .train import Preempted, StopFlag, Trainer, TrainingDiverged, check_world

PROGRESS = "progress"


def _build(plan: Plan, env: DistEnv):
    model = parallelize(build_model(plan.spec, plan.source.vocab_size, plan.batch.seq_len, plan.seed), env,
                        plan.layout)
    o = plan.cfg.train.optimizer
    return model, adamw(model, env, plan.schedule.peak_lr, o.betas, o.eps, o.weight_decay)


def _trainer(plan: Plan, env: DistEnv, model, optimizer, stop: StopFlag) -> Trainer:
    t = plan.cfg.train
    return Trainer(model, optimizer, plan.source, plan.schedule, plan.batch, env, float(t.grad_clip), stop,
                   layout=plan.layout, sync_every=int(t.get("sync_every_steps", 10)))


def _reapply_hparams(plan: Plan, optimizer) -> None:
    # Loading optimizer state overwrites param-group hyperparameters with the checkpoint's.
    o = plan.cfg.train.optimizer
    for group in optimizer.param_groups:
        group.update(betas=tuple(o.betas), eps=float(o.eps), weight_decay=float(o.weight_decay))


def _seed_checkpoints(trajectory_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a trajectory as (step, path), the periodic progress slot included."""
    found = []
    for path in list(trajectory_dir.glob(SEED_PREFIX + "*")) + [trajectory_dir / PROGRESS]:
        if path.is_dir() and ckpt.is_complete(path):
            found.append((int(ckpt.read_meta(path)["step"]), path))
    return sorted(found)


def _clear_debris(directory: Path) -> None:
    """Half-written checkpoints of killed writers; call it holding the directory's lock."""
    for tmp in directory.glob(".*.tmp-*"):
        if is_debris(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    for old in [*directory.glob(".*.old"), *directory.glob(".*.tmp")]:  # the layout before leases
        shutil.rmtree(old, ignore_errors=True)
    ckpt.clear_debris(directory / PROGRESS)


def _stop_flag(cfg) -> StopFlag:
    return StopFlag().install() if cfg.train.get("handle_signals", True) else StopFlag()


class Job:
    def __init__(self, cfg: DictConfig, env: DistEnv | None = None, seed_only: bool = False):
        """`seed_only`: a job that trains the seed alone (a SLURM seed job): what only the expert and its
        evaluation need (lm-eval tasks) is neither prepared nor checked."""
        self.cfg = cfg
        self.plan = make_plan(cfg)  # raises ConfigError before any compute
        check_logger(cfg.logger)  # online W&B without a key or a server fails here, not after training
        self.env = env or init_distributed(str(cfg.train.get("device", "auto")))
        try:
            check_world(self.plan.batch, self.env.world_size)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        # lm-eval tasks: unknown names, unreachable hub data, tokenizer mismatches fail here, before training.
        self.downstream = (DownstreamEval.prepare(cfg, self.plan) if DownstreamEval.enabled(cfg) and not seed_only
                           else None)
        self.sweep_dir = Path(cfg.paths.sweep_dir)
        self.store = StoreLayout(cfg.paths.store)
        self.trajectory_dir = self.store.trajectory(self.plan.trajectory_id)
        self.run_dir = SweepLayout(self.sweep_dir).run(self.plan.run_id)
        self.stop = _stop_flag(cfg)
        self.tokens_trained = 0

    # ---------------------------------------------------------------- seed
    def seed_checkpoint(self) -> Path | None:
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
            lease = self._lock(self.trajectory_dir / ".lock", f"seed {plan.trajectory_id}")
            try:
                if env.broadcast(self._needs_building(final) if env.is_main else None):
                    self._train_seed(final, lease)
                env.barrier()
                return final
            except LeaseLost as err:
                self._lost(err)
            finally:
                if lease is not None:
                    lease.release()

    def _needs_building(self, checkpoint: Path) -> bool:
        """Holding its lock: whether `checkpoint` must be (re)built; a corrupt one is moved aside first."""
        _clear_debris(checkpoint.parent)
        if not ckpt.is_complete(checkpoint):
            return True
        try:
            ckpt.verify(checkpoint)
            return False
        except ckpt.CorruptCheckpoint as err:
            aside = ckpt.quarantine(checkpoint)
            print(f"[{self.plan.run_id}] {err}; moved to {aside} and rebuilding it", flush=True)
            return True

    def _lock(self, path: Path, what: str) -> FileLock | None:
        """Rank 0 takes the lease on `path`; a stop signal while waiting for it preempts the job."""
        if not self.env.is_main:
            return None

        def should_stop() -> None:
            if self.stop.set:
                raise Preempted(f"[{what}] stopped by signal {self.stop.signum} while waiting for {path}",
                                signum=self.stop.signum, stop=self.stop)

        self._next_wait_note = 0.0
        return FileLock(path, stale_s=float(self.cfg.train.lock_stale_s), should_stop=should_stop,
                        on_wait=lambda s: self._waiting(s, what)).acquire()

    def _lost(self, err: LeaseLost) -> None:
        if self.env.is_main:
            print(f"[{self.plan.run_id}] {err}; nothing published, waiting for that job", flush=True)

    def _waiting(self, seconds: float, what: str) -> None:
        # The lock calls this at every poll; say so every 30 s.
        if seconds >= self._next_wait_note:
            self._next_wait_note = seconds + 30.0
            print(f"[{what}] waiting {seconds:.0f}s for another job working on it", flush=True)

    def _seed_start(self, model, optimizer) -> tuple[int, Path | None]:
        """Load the largest good checkpoint of the trajectory at or below D; (its step, its path)."""
        plan = self.plan
        candidates = [(step, path) for step, path in _seed_checkpoints(self.trajectory_dir)
                      if step <= plan.seed_steps]
        for step, path in reversed(candidates):
            try:
                ckpt.load(path, model, optimizer)
            except ckpt.CorruptCheckpoint as err:  # verified before anything is loaded: the model is untouched
                self._set_aside(path, err, "starting from the one below")
                continue
            _reapply_hparams(plan, optimizer)
            return step, path
        return 0, None

    def _set_aside(self, path: Path, err: Exception, then: str) -> None:
        """A checkpoint that failed its checksums on every rank: moved aside (rank 0), so it is rebuilt."""
        self.env.barrier()
        if self.env.is_main:
            aside = ckpt.quarantine(path)
            print(f"[{self.plan.run_id}] {err}; moved to {aside}, {then}", flush=True)

    def _train_seed(self, final: Path, lease: FileLock | None) -> None:
        plan, env = self.plan, self.env
        model, optimizer = _build(plan, env)
        start_step, start = self._seed_start(model, optimizer)
        label = f"seed {plan.spec.name} D={plan.seed_tokens:,}"
        if env.is_main:
            print(f"[{label}] training steps {start_step}..{plan.seed_steps}"
                  + (f" from {start.name}" if start else " from scratch"), flush=True)
        path = TrainingPath(plan.seed_steps, 0, MIXTURE)
        trainer = _trainer(plan, env, model, optimizer, self.stop)
        logger = self._logger(f"seed-{plan.trajectory_id}", f"seed {plan.spec.name}", "seed",
                              {"trajectory_id": plan.trajectory_id}, ledger_dir=self.trajectory_dir)
        started = time.time()

        check = lease.check if lease is not None else None

        def save(step: int, target: Path = self.trajectory_dir / PROGRESS) -> None:
            ckpt.save(target, model, optimizer, {"step": step, "tokens": step * plan.batch.tokens_per_step,
                                                 "trajectory_id": plan.trajectory_id}, env,
                      slot=target.name == PROGRESS, before_publish=check)

        try:
            trainer.train(path, start_step, plan.seed_steps, label, checkpoint=save,
                          checkpoint_every=int(self.cfg.train.checkpoint_every_steps), log=logger.log,
                          progress_every_s=float(self.cfg.train.progress_every_s))
            save(plan.seed_steps, final)
        finally:
            logger.finish()
        self.tokens_trained += trainer.tokens_trained
        if env.is_main:
            progress = self.trajectory_dir / PROGRESS
            if ckpt.is_complete(progress) and int(ckpt.read_meta(progress)["step"]) <= plan.seed_steps:
                ckpt.remove(progress)
            # The audit trail of training done. No flock in the store (NFS): the seed's lease serialises its writers.
            append_jsonl(self.trajectory_dir / "segments.jsonl", [{
                "from_step": start_step, "to_step": plan.seed_steps, "tokens": trainer.tokens_trained,
                "run_id": plan.run_id, "wall_s": round(time.time() - started, 3)}], lock=False)

    # ---------------------------------------------------------------- expert
    def _logger(self, run_id: str, name: str, job_type: str, extra: dict, ledger_dir: Path) -> RunLogger:
        plan = self.plan
        config = OmegaConf.to_container(self.cfg, resolve=True)
        config.update(extra, n_params=plan.n_params, pretrain_tokens=plan.pretrain_tokens,
                      special_tokens=plan.special_tokens, expert_domain=plan.expert_domain)
        return RunLogger(self.cfg.logger, self.sweep_dir, run_id, name, str(self.cfg.sweep_name), job_type,
                         config, tags=[job_type, plan.spec.name, plan.schedule.name], active=self.env.is_main,
                         ledger_dir=ledger_dir)

    def _check_run_dir(self) -> None:
        identity = self.run_dir / "run.json"
        if identity.exists():
            recorded = json.loads(identity.read_text())
            if recorded.get("run_id") != self.plan.run_id:
                raise ConfigError(f"{self.run_dir} belongs to run {recorded.get('run_id')}, not to this grid "
                                  f"point ({self.plan.run_id}); refusing to train on top of it")
        elif self.env.is_main:
            write_json_atomic(identity, {"run_id": self.plan.run_id, "trajectory_id": self.plan.trajectory_id,
                                         "config_hash": self.plan.config_hash,
                                         "config": OmegaConf.to_container(self.cfg, resolve=True)})

    def run(self) -> list[dict]:
        plan, env = self.plan, self.env
        while True:
            if self._recorded():
                return self._already_recorded()
            self._check_run_dir()
            env.barrier()
            lease = self._lock(self.run_dir / ".lock", f"run {plan.run_id}")
            try:
                if self._recorded():  # finished by the job that held the lock before us
                    continue
                return self._run_locked(lease)
            except LeaseLost as err:
                self._lost(err)
            finally:
                if lease is not None:
                    lease.release()

    def _recorded(self) -> bool:
        return bool(self.env.broadcast(is_recorded(self.sweep_dir, self.plan.run_id) if self.env.is_main else None))

    def _already_recorded(self) -> list[dict]:
        plan, env = self.plan, self.env
        existing = recorded_rows(self.sweep_dir, plan.run_id)
        if self.downstream is not None and not is_evaluated(self.sweep_dir, self.downstream.eval_id(plan.run_id)):
            self._downstream_from_final(existing)
        if env.is_main:
            print(f"[{plan.run_id}] already recorded ({len(existing)} rows); nothing to do", flush=True)
        return existing

    def _resume(self, model, optimizer, seed: Path | None) -> int:
        """Load the furthest good state of this run (final, progress, or the seed); returns its step."""
        plan, env = self.plan, self.env
        final, progress = self.run_dir / "final", self.run_dir / PROGRESS
        total = plan.seed_steps + plan.expert_steps
        label = f"expert {plan.spec.name} D={plan.pretrain_tokens:,} D'={plan.special_tokens:,} {plan.expert_domain}"
        for where in (final, progress):
            if not ckpt.is_complete(where):
                continue
            try:
                if where is final:
                    ckpt.load(final, model, None)
                    step = total
                else:
                    step = int(ckpt.load(progress, model, optimizer)["step"])
            except ckpt.CorruptCheckpoint as err:  # verified before anything is loaded: the model is untouched
                self._set_aside(where, err, "resuming from an earlier state")
                continue
            if where is progress:
                _reapply_hparams(plan, optimizer)
                if env.is_main:
                    print(f"[{label}] resuming at step {step}/{total} from {progress}", flush=True)
            return step
        if seed is None:
            return 0
        # wsd continues the seed's optimizer; the independent-cosine expert re-warms a fresh one.
        ckpt.load(seed, model, optimizer if plan.schedule.name == "wsd" else None)
        _reapply_hparams(plan, optimizer)
        return plan.seed_steps

    def _run_locked(self, lease: FileLock | None) -> list[dict]:
        plan, env = self.plan, self.env
        started = time.time()
        if env.is_main:
            _clear_debris(self.run_dir)
        try:
            seed = self.seed_checkpoint()
        except TrainingDiverged as err:
            self._mark("failed", str(err))
            raise
        model, optimizer = _build(plan, env)
        final, progress = self.run_dir / "final", self.run_dir / PROGRESS
        total = plan.seed_steps + plan.expert_steps
        label = f"expert {plan.spec.name} D={plan.pretrain_tokens:,} D'={plan.special_tokens:,} {plan.expert_domain}"
        step = self._resume(model, optimizer, seed)
        check = lease.check if lease is not None else None
        trainer = _trainer(plan, env, model, optimizer, self.stop)
        logger = self._logger(f"expert-{plan.run_id}", label, "expert", {"run_id": plan.run_id},
                              ledger_dir=self.run_dir)
        try:
            if step < total:
                path = TrainingPath(plan.seed_steps, plan.expert_steps, plan.expert_domain, plan.seed_offsets)

                def save(at: int) -> None:
                    ckpt.save(progress, model, optimizer, {"step": at, "run_id": plan.run_id}, env, slot=True,
                              before_publish=check)

                trainer.train(path, step, total, label, checkpoint=save,
                              checkpoint_every=int(self.cfg.train.checkpoint_every_steps), log=logger.log,
                              progress_every_s=float(self.cfg.train.progress_every_s))
                self.tokens_trained += trainer.tokens_trained
                ckpt.save(final, model, None, {"step": total, "run_id": plan.run_id}, env, before_publish=check)
            rows = self.evaluate(trainer, time.time() - started)
            downstream = self._run_downstream(model, rows)
            # `results_json` holds the very rows appended to results.jsonl (a string: W&B's dumps round
            # floats), so the table can be rebuilt from W&B exactly.
            logger.summary({f"eval/{r['eval_domain']}/loss": r["eval_loss"] for r in rows}
                           | {f"eval/{r['eval_domain']}/recall": r["recall_accuracy"] for r in rows
                              if r["recall_accuracy"] is not None} | {"results_json": json.dumps(rows)}
                           | {f"downstream/{r['task']}/{r['metric']}": r["value"] for r in downstream})
        except TrainingDiverged as err:
            logger.finish(exit_code=1)
            self._mark("failed", str(err))
            raise
        except Preempted as err:
            # The progress checkpoint is saved: a requeued (or re-launched) job resumes from it.
            logger.finish(exit_code=1)
            self._mark("preempted", str(err))
            if err.stop is None:
                err.stop = self.stop
            raise
        except LeaseLost:
            logger.finish(exit_code=1)
            raise
        logger.finish()
        if env.is_main:
            lease.check()
            append_downstream(self.sweep_dir, downstream)
            append_rows(self.sweep_dir, rows)
            self._mark("done", "")
            ckpt.remove(progress)
        env.barrier()
        return rows

    def _run_downstream(self, model, rows: list[dict]) -> list[dict]:
        """lm-eval rows of the trained model (all ranks take part), [] when eval is off."""
        if self.downstream is None:
            return []
        keys = ("sweep", "run_id", "model", "n_params", "n_params_total", "pretrain_tokens", "special_tokens",
                "expert_domain", "flops", "schedule", "seed", "config_hash", "seed_id", "git_sha")
        with self.plan.layout.autocast(self.env):  # scored as the rows were
            return self.downstream.run(model, self.env, {k: rows[0][k] for k in keys})

    def _downstream_from_final(self, rows: list[dict]) -> None:
        """A recorded grid point without this evaluation's rows (eval turned on or changed later): evaluate
        runs/<id>/final."""
        final = self.run_dir / "final"
        if not ckpt.is_complete(final):
            if self.env.is_main:
                print(f"[{self.plan.run_id}] no final checkpoint in {final}; skipping downstream eval", flush=True)
            return
        model, _ = _build(self.plan, self.env)
        ckpt.load(final, model, None)
        downstream = self._run_downstream(model, rows)
        if self.env.is_main:
            append_downstream(self.sweep_dir, downstream)
        self.env.barrier()

    def _mark(self, status: str, message: str) -> None:
        if self.env.is_main:
            write_json_atomic(self.run_dir / "status.json", {"status": status, "message": message,
                                                             "time": time.time()})

    def evaluate(self, trainer: Trainer, wall_s: float) -> list[dict]:
        plan, source = self.plan, self.plan.source
        batch_rows = int(self.cfg.train.eval_batch)
        rows = []
        domains = list(source.domains)
        if str(self.cfg.train.get("eval_scope", "all")) == "own" and plan.expert_domain != MIXTURE:
            domains = [plan.expert_domain]
        measured = {d: trainer.evaluate_with_se(source.heldout(source.domain_index(d)), batch_rows,
                                                source.heldout_documents(source.domain_index(d))) for d in domains}
        if len(domains) == len(source.domains):
            # The mixture: each domain's loss weighted by its share, no second pass over the same text.
            w = [plan.mixture_weight(d) for d in source.domains]
            per = [measured[d] for d in source.domains]
            measured[MIXTURE] = (float(sum(wk * m[0] for wk, m in zip(w, per))), int(sum(m[1] for m in per)),
                                 float(np.sqrt(sum((wk * m[2]) ** 2 for wk, m in zip(w, per)))))
        tokens = plan.pretrain_tokens + plan.special_tokens
        for domain, (loss, n_tokens, loss_se) in measured.items():
            recall = None
            if domain != MIXTURE and hasattr(source, "recall_items"):
                facts, mask = source.recall_items(source.domain_index(domain))
                recall = trainer.recall(facts, mask, batch_rows=max(batch_rows, 64))
            rows.append(ResultRow(
                sweep=str(self.cfg.sweep_name), run_id=plan.run_id, model=plan.spec.name,
                n_params=plan.n_params, n_params_total=plan.n_params_total,
                pretrain_tokens=plan.pretrain_tokens, special_tokens=plan.special_tokens,
                expert_domain=plan.expert_domain, eval_domain=domain, mixture_weight=plan.mixture_weight(domain),
                eval_loss=loss, eval_tokens=n_tokens, eval_loss_se=loss_se, recall_accuracy=recall,
                flops=6 * plan.n_params * tokens, flops_total_params=6 * plan.n_params_total * tokens,
                schedule=plan.schedule.name, precision=plan.layout.precision, seed=plan.seed,
                config_hash=plan.config_hash, seed_id=plan.trajectory_id, git_sha=git_sha(),
                wall_s=round(wall_s, 3), tokens_trained=self.tokens_trained, epochs_max=round(plan.epochs_max, 4),
                batch_tokens=plan.batch.tokens_per_step, accounting=plan.accounting,
                budget_tokens=plan.budget_tokens, n_experts=plan.n_experts,
                cooldown_tokens=plan.cooldown_steps * plan.batch.tokens_per_step,
            ).as_dict())
        for r in rows:
            if not math.isfinite(r["eval_loss"]):
                raise TrainingDiverged(f"eval loss on {r['eval_domain']} is {r['eval_loss']}")
        return rows


def run_job(cfg: DictConfig) -> list[dict]:
    torch.set_num_threads(allocated_threads(cfg.train.get("threads")))
    return Job(cfg).run()
