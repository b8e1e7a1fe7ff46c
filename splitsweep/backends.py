"""Where a launch's jobs go: one backend per submitit executor, behind one small interface.

The seeds-first launcher (slurm.py) decides what to submit (launch_plan.py) and carries it out through a backend:
  SlurmBackend  SLURM through submitit. Dependencies are the scheduler's (`afterok`), so a trajectory's seeds
                are chained jobs; jobs an earlier launch left in the queue are re-attached; the jobs outlive the
                launcher, which may submit and exit (hydra.launcher.wait=false).
  LocalBackend  submitit's local executor: the jobs are subprocesses of the launcher. There is no scheduler to
                hold a dependency, so the launcher waits for a submission's `after` before submitting it.
Both poll through submitit: a job that finished is seen from its result file at once, and the scheduler is asked
(sacct) only as often as submitit's own watcher allows (it backs off as the jobs age).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
_PYTHONPATH_LINE = f'export PYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}"'


class LocalBackend:
    name = "local"  # submitit's executor, and the prefix of its parameters (local_*)
    chained = False  # no scheduler dependencies: one seed job per trajectory trains its Ds in order
    outlives_launcher = False  # the jobs are this process's children: it must wait for them

    def __init__(self, params: dict) -> None:
        self.params = params  # the launcher's (hydra.launcher.*), read at each call

    def configure(self) -> None:
        """Before submitting: the repository on the jobs' PYTHONPATH (here, they inherit this environment)."""
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(REPO) not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *paths])

    def after(self, executor, job_ids: Sequence[str], name: str) -> None:
        """Name the next submissions (`job_ids` are waited for by the launcher: see `chained`)."""
        executor.update_parameters(name=name)

    def attach(self, sweep_dir: Path, points: list) -> dict[tuple[str, int], Any]:
        """Local jobs end with their launcher: nothing of an earlier launch is still queued."""
        return {}

    def refusal(self, err: Exception) -> str | None:
        """Why the executor refused a submission, in the user's terms; None: not a refusal (raise it)."""
        return None

    def settled(self, jobs: Sequence) -> bool:
        """Whether jobs that submitit sees as done are really over (the scheduler agrees)."""
        return True


class SlurmBackend(LocalBackend):
    name = "slurm"
    chained = True
    outlives_launcher = True

    def configure(self) -> None:
        setup = list(self.params.get("setup") or [])
        if _PYTHONPATH_LINE not in setup:
            self.params["setup"] = [_PYTHONPATH_LINE, *setup]

    def after(self, executor, job_ids: Sequence[str], name: str) -> None:
        base = dict(self.params.get("additional_parameters") or {})
        if job_ids:
            base["dependency"] = "afterok:" + ":".join(job_ids)
            base.setdefault("kill-on-invalid-dep", "yes")
        executor.update_parameters(slurm_additional_parameters=base, name=name)

    def after_all(self, executor, job_ids: Sequence[str], name: str) -> None:
        """The next submission runs once every job of `job_ids` ended, however (the report after a launch)."""
        base = dict(self.params.get("additional_parameters") or {})
        base.update(dependency="afterany:" + ":".join(job_ids))
        base.pop("kill-on-invalid-dep", None)
        executor.update_parameters(slurm_additional_parameters=base, name=name, tasks_per_node=1, nodes=1)

    def attach(self, sweep_dir: Path, points: list) -> dict[tuple[str, int], Any]:
        """Grid points whose job from an earlier launch is still queued or running wait for that job (their
        `job` is set, `attached`). Returns the seeds other points need whose job from an earlier launch is still
        live, (trajectory, D) -> that job: the plan reuses it instead of submitting a second seed job."""
        import submitit

        from .launch_plan import live_seeds, still_queued
        from .status import latest_jobs, latest_seed_jobs, scheduler_states

        latest = latest_jobs(sweep_dir)
        wanted = {p.run_id: latest[p.run_id] for p in points if not p.done and p.run_id in latest}
        needed = {(p.trajectory_id, p.seed_tokens) for p in points if not p.done and not p.seed_ready}
        seeds = {k: e for k, e in latest_seed_jobs(sweep_dir).items() if k in needed}
        if not wanted and not seeds:
            return {}
        states = scheduler_states([e["job_id"] for e in [*wanted.values(), *seeds.values()]])
        for p, entry, state in still_queued(points, wanted, states):
            p.job = submitit.SlurmJob(folder=entry["folder"], job_id=entry["job_id"])
            p.attached = True
            print(f"splitsweep: #{p.idx} is still {state.lower()} as job {entry['job_id']} from an earlier "
                  f"launch; waiting for it instead of submitting it again", flush=True)
        queued = {}
        for (trajectory, tokens), (entry, state) in live_seeds(points, seeds, states).items():
            queued[(trajectory, tokens)] = submitit.SlurmJob(folder=entry["folder"], job_id=str(entry["job_id"]))
            print(f"splitsweep: seed {trajectory} D={tokens:,} is still {state.lower()} as job {entry['job_id']} "
                  f"from an earlier launch; its experts wait for it instead of a new seed job", flush=True)
        return queued

    def refusal(self, err: Exception) -> str | None:
        if "submission failed" not in str(err).lower():
            return None
        return submission_error(err, self.params)

    def settled(self, jobs: Sequence) -> bool:
        # sacct can trail the scheduler: believe "done" only when squeue has none of them either
        from .status import is_alive, scheduler_states

        return not any(is_alive(state) for state, _ in scheduler_states([j.job_id for j in jobs]).values())


# sbatch's refusal -> the launcher setting to look at.
_SETTINGS = [
    ("invalid partition", "hydra.launcher.partition"),
    ("memory specification", "hydra.launcher.mem_gb (or mem_per_cpu / mem_per_gpu)"),
    ("more processors requested", "hydra.launcher.cpus_per_task x tasks_per_node"),
    ("node count specification", "hydra.launcher.nodes"),
    ("invalid account", "hydra.launcher.account"),
    ("invalid qos", "hydra.launcher.qos"),
    ("time limit", "hydra.launcher.timeout_min"),
    ("invalid generic resource", "hydra.launcher.gpus_per_node / gres"),
    ("invalid gres", "hydra.launcher.gpus_per_node / gres"),
    ("requested node configuration is not available", "hydra.launcher (cpus_per_task, mem_gb, gpus_per_node, "
                                                        "constraint)"),
    ("unrecognized option", "hydra.launcher.additional_parameters"),
    ("invalid dependency", "hydra.launcher.additional_parameters.dependency"),
]


def submission_error(err: Exception, params: dict) -> str:
    """A one-paragraph explanation of why sbatch refused a job, naming the launcher setting."""
    text = str(err)
    lines = [line.strip() for line in text.splitlines() if "error" in line.lower() and line.strip()]
    reason = (lines[-1] if lines else text.strip().splitlines()[-1] if text.strip() else repr(err))
    reason = reason.split("error:", 1)[-1].strip() if "error:" in reason else reason
    hits = [setting for key, setting in _SETTINGS if key in text.lower()]
    msg = f"SLURM refused the job: {reason}"
    if hits:
        setting = hits[0]
        first = setting.split()[0]
        key = first.rsplit(".", 1)[-1]
        value = params.get(key, None)
        msg += f". Check {setting}" + (f" (now {value!r})" if first.startswith("hydra.launcher.") and key in params else "")
    return msg + ". Nothing of this launch is left in the queue."


BACKENDS = {b.name: b for b in (LocalBackend, SlurmBackend)}
