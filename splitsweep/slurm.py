"""Seeds-first submitit launchers: what `hydra/launcher=submitit_slurm` and `submitit_local` run.

`conf/hydra/launcher/submitit_{slurm,local}.yaml` point Hydra's submitit launcher configs at these classes.
On top of hydra-submitit-launcher they:

- **plan every grid point before submitting anything**, so a configuration mistake stops the launch with
  a clear message instead of failing N jobs on the cluster;
- **skip grid points already recorded** (re-running the same command re-launches only what is missing; a
  recorded point whose downstream evaluation, `eval=...`, is not recorded yet is submitted to evaluate only),
  and re-attach to grid points, and to seeds, whose job from an earlier launch still runs or waits in the
  queue (any state of `status.ALIVE`, held ones included) instead of submitting them twice;
- **train seeds first**: one seed job per (trajectory, D) not yet in the store, chained along a trajectory
  with `afterok` dependencies (a longer seed extends the shorter one), and every expert submitted with an
  `afterok` dependency on its seed's job. So no expert holds an allocation while another job trains its
  seed. On `submitit_local` (no scheduler) the same is done in two phases: seeds, then experts;
- **wait for every job** and report all failures at once, with their log paths, instead of stopping at the
  first one (`python -m splitsweep.status SWEEP_DIR` lists them again later);
- put the repository on the jobs' `PYTHONPATH`, and write `launches.jsonl` in the sweep directory (job id,
  run id and log folder of every grid point), which the status command reads.

What to submit is decided by launch_plan.py (pure, tested with fakes); where the jobs go, and how they are
waited for, by backends.py (SLURM, or local processes). This module composes the grid and carries the plan out.

Preemption and walltime: Hydra's launcher object has a `checkpoint` method (resubmit the same grid point);
submitit calls it from its USR2 handler, to which splitsweep's StopFlag hands over once the training loop
has saved its checkpoint (see `splitsweep.train.StopFlag`). Seed jobs do the same through `SeedTask`.
"""
from __future__ import annotations

import copy
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from .backends import LocalBackend, SlurmBackend
from .fsio import append_jsonl
from .launch_plan import launch_plan
from .layout import StoreLayout, SweepLayout

POLL_S = 1.0


@dataclass
class SplitsweepSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.splitsweep_launcher.SlurmLauncher"
    wait: bool = True  # false: submit the whole launch (seeds, experts, the report job) and return


class SweepJobFailed(RuntimeError):
    pass


