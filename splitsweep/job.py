"""One job = one grid point (N, D, D', expert domain): make sure its seed exists (seed_store), train the
expert, evaluate it on every domain (and downstream tasks), and record the rows once.

A run directory `sweeps/<name>/runs/<run_id>` holds the run's identity (`run.json`), its lease, its progress
and final checkpoints and its `status.json`; the rows go to the sweep's results table (records.py).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from . import checkpoint as ckpt
from .data import MIXTURE
from .distributed import DistEnv
from .downstream import DownstreamEval, append_downstream, is_evaluated
from .layout import SweepLayout
from .plan import ConfigError, git_sha
from .records import ResultRow, append_rows, is_recorded, recorded_rows
from .seed_store import PROGRESS, SeedBuilder, clear_debris
from .steps import DownstreamStep, ExpertStep, check_planned
from .store import FileLock, LeaseLost, write_json_atomic
from .train import Preempted, Trainer, TrainingDiverged, TrainingPath
from .worker import Worker


class Job:
    """The work of an ExpertStep (and of its DownstreamStep) in one process group."""

    def __init__(self, cfg: DictConfig, env: DistEnv | None = None):
        self.worker = Worker(cfg, env)  # the plan, checked before any compute; ranks; stop flag
        self.cfg, self.plan, self.env, self.sweep_dir = cfg, self.worker.plan, self.worker.env, self.worker.sweep_dir
        # lm-eval tasks: unknown names, unreachable hub data, tokenizer mismatches fail here, before training.
        self.downstream = DownstreamEval.prepare(cfg, self.plan) if DownstreamEval.enabled(cfg) else None
        self.run_dir = SweepLayout(self.sweep_dir).run(self.plan.run_id)
        self.seeds = SeedBuilder(self.worker)
        self._expert_tokens = 0

    @property
    def tokens_trained(self) -> int:
        """Tokens this job trained: the seed's share only if it trained the seed."""
        return self.seeds.tokens_trained + self._expert_tokens

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
            lease = self.worker.lock(self.run_dir / ".lock", f"run {plan.run_id}")
            try:
                if self._recorded():  # finished by the job that held the lock before us
                    continue
                return self._run_locked(lease)
            except LeaseLost as err:
                self.worker.lost(err)
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
                self.worker.set_aside(where, err, "resuming from an earlier state")
                continue
            if where is progress:
                self.worker.reapply_hparams(optimizer)
                if env.is_main:
                    print(f"[{label}] resuming at step {step}/{total} from {progress}", flush=True)
            return step
        if seed is None:
            return 0
        # wsd continues the seed's optimizer; the independent-cosine expert re-warms a fresh one.
        ckpt.load(seed, model, optimizer if plan.schedule.name == "wsd" else None)
        self.worker.reapply_hparams(optimizer)
        return plan.seed_steps

    def _run_locked(self, lease: FileLock | None) -> list[dict]:
        plan, env = self.plan, self.env
        started = time.time()
        if env.is_main:
            clear_debris(self.run_dir)
        try:
            seed = self.seeds.ensure()
        except TrainingDiverged as err:
            self._mark("failed", str(err))
            raise
        model, optimizer = self.worker.build()
        final, progress = self.run_dir / "final", self.run_dir / PROGRESS
        total = plan.seed_steps + plan.expert_steps
        label = f"expert {plan.spec.name} D={plan.pretrain_tokens:,} D'={plan.special_tokens:,} {plan.expert_domain}"
        step = self._resume(model, optimizer, seed)
        check = lease.check if lease is not None else None
        trainer = self.worker.trainer(model, optimizer)
        logger = self.worker.logger(f"expert-{plan.run_id}", label, "expert", {"run_id": plan.run_id},
                              ledger_dir=self.run_dir)
        try:
            if step < total:
                path = TrainingPath(plan.seed_steps, plan.expert_steps, plan.expert_domain, plan.seed_offsets)

                def save(at: int) -> None:
                    ckpt.save(progress, model, optimizer, {"step": at, "run_id": plan.run_id}, env, slot=True,
                              before_publish=check)

                self.worker.train(trainer, path, step, total, label, save, logger)
                self._expert_tokens += trainer.tokens_trained
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
                err.stop = self.worker.stop
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

    def _downstream_from_final(self, rows: list[dict]) -> list[dict]:
        """A recorded grid point without this evaluation's rows (eval turned on or changed later): evaluate
        runs/<id>/final; returns the rows recorded."""
        final = self.run_dir / "final"
        if not ckpt.is_complete(final):
            if self.env.is_main:
                print(f"[{self.plan.run_id}] no final checkpoint in {final}; skipping downstream eval", flush=True)
            return []
        model, _ = self.worker.build()
        ckpt.load(final, model, None)
        downstream = self._run_downstream(model, rows)
        if self.env.is_main:
            append_downstream(self.sweep_dir, downstream)
        self.env.barrier()
        return downstream

    def run_downstream(self) -> list[dict]:
        """The downstream evaluation of this recorded run, unless it is recorded already; returns its new rows."""
        if not self._recorded():
            raise ConfigError(f"run {self.plan.run_id} is not recorded in {self.sweep_dir}: train it first "
                              f"(its downstream evaluation reads its final model)")
        if is_evaluated(self.sweep_dir, self.downstream.eval_id(self.plan.run_id)):
            return []
        return self._downstream_from_final(recorded_rows(self.sweep_dir, self.plan.run_id))

    def _mark(self, status: str, message: str) -> None:
        if self.env.is_main:
            write_json_atomic(self.run_dir / "status.json", {"status": status, "message": message,
                                                             "time": time.time()})

    def evaluate(self, trainer: Trainer, wall_s: float) -> list[dict]:
        plan, source = self.plan, self.plan.source
        batch_rows = plan.train.eval_batch
        rows = []
        domains = list(source.domains)
        if plan.train.eval_scope == "own" and plan.expert_domain != MIXTURE:
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
                schedule=plan.schedule.name, precision=plan.layout.precision, seed=plan.rng_seed,
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


def run_expert(step: ExpertStep, cfg: DictConfig, env: DistEnv | None = None) -> list[dict]:
    """ExpertStep.run: `step`, from the config of its grid point."""
    job = Job(cfg, env)
    check_planned(step, job.plan.expert)
    return job.run()


def run_downstream(step: DownstreamStep, cfg: DictConfig, env: DistEnv | None = None) -> list[dict]:
    """DownstreamStep.run: `step`, from the config of its run's grid point (with its eval settings)."""
    job = Job(cfg, env)
    check_planned(step, job.downstream.step(job.plan.run_id) if job.downstream is not None else None)
    return job.run_downstream()
