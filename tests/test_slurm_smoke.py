"""Smoke tests of the real local SLURM cluster through submitit (fixture: tests/slurm_cluster.py).

They prove the paths the trainer and the Hydra sweeps rely on: sbatch round trip, a 2-task job whose ranks
talk through torch.distributed (gloo), clear submission errors for bad settings, and accounting (a
cancelled job is seen as cancelled, instead of submitit waiting forever).
"""

from __future__ import annotations

import os
import sys
import time

import cloudpickle
import pytest
import submitit

pytestmark = pytest.mark.slurm

# The job functions below are defined in this test module, which the job's Python cannot import (pytest
# put tests/ on *its* sys.path only): ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _wait_done(job: submitit.Job, timeout: float) -> None:
    """Poll the scheduler (sacct) until the job is finished; submitit alone polls lazily."""
    deadline = time.monotonic() + timeout
    while not job.done(force_check=True):
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job.job_id} not done after {timeout}s (state {job.state})")
        time.sleep(0.5)


@pytest.fixture
def submitted(slurm_cluster):
    """Register jobs here: any still queued or running at the end of the test is cancelled."""
    jobs: list[submitit.Job] = []
    yield jobs
    for job in jobs:
        if not job.done(force_check=True):
            job.cancel(check=False)


def _whoami(x: int, y: int) -> dict:
    return {
        "sum": x + y,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "ntasks": os.environ.get("SLURM_NTASKS"),
        "repo_on_path": any(os.path.isdir(os.path.join(p, "splitsweep")) for p in sys.path if p),
    }


def test_submitit_function_round_trip(slurm_cluster, submitted, tmp_path):
    ex = slurm_cluster.executor(tmp_path / "submitit", timeout_min=5)
    assert ex.cluster == "slurm"
    job = ex.submit(_whoami, 2, 3)
    submitted.append(job)
    assert isinstance(job, submitit.SlurmJob)
    out = job.result()  # waits; raises with the job's stderr if it failed
    assert out == {"sum": 5, "job_id": job.job_id, "partition": slurm_cluster.partition, "ntasks": "1",
                   "repo_on_path": True}
    # the result file exists before the job ends in accounting; then submitit's view (sacct) must agree
    assert slurm_cluster.wait_for_state(job.job_id, ["COMPLETED", "FAILED", "CANCELLED"], timeout=30) == "COMPLETED"
    deadline = time.monotonic() + 30
    while job.get_info(mode="force").get("State") != "COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.5)  # sacct may trail squeue by a moment
    assert job.get_info(mode="force").get("State") == "COMPLETED"


def _gloo_all_reduce() -> dict:
    import torch
    import torch.distributed as dist
    from submitit.helpers import TorchDistributedEnvironment

    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    dist.init_process_group(backend="gloo", init_method="env://", world_size=env.world_size, rank=env.rank)
    try:
        value = torch.tensor([float(env.rank + 1)])
        dist.all_reduce(value)  # sum over ranks
        gathered = [None] * env.world_size
        dist.all_gather_object(gathered, env.rank)
    finally:
        dist.destroy_process_group()
    return {
        "rank": env.rank,
        "local_rank": env.local_rank,
        "world_size": env.world_size,
        "sum": value.item(),
        "gathered": gathered,
        "master": f"{env.master_addr}:{env.master_port}",
    }


def test_two_tasks_gloo_all_reduce(slurm_cluster, submitted, tmp_path):
    """One job, 2 tasks on the node: each task is a rank (the trainer's FSDP path), ranks all_reduce."""
    assert slurm_cluster.cpus >= 2
    ex = slurm_cluster.executor(tmp_path / "submitit", tasks_per_node=2, cpus_per_task=1, mem_gb=2, timeout_min=5)
    job = ex.submit(_gloo_all_reduce)
    submitted.append(job)
    results = job.results()  # one result per task
    assert [r["rank"] for r in results] == [0, 1]
    assert [r["local_rank"] for r in results] == [0, 1]
    assert all(r["world_size"] == 2 for r in results)
    assert all(r["sum"] == 3.0 for r in results)  # 1 + 2
    assert all(r["gathered"] == [0, 1] for r in results)
    assert results[0]["master"] == results[1]["master"]


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("partition", "invalid partition"),
        ("mem_gb", "memory specification can not be satisfied"),
        ("cpus_per_task", "more processors requested than permitted"),
    ],
)
def test_impossible_request_fails_at_submission(slurm_cluster, submitted, tmp_path, setting, expected):
    """Bad launcher settings must fail at sbatch time with Slurm's reason, not sit pending forever."""
    bad = {
        "partition": {"slurm_partition": "no_such_partition"},
        "mem_gb": {"mem_gb": int(slurm_cluster.mem_gb) + 8},
        "cpus_per_task": {"cpus_per_task": slurm_cluster.cpus + 1},
    }[setting]
    ex = slurm_cluster.executor(tmp_path / "submitit", **bad)
    with pytest.raises(Exception) as info:  # submitit raises FailedJobError carrying sbatch's stderr
        submitted.append(ex.submit(_whoami, 1, 1))
    message = str(info.value).lower()
    assert "batch job submission failed" in message, message
    assert expected in message, message


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "not cancelled"


def test_scancel_is_seen_as_cancelled(slurm_cluster, submitted, tmp_path):
    """Needs accounting: without slurmdbd, submitit never learns that a cancelled job is gone."""
    ex = slurm_cluster.executor(tmp_path / "submitit", timeout_min=5)
    job = ex.submit(_sleep, 300)
    submitted.append(job)
    slurm_cluster.wait_for_state(job.job_id, ["RUNNING"], timeout=60)
    slurm_cluster.run("scancel", job.job_id)
    _wait_done(job, 60)
    assert job.state.startswith("CANCELLED"), job.state
    # result() gives a cancelled job 15 s (for slow file systems) to write a result it never will
    job._results_timeout_s = 1
    with pytest.raises(submitit.core.utils.UncompletedJobError, match="CANCELLED"):
        job.result()
