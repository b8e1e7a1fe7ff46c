"""What one process needs for a unit of work, a seed or an expert: the grid point's plan (checked before any
compute), its ranks, its stop flag, the leases it waits for, and the model and trainer it builds."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import checkpoint as ckpt
from .distributed import DistEnv, init_distributed
from .logger import RunLogger, check_logger
from .model import build_model
from .parallelize import adamw, parallelize
from .plan import ConfigError, make_plan
from .store import FileLock, LeaseLost
from .train import Preempted, StopFlag, Trainer, check_world


class Worker:
    def __init__(self, cfg: DictConfig, env: DistEnv | None = None):
        self.cfg = cfg
        self.plan = make_plan(cfg)  # raises ConfigError before any compute
        check_logger(cfg.logger)  # online W&B without a key or a server fails here, not after training
        self.args = self.plan.train  # the train section, typed
        self.env = env or init_distributed(self.args.device)
        try:
            check_world(self.plan.batch, self.env.world_size)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.sweep_dir = Path(cfg.paths.sweep_dir)
        self.stop = StopFlag().install() if self.args.handle_signals else StopFlag()
        self._next_wait_note = 0.0

    def say(self, message: str) -> None:
        if self.env.is_main:
            print(message, flush=True)

    # ------------------------------------------------------------ model and training
    def build(self):
        """The plan's model, parallelized, and its AdamW."""
        plan, env = self.plan, self.env
        model = parallelize(build_model(plan.spec, plan.source.vocab_size, plan.batch.seq_len, plan.rng_seed), env,
                            plan.layout)
        o = self.args.optimizer
        return model, adamw(model, env, plan.schedule.peak_lr, o.betas, o.eps, o.weight_decay)

    def trainer(self, model, optimizer) -> Trainer:
        t, plan = self.args, self.plan
        return Trainer(model, optimizer, plan.source, plan.schedule, plan.batch, self.env, t.grad_clip,
                       self.stop, layout=plan.layout, sync_every=t.sync_every_steps)

    def reapply_hparams(self, optimizer) -> None:
        # Loading optimizer state overwrites param-group hyperparameters with the checkpoint's.
        o = self.args.optimizer
        for group in optimizer.param_groups:
            group.update(betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)

    def train(self, trainer: Trainer, path, start: int, end: int, label: str, save, logger: RunLogger) -> None:
        t = self.args
        trainer.train(path, start, end, label, checkpoint=save, checkpoint_every=t.checkpoint_every_steps,
                      log=logger.log, progress_every_s=t.progress_every_s)

    def logger(self, run_id: str, name: str, job_type: str, extra: dict, ledger_dir: Path) -> RunLogger:
        plan = self.plan
        config = OmegaConf.to_container(self.cfg, resolve=True)
        config.update(extra, n_params=plan.n_params, pretrain_tokens=plan.pretrain_tokens,
                      special_tokens=plan.special_tokens, expert_domain=plan.expert_domain)
        return RunLogger(self.cfg.logger, self.sweep_dir, run_id, name, str(self.cfg.sweep_name), job_type,
                         config, tags=[job_type, plan.spec.name, plan.schedule.name], active=self.env.is_main,
                         ledger_dir=ledger_dir)

    # ------------------------------------------------------------ leases and damaged checkpoints
    def lock(self, path: Path, what: str) -> FileLock | None:
        """Rank 0 takes the lease on `path`; a stop signal while waiting for it preempts the job."""
        if not self.env.is_main:
            return None

        def should_stop() -> None:
            if self.stop.set:
                raise Preempted(f"[{what}] stopped by signal {self.stop.signum} while waiting for {path}",
                                signum=self.stop.signum, stop=self.stop)

        self._next_wait_note = 0.0
        return FileLock(path, stale_s=self.args.lock_stale_s, should_stop=should_stop,
                        on_wait=lambda s: self._waiting(s, what)).acquire()

    def _waiting(self, seconds: float, what: str) -> None:
        # The lock calls this at every poll; say so every 30 s.
        if seconds >= self._next_wait_note:
            self._next_wait_note = seconds + 30.0
            print(f"[{what}] waiting {seconds:.0f}s for another job working on it", flush=True)

    def lost(self, err: LeaseLost) -> None:
        self.say(f"[{self.plan.run_id}] {err}; nothing published, waiting for that job")

    def set_aside(self, path: Path, err: Exception, then: str) -> None:
        """A checkpoint that failed its checksums on every rank: moved aside (rank 0), so it is rebuilt."""
        self.env.barrier()
        if self.env.is_main:
            aside = ckpt.quarantine(path)
            print(f"[{self.plan.run_id}] {err}; moved to {aside}, {then}", flush=True)