def _task_cfg(sweep_config: DictConfig) -> DictConfig:
    cfg = copy.deepcopy(sweep_config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _log_paths(job) -> dict:
    try:
        return {"stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}
    except Exception:  # noqa: BLE001 (a job object without paths)
        return {}


@dataclass
class Point:
    """One grid point of the launch."""

    idx: int
    overrides: list[str]
    dirname: str
    run_id: str
    trajectory_id: str
    seed_tokens: int  # D; 0 when the point needs no seed
    seed_ready: bool
    done: bool  # nothing left to run: recorded, its downstream evaluation included (point_done)
    job: Any = None
    seed_job: Any = None
    attached: bool = False  # the job comes from an earlier launch (it was still queued or running)
    failure: str = ""
    sweep_dir: str = ""  # paths.sweep_dir of the grid point: where its records go
    cfg: Any = None  # the grid point's composed job config


class SeedTask:
    """A submitit callable: train (or extend) one seed trajectory up to the D of each config, in order."""

    def __init__(self, launcher: "BaseSubmititLauncher", overrides: Sequence[Sequence[str]],
                 singleton_state: dict):
        self.launcher, self.overrides = launcher, [list(o) for o in overrides]
        self.singleton_state = singleton_state

    def __call__(self) -> list[str]:
        import torch

        from .distributed import allocated_threads
        from .plan import make_plan
        from .train import Preempted

        Singleton.set_state(self.singleton_state)
        setup_globals()
        done = []
        for overrides in self.overrides:
            sweep_config = self.launcher.hydra_context.config_loader.load_sweep_config(
                self.launcher.config, overrides)
            HydraConfig.instance().set_config(sweep_config)
            cfg = _task_cfg(sweep_config)
            torch.set_num_threads(allocated_threads(cfg.train.threads))
            try:
                done.append(str(make_plan(cfg).expert.seed.run(cfg)))
            except Preempted as err:  # same hand-over as app.task: submitit requeues this seed job
                print(f"splitsweep: {err}", file=sys.stderr, flush=True)
                if err.stop is not None:
                    err.stop.hand_over(err.signum)
                raise SystemExit(128 + int(err.signum or 15)) from None
        return done

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class ReportTask:
    """A submitit callable: the splitting report of a sweep (a ReportStep), once its jobs have ended (submit and
    exit)."""

    def __init__(self, sweep_dir: str, budget_tokens, n_bootstrap: int):
        self.sweep_dir, self.budget_tokens, self.n_bootstrap = sweep_dir, budget_tokens, n_bootstrap

    def __call__(self) -> str:
        from .steps import ReportStep

        return ReportStep.of(self.sweep_dir, self.budget_tokens, self.n_bootstrap).run(self.sweep_dir)


class _SeedsFirst(BaseSubmititLauncher):
    """Shared by the SLURM and local flavours; `BACKEND` (backends.py) is where their jobs go."""

    BACKEND: type[LocalBackend] = LocalBackend

    def __init__(self, **params: Any) -> None:
        self.wait = bool(params.pop("wait", True))  # splitsweep's, not a submitit parameter
        super().__init__(**params)
        self.backend.configure()

    @property
    def backend(self) -> LocalBackend:
        return self.BACKEND(self.params)

    def __call__(self, sweep_overrides: list[str], *args: Any) -> JobReturn:
        # In a multi-task job every task is a rank and runs this; rank 0 alone writes the Hydra job
        # directory (.hydra/, the job log). The other ranks log to their own submitit log (stdout).
        if int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")) or 0) != 0:
            sweep_overrides = [*sweep_overrides, "hydra.output_subdir=null", "hydra/job_logging=stdout"]
        return super().__call__(sweep_overrides, *args)

    # ------------------------------------------------------------------ executor
    def _executor(self):
        import submitit

        name = self.BACKEND.name
        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{name}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=name, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{name}_{k}": v for k, v in params.items()})
        return executor

    def _cpus_follow_threads(self, points: list[Point]) -> None:
        """cpus_per_task left null: a rank is allocated the threads its config runs (train.threads), so the
        scheduler packs jobs as they will run. With train.threads null as well, a rank runs as many threads as
        it was allocated (distributed.allocated_threads), never all of the node's cores."""
        if self.params.get("cpus_per_task") is not None:
            return
        wanted = {p.cfg.train.threads for p in points if p.cfg.train.threads}
        if wanted:
            self.params["cpus_per_task"] = max(wanted)

    # ------------------------------------------------------------------ launch
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        backend = self.backend
        points = plan_grid(self.hydra_context, self.config, job_overrides, initial_job_idx, "submitted")
        self._cpus_follow_threads(points)
        queued_seeds = backend.attach(sweep_dir, points)
        todo = [p for p in points if not p.done and not p.attached]
        done = [p for p in points if p.done]
        print(f"splitsweep: {len(points)} grid points: {len(done)} already recorded, "
              f"{sum(p.attached for p in points)} still in the queue, {len(todo)} to submit", flush=True)
        state = Singleton.get_state()
        executor = self._executor() if todo else None
        submitted: list = []
        try:
            seed_jobs, seed_records = self._submit(executor, todo, state, submitted, queued_seeds)
        except Exception as err:  # noqa: BLE001 (sbatch refused: say which setting, leave nothing queued)
            for job in submitted:
                job.cancel(check=False)
            refusal = backend.refusal(err)
            if refusal is None:
                raise
            print(f"splitsweep: error: {refusal}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        if not self.wait and backend.outlives_launcher:
            return self._submitted_and_exit(executor, sweep_dir, points, seed_jobs, seed_records)
        self._write_manifest(sweep_dir, points, seed_records)

        # Wait for everything; a failed seed cancels the experts that wait for it (locally, the seeds are over).
        waiting = [p.job for p in points if p.job is not None]
        self._wait(waiting + (list(seed_jobs.values()) if backend.chained else []), points)
        return self._returns(sweep_dir, points)

    def _submit(self, executor, todo: list[Point], state: dict, submitted: list,
                queued_seeds: dict[tuple[str, int], Any] | None = None):
        """Carry out the launch plan (launch_plan.py): seed jobs first, then the experts. `queued_seeds`:
        (trajectory, D) -> a live seed job of an earlier launch (backends.SlurmBackend.attach), reused, not submitted."""
        backend = self.backend
        chained = backend.chained
        by_idx = {p.idx: p for p in todo}
        queued_seeds = queued_seeds or {}
        jobs: dict[str, Any] = {}  # submission key -> submitit job
        seed_jobs: dict[tuple[str, int], Any] = {}
        seed_records = []
        for sub in launch_plan(todo, chained=chained, expert_name=str(self.params.get("name") or "splitsweep"),
                               queued={k: job.job_id for k, job in queued_seeds.items()}):
            after = [jobs[k] for k in sub.after]
            if sub.queued_as:  # an earlier launch's live seed job, recorded in that launch's manifest entry
                seed = (sub.trajectory_id, sub.tokens[0])
                jobs[sub.key] = seed_jobs[seed] = queued_seeds[seed]
                continue
            if sub.kind == "seed":
                backend.after(executor, [j.job_id for j in after] if chained else [], sub.name)
                job = jobs[sub.key] = executor.submit(SeedTask(self, [by_idx[i].overrides for i in sub.points], state))
                submitted.append(job)
                for d in sub.tokens:
                    seed_jobs[(sub.trajectory_id, d)] = job
                seed_records.append({"trajectory_id": sub.trajectory_id,
                                     "tokens": sub.tokens[0] if chained else list(sub.tokens), "job_id": job.job_id,
                                     **_log_paths(job)})
                print(f"splitsweep: seed {sub.trajectory_id} D={', '.join(f'{d:,}' for d in sub.tokens)} "
                      f"submitted first (job {job.job_id})", flush=True)
                continue
            group = [by_idx[i] for i in sub.points]
            for q in group:
                q.seed_job = seed_jobs.get((q.trajectory_id, q.seed_tokens))
            if not chained and after:  # no scheduler dependencies: wait for the seeds, skip the points whose failed
                self._wait(after)
                for q in group:
                    if q.seed_job is not None and not self._succeeded(q.seed_job):
                        q.failure = self._failure_text(q.seed_job, f"seed job {q.seed_job.job_id}")
                group = [q for q in group if not q.failure]
            if not group:
                continue
            backend.after(executor, [j.job_id for j in after] if chained else [], sub.name)
            for q in group:
                print(f"splitsweep: \t#{q.idx} : {' '.join(filter_overrides(q.overrides))}", flush=True)
            array = executor.map_array(self, *zip(*[(q.overrides, "hydra.sweep.dir", q.idx, f"job_id_for_{q.idx}",
                                                     state) for q in group]))
            submitted.extend(array)
            for q, job in zip(group, array):
                q.job = job
        return seed_jobs, seed_records

    def _submitted_and_exit(self, executor, sweep_dir: Path, points: list[Point], seed_jobs: dict,
                            seed_records: list) -> list[JobReturn]:
        """hydra.launcher.wait=false: the seeds and experts are queued; queue the report after them, record the
        launch and return. The jobs' own files and the manifest are all `splitsweep-status` needs."""
        jobs = [p.job for p in points if p.job is not None] + list({id(j): j for j in seed_jobs.values()}.values())
        report = None
        cfg = next((p.cfg for p in points if p.cfg is not None), None)
        if jobs and cfg is not None and cfg.report.enabled:
            self.backend.after_all(executor, [j.job_id for j in jobs], f"report-{cfg.sweep_name}")
            report = executor.submit(ReportTask(str(sweep_dir), cfg.report.budget_tokens,
                                                int(cfg.report.n_bootstrap)))
        self._write_manifest(sweep_dir, points, seed_records,
                             report={"job_id": report.job_id, **_log_paths(report)} if report is not None else None)
        queued = sum(p.job is not None for p in points)
        print(f"splitsweep: {queued} grid points queued ({len(seed_jobs)} seed jobs first)"
              + (f", the report after them (job {report.job_id})" if report is not None else "")
              + f"; not waiting (hydra.launcher.wait=false). Progress: splitsweep-status {sweep_dir}; "
                f"re-running this command submits only what is missing", flush=True)
        returns = []
        for p in points:
            ret = JobReturn(overrides=p.overrides, working_dir=str(sweep_dir / p.dirname), task_name="splitsweep")
            # Hydra's sweeper reads every return value, and UNKNOWN has none: a queued point "completes" its
            # launch with the job it is queued as (its rows come later, through the records).
            ret.status = JobStatus.COMPLETED
            ret.return_value = {"queued_as": p.job.job_id} if p.job is not None else {"recorded": p.done}
            returns.append(ret)
        return returns

    def _wait(self, jobs: list, points: list[Point] | None = None) -> None:
        """Until every job of `jobs` is over. submitit's watcher decides when to ask the scheduler (one sacct
        call for all of them, less often as they age); a finished job is seen from its result file at once."""
        cancelled: set[str] = set()
        while True:
            if points:
                for p in points:
                    seed = p.seed_job
                    if (seed is not None and p.job is not None and not p.job.done() and seed.done()
                            and not self._succeeded(seed) and p.job.job_id not in cancelled):
                        p.failure = self._failure_text(seed, f"seed job {seed.job_id}")
                        p.job.cancel(check=False)
                        cancelled.add(p.job.job_id)
            if all(j.done() for j in jobs) and self.backend.settled(jobs):
                return
            time.sleep(POLL_S)

    @staticmethod
    def _succeeded(job) -> bool:
        if job.paths.result_pickle.exists():
            try:
                job.results()
                return True
            except Exception:  # noqa: BLE001 (the job raised)
                return False
        return str(job.state).startswith("COMPLETED")

    @staticmethod
    def _failure_text(job, what: str) -> str:
        reason = str(job.state)
        if job.paths.result_pickle.exists():
            try:
                job.results()
            except Exception as err:  # noqa: BLE001
                last = [line for line in str(err).strip().splitlines() if line.strip()]
                reason = last[-1] if last else reason
        return f"{what} {reason}; log: {job.paths.stderr}"

    def _returns(self, sweep_dir: Path, points: list[Point]) -> list[JobReturn]:
        from .records import recorded_rows

        returns, failures = [], []
        for p in points:
            ret = JobReturn(overrides=p.overrides, working_dir=str(sweep_dir / p.dirname), task_name="splitsweep")
            if p.done:
                ret.status = JobStatus.COMPLETED
                ret.return_value = [{"eval_domain": r["eval_domain"], "eval_loss": r["eval_loss"]}
                                    for r in recorded_rows(sweep_dir, p.run_id)]
            elif not p.failure and p.job is not None and self._succeeded(p.job):
                ret = p.job.results()[0]
            else:
                if not p.failure:
                    p.failure = self._failure_text(p.job, f"job {p.job.job_id}") if p.job else "not submitted"
                failures.append(p)
                ret.status = JobStatus.FAILED
            returns.append(ret)
        if failures:
            lines = [f"  #{p.idx} {' '.join(filter_overrides(p.overrides))}\n      {p.failure}" for p in failures]
            message = (f"{len(failures)} of {len(points)} grid points failed:\n" + "\n".join(lines)
                       + f"\nsee `python -m splitsweep.status {sweep_dir}`; re-running the same command "
                         f"re-launches only the grid points without records")
            print(f"splitsweep: {message}", file=sys.stderr, flush=True)
            for ret in returns:
                if ret.status == JobStatus.FAILED:
                    ret.return_value = SweepJobFailed(message)
        return returns

    def _write_manifest(self, sweep_dir: Path, points: list[Point], seeds: list[dict], report: dict | None = None):
        write_launch(sweep_dir, self.BACKEND.name, points, seeds, str(self.params["submitit_folder"]), report=report)


# ---------------------------------------------------------------------- shared by every splitsweep launcher
def plan_point(hydra_context, config: DictConfig, idx: int, overrides: list[str]) -> Point:
    """Compose one grid point's config and plan it (raises ConfigError; may prepare data, as its job would)."""
    from . import checkpoint as ckpt
    from .plan import make_plan
    from .records import is_recorded

    sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
    dirname = str(sweep_config.hydra.sweep.subdir)
    cfg = _task_cfg(sweep_config)
    plan = make_plan(cfg)
    seed = StoreLayout(cfg.paths.store).seed(plan.trajectory_id, plan.seed_tokens)
    recorded = is_recorded(Path(cfg.paths.sweep_dir), plan.run_id)
    return Point(idx, overrides, dirname, plan.run_id, plan.trajectory_id,
                 plan.seed_tokens if plan.seed_steps else 0,
                 plan.seed_steps == 0 or recorded or ckpt.is_complete(seed),  # a recorded point trains nothing
                 point_done(cfg.paths.sweep_dir, plan.run_id, cfg),
                 sweep_dir=str(cfg.paths.sweep_dir), cfg=cfg)


def point_done(sweep_dir, run_id: str, cfg: DictConfig) -> bool:
    """Whether a grid point has nothing left to run: its result rows are recorded and, when its config evaluates
    downstream tasks (eval.enabled with tasks), so are its downstream rows for this evaluation's eval_id. So adding
    `eval=...` tasks or changing eval.num_fewshot on a recorded sweep submits its points again, and their jobs
    evaluate the final checkpoints without training (Job._already_recorded), as on the sequential launcher. Reads
    the tables' indexes (records.is_recorded) and loads no task."""
    from .downstream import DownstreamEval, evaluation_step
    from .records import is_recorded

    if not is_recorded(sweep_dir, run_id):
        return False
    return not DownstreamEval.enabled(cfg) or evaluation_step(cfg.eval, run_id).done(sweep_dir)


EACH_DOMAIN = "each"  # split.expert_domain=each: one grid point per data domain, then the mixture baseline
_EXPERT_KEY = "split.expert_domain"


def expand_experts(hydra_context, config: DictConfig, job_overrides: Sequence[Sequence[str]]) -> list[list[str]]:
    """The grid with `split.expert_domain=each` replaced by one point per domain of the data (data.domains, or
    the labels the data holds), then `mixture`: a sweep follows `data.domains` without listing them again."""
    from .data import MIXTURE, build_source

    out, known = [], {}
    for overrides in job_overrides:
        overrides = list(overrides)
        at = [i for i, o in enumerate(overrides) if o.split("=", 1)[0].lstrip("+~") == _EXPERT_KEY]
        if not at or overrides[at[-1]].split("=", 1)[1] != EACH_DOMAIN:
            out.append(overrides)
            continue
        cfg = _task_cfg(hydra_context.config_loader.load_sweep_config(config, overrides))
        key = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True, default=str)
        if key not in known:
            domains = cfg.data.get("domains")
            known[key] = (list(domains) if domains is not None
                          else build_source(cfg.data, seq_len=int(cfg.train.seq_len), seed=int(cfg.seed)).domains)
        for domain in [*known[key], MIXTURE]:
            out.append([*overrides[:at[-1]], f"{_EXPERT_KEY}={domain}", *overrides[at[-1] + 1:]])
    return out


def plan_grid(hydra_context, config: DictConfig, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
              nothing: str) -> list[Point]:
    """Every grid point planned before anything of the launch starts (`split.expert_domain=each` expanded
    first: see expand_experts). A configuration mistake stops the launch with `splitsweep: error: grid point
    #i (overrides): ...` and `nothing was <nothing>`, exit 2. Launch the points' overrides, not the input's."""
    from .errors import ConfigError
    from .sweep_identity import check_sweep, launch_axes

    try:
        job_overrides = expand_experts(hydra_context, config, job_overrides)
    except ConfigError as err:
        print(f"splitsweep: error: {err}\nsplitsweep: nothing was {nothing}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    points = []
    for i, overrides in enumerate(job_overrides):
        try:
            points.append(plan_point(hydra_context, config, initial_job_idx + i, list(overrides)))
        except ConfigError as err:
            print(f"splitsweep: error: grid point #{initial_job_idx + i} ({' '.join(filter_overrides(overrides))}): "
                  f"{err}\nsplitsweep: nothing was {nothing}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    axes = launch_axes(job_overrides, (config.hydra.sweeper.get("params") or {}).keys())
    try:
        for p in points:
            check_sweep(p.sweep_dir, str(p.cfg.sweep_name), p.cfg, axes)
    except ConfigError as err:
        print(f"splitsweep: error: {err}\nsplitsweep: nothing was {nothing}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return points


def write_launch(sweep_dir: Path, launcher: str, points: list[Point], seeds: Sequence[dict] = (),
                 submitit_folder: str | None = None, to_run: str = "submitted", report: dict | None = None) -> None:
    """Add this launch to `launches.jsonl`: every grid point's index, overrides, job dir and run id (and job,
    when a scheduler runs it), and the launching process. `python -m splitsweep.status` reads the whole grid
    from it. `to_run` is the state_at_launch of the points this launch runs (`queued`: run by this process)."""
    entry = {
        "time": time.time(), "launcher": launcher, "argv": sys.argv, "host": socket.gethostname(),
        "pid": os.getpid(), "submitit_folder": submitit_folder, "seeds": list(seeds), "report_job": report,
        "store": next((str(p.cfg.paths.store) for p in points if p.cfg is not None), None),
        "points": [{
            "idx": p.idx, "overrides": filter_overrides(p.overrides), "dirname": p.dirname,
            "run_id": p.run_id, "trajectory_id": p.trajectory_id, "seed_tokens": p.seed_tokens,
            "state_at_launch": "recorded" if p.done else ("attached" if p.attached else to_run),
            "job_id": p.job.job_id if p.job is not None else None,
            "folder": str(p.job.paths.folder) if p.job is not None else None,
            "seed_job_id": p.seed_job.job_id if p.seed_job is not None else None,
            **(_log_paths(p.job) if p.job is not None else {}),
        } for p in points],
    }
    # One write of the whole line at the end of the file, under a lock against concurrent launches. A reader while
    # it is written (status.launches) skips the partial last line; a launcher killed mid-write leaves a torn line
    # that stays a line of its own, skipped too.
    append_jsonl(SweepLayout(sweep_dir).launches, [entry])


class SlurmLauncher(_SeedsFirst):
    BACKEND = SlurmBackend
    _EXECUTOR = SlurmBackend.name  # data/prepare_array.py reads it


class LocalLauncher(_SeedsFirst):
    BACKEND = LocalBackend
    _EXECUTOR = LocalBackend.name
