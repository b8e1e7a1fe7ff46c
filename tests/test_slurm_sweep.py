"""`python -m splitsweep -m hydra/launcher=submitit_slurm ...` against the real local SLURM cluster
(fixture `slurm_cluster`, tests/slurm_cluster.py): same records as a local launch, submit-and-exit (its report
job, and a re-run that reuses a held seed job), a 2-task FSDP job,
preemption and requeue, a cancelled job seen by the status command and re-run alone, bad settings, and the
seeds-first mechanism against the naive one (experts waiting on the seed lock).

Tiny configs (27k-parameter Llama, batches of 4 x 32 tokens): a job is mostly Python and torch start-up.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splitsweep.records import read_rows
from tests.helpers import REPO, TINY, TOKENS_PER_STEP, run_cli

T = TOKENS_PER_STEP
SLURM = pytest.mark.slurm
NAIVE = "hydra.launcher._target_=hydra_plugins.splitsweep_launcher.SubmititSlurmLauncher"  # submitit's own


def slurm_args(cluster, *extra: str, cpus: int = 1, mem_gb: int = 1) -> list[str]:
    return ["-m", "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={cluster.partition}",
            f"hydra.launcher.mem_gb={mem_gb}", f"hydra.launcher.cpus_per_task={cpus}", "hydra.launcher.timeout_min=15",
            "train.threads=1", "report.enabled=false", *TINY, *extra]


def sweep_dir(root: Path) -> Path:
    return root / "sweeps" / "test"


def last_launch(root: Path) -> dict:
    return json.loads((sweep_dir(root) / "launches.jsonl").read_text().splitlines()[-1])


def status(root: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "splitsweep.status", str(sweep_dir(root)), "--json"], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def by_point(rows: list[dict]) -> dict:
    return {(r["pretrain_tokens"], r["special_tokens"], r["expert_domain"], r["eval_domain"]): r for r in rows}


def popen_cli(root: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPLITSWEEP_OUTPUT": str(root)}
    return subprocess.Popen([sys.executable, "-m", "splitsweep", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def training_started(log: Path, label: str = "[expert") -> bool:
    """The job printed its first progress line (train.Progress prints it at the first step)."""
    try:
        text = log.read_text()
    except FileNotFoundError:
        return False
    return any(label in line and "] step " in line for line in text.splitlines())


# Steps of a job that must still be training when the test signals it: a job is signalled within a
# fraction of a second of its first progress line, and 3000 steps of TINY take seconds even on a fast
# machine (about 5 ms a step on one thread of a busy 2-core machine).
LONG = 3000


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what} after {timeout}s")


@pytest.fixture
def queue_clean(slurm_cluster):
    """Cancel whatever a test left queued under its own folders."""
    roots: list[Path] = []
    yield roots
    for root in roots:
        for launch in (sweep_dir(root) / "launches.jsonl",):
            if launch.exists():
                for line in launch.read_text().splitlines():
                    entry = json.loads(line)
                    ids = [p["job_id"] for p in entry["points"] if p.get("job_id")]
                    ids += [s["job_id"] for s in entry.get("seeds", [])]
                    for job_id in ids:
                        slurm_cluster.run("scancel", str(job_id), check=False)


# ------------------------------------------------------------------------------------------ no cluster needed
def test_run_dir_of_another_grid_point_is_refused(tmp_path):
    """A run directory whose run.json names another grid point: clear error, exit 2, nothing trained."""
    args = [*TINY, f"split.pretrain_tokens={2 * T}", f"split.special_tokens={2 * T}", "split.expert_domain=d0"]
    run_cli(tmp_path, *args)
    (run_dir,) = (sweep_dir(tmp_path) / "runs").iterdir()
    identity = json.loads((run_dir / "run.json").read_text())
    identity["run_id"] = "0123456789abcdef"
    (run_dir / "run.json").write_text(json.dumps(identity))
    (sweep_dir(tmp_path) / "results.jsonl").unlink()  # not recorded: the job would train again
    proc = run_cli(tmp_path, *args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{run_dir} belongs to run 0123456789abcdef, not to this grid point ({run_dir.name})" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert read_rows(sweep_dir(tmp_path)) == []


# ------------------------------------------------------------------------------------------ the cluster
@SLURM
def test_slurm_sweep_matches_local_launch(slurm_cluster, queue_clean, tmp_path):
    grid = [f"split.budget_tokens={8 * T}", "split.pretrain_fraction=0.25,0.5", "split.expert_domain=d0"]
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    queue_clean.append(cluster)
    run_cli(local, "-m", "report.enabled=false", *TINY, *grid)
    started = time.monotonic()
    out = run_cli(cluster, *slurm_args(slurm_cluster, *grid), timeout=300)
    wall = time.monotonic() - started
    a, b = by_point(read_rows(sweep_dir(local))), by_point(read_rows(sweep_dir(cluster)))
    assert sorted(a) == sorted(b) and len(a) == 2 * 5
    for key in a:
        assert b[key]["run_id"] == a[key]["run_id"]
        assert b[key]["eval_loss"] == pytest.approx(a[key]["eval_loss"], rel=1e-4, abs=1e-5), key
    launch = last_launch(cluster)
    assert launch["launcher"] == "slurm"
    assert [s["tokens"] for s in launch["seeds"]] == [2 * T, 4 * T]  # one trajectory, D=2T then extended to 4T
    jobs = [p["job_id"] for p in launch["points"]] + [s["job_id"] for s in launch["seeds"]]
    assert all(slurm_cluster.sacct_state(j).startswith("COMPLETED") for j in jobs)
    assert [s["state"] for s in status(cluster)] == ["done", "done"]
    # The seed was trained once, by the seed jobs, in two segments (0->2, 2->4); experts only trained D'.
    segs = [json.loads(line) for f in (cluster / "store" / "seeds").glob("*/segments.jsonl")
            for line in f.read_text().splitlines()]
    assert sorted((s["from_step"], s["to_step"]) for s in segs) == [(0, 2), (2, 4)]
    assert {r["tokens_trained"] for r in read_rows(sweep_dir(cluster))} == {6 * T, 4 * T}
    # Re-running the same command submits nothing.
    again = run_cli(cluster, *slurm_args(slurm_cluster, *grid), timeout=120)
    assert "2 already recorded, 0 still in the queue, 0 to submit" in again.stdout
    print(f"\nslurm sweep of 2 experts + 2 seed jobs: {wall:.1f}s wall")


@SLURM
def test_submit_and_exit_queues_the_launch_and_the_report_and_status_follows_it(slurm_cluster, queue_clean, tmp_path):
    """hydra.launcher.wait=false: the command returns with the jobs queued; status reads their files and the
    manifest; the report job builds the report after them; re-running submits nothing."""
    grid = [f"split.budget_tokens={8 * T}", "split.pretrain_fraction=0.25,0.5", "split.expert_domain=d0"]
    root = tmp_path / "slurm"
    queue_clean.append(root)
    args = [a for a in slurm_args(slurm_cluster, *grid) if a != "report.enabled=false"]
    args += ["hydra.launcher.wait=false", "report.n_bootstrap=2"]
    out = run_cli(root, *args, timeout=120)
    assert "not waiting (hydra.launcher.wait=false)" in out.stdout, out.stdout
    launch = last_launch(root)
    assert launch["report_job"] and all(p["job_id"] for p in launch["points"])
    assert not read_rows(sweep_dir(root)) or len(read_rows(sweep_dir(root))) < 10  # it returned before the end
    deadline = time.monotonic() + 600
    while not slurm_cluster.sacct_state(launch["report_job"]["job_id"]).startswith(("COMPLETED", "FAILED")):
        assert time.monotonic() < deadline, "the report job never ended"
        time.sleep(1)
    assert slurm_cluster.sacct_state(launch["report_job"]["job_id"]).startswith("COMPLETED")
    assert [s["state"] for s in status(root)] == ["done", "done"]
    report = sweep_dir(root) / "report"
    assert (report / "report.md").exists() or "no report:" in (report / "no_report.txt").read_text()
    table = subprocess.run([sys.executable, "-m", "splitsweep.status", str(sweep_dir(root))], cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert "report: job" in table.stdout and "completed" in table.stdout, table.stdout
    again = run_cli(root, *args, timeout=120)
    assert "2 already recorded, 0 still in the queue, 0 to submit" in again.stdout


@SLURM
def test_a_held_seed_job_is_reused_when_the_launch_is_run_again(slurm_cluster, queue_clean, tmp_path):
    """Submit and exit, with every job held (sbatch --hold) and then the experts cancelled: running the command
    again submits the two experts after the seed job the first launch left held in the queue, and no second
    seed job. Once the seed is released, both experts complete and the seed was trained once."""
    grid = [f"split.budget_tokens={8 * T}", "split.pretrain_fraction=0.5", "split.expert_domain=d0,d1",
            "hydra.launcher.wait=false"]
    queue_clean.append(tmp_path)
    held = run_cli(tmp_path, *slurm_args(slurm_cluster, *grid, "+hydra.launcher.additional_parameters.hold=true"),
                   timeout=120)
    assert "not waiting (hydra.launcher.wait=false)" in held.stdout, held.stdout
    first = last_launch(tmp_path)
    (seed,) = first["seeds"]
    for point in first["points"]:  # array tasks that never started: gone from the queue, maybe not in sacct
        slurm_cluster.run("scancel", point["job_id"])
        wait_for(lambda: not slurm_cluster.run("squeue", "-h", "-r", "-j", point["job_id"], "-o", "%T",
                                               check=False).stdout.strip(), 60, f"job {point['job_id']} stayed")
    assert slurm_cluster.run("squeue", "-h", "-j", seed["job_id"], "-o", "%T %r").stdout.split() == \
        ["PENDING", "JobHeldUser"]  # held: it cannot start

    again = run_cli(tmp_path, *slurm_args(slurm_cluster, *grid), timeout=120)
    assert "0 already recorded, 0 still in the queue, 2 to submit" in again.stdout, again.stdout
    assert f"still pending as job {seed['job_id']} from an earlier launch" in again.stdout, again.stdout
    assert "submitted first" not in again.stdout  # no second seed job
    second = last_launch(tmp_path)
    assert second["seeds"] == [] and {p["seed_job_id"] for p in second["points"]} == {seed["job_id"]}
    slurm_cluster.run("scontrol", "release", seed["job_id"])
    wait_for(lambda: [s["state"] for s in status(tmp_path)] == ["done", "done"], 300, "the experts did not finish",
             poll=1.0)
    assert len({r["run_id"] for r in read_rows(sweep_dir(tmp_path))}) == 2
    (segments,) = (tmp_path / "store" / "seeds").glob("*/segments.jsonl")
    assert len(segments.read_text().splitlines()) == 1  # the seed was trained by the one held job


@SLURM
def test_two_task_job_trains_one_model_with_fsdp(slurm_cluster, queue_clean, tmp_path):
    point = [f"split.budget_tokens={6 * T}", "split.pretrain_fraction=0", "split.expert_domain=d1"]
    root, single = tmp_path / "two", tmp_path / "one"
    queue_clean.append(root)
    run_cli(single, *TINY, *point)
    run_cli(root, *slurm_args(slurm_cluster, *point, "hydra.launcher.tasks_per_node=2", mem_gb=2), timeout=300)
    rows = read_rows(sweep_dir(root))
    assert len(rows) == 5  # rank 0 alone recorded
    (run_dir,) = (sweep_dir(root) / "runs").iterdir()
    # DCP wrote one shard per rank: the model was sharded across the two SLURM tasks.
    assert sorted(p.name for p in (run_dir / "final").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    ref = by_point(read_rows(sweep_dir(single)))
    for key, row in by_point(rows).items():
        assert row["eval_loss"] == pytest.approx(ref[key]["eval_loss"], rel=1e-4), key
    (point_entry,) = last_launch(root)["points"]
    folder = Path(point_entry["folder"])
    logs = {p.name: p.read_text() for p in folder.glob("*_log.out")}
    assert len(logs) == 2, sorted(logs)
    rank0 = next(text for name, text in logs.items() if name.endswith("_0_log.out"))
    rank1 = next(text for name, text in logs.items() if name.endswith("_1_log.out"))
    assert "step 6/6" in rank0 and "step 6/6" not in rank1  # progress is printed by rank 0 only


@SLURM
def test_preempted_job_resumes_from_its_checkpoint(slurm_cluster, queue_clean, tmp_path):
    total = LONG
    point = [f"split.budget_tokens={total * T}", "split.pretrain_fraction=0", "split.expert_domain=d2",
             f"train.checkpoint_every_steps={10 * total}"]  # the only checkpoint is the one the signal asks for
    queue_clean.append(tmp_path)
    proc = popen_cli(tmp_path, *slurm_args(slurm_cluster, *point))
    try:
        launches = sweep_dir(tmp_path) / "launches.jsonl"
        wait_for(launches.exists, 120, "no launch written")
        job_id = last_launch(tmp_path)["points"][0]["job_id"]
        log = Path(last_launch(tmp_path)["points"][0]["stdout"])
        slurm_cluster.wait_for_state(job_id, ["RUNNING"], timeout=120)
        # Signal as soon as training runs (its first step line): the job has thousands of steps to go.
        wait_for(lambda: training_started(log), 120, "the expert did not start training", poll=0.05)
        slurm_cluster.run("scancel", "--signal=USR2", job_id)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-4000:]
    text = log.read_text() + log.with_name(log.name.replace("_log.out", "_log.err")).read_text()
    assert "stopped by signal 12" in text, text[-3000:]  # our handler saved the checkpoint, then
    assert "Requeued job" in text, text[-3000:]  # handed the signal to submitit, which requeued the job
    assert "resuming at step" in text, text[-3000:]
    resumed_at = int(text.split("resuming at step ")[1].split("/")[0])
    assert 0 < resumed_at < total
    rows = read_rows(sweep_dir(tmp_path))
    assert len(rows) == 5 and len({r["run_id"] for r in rows}) == 1  # one set of records
    # The requeued job trained only the steps after its checkpoint: nothing restarted from zero.
    assert rows[0]["tokens_trained"] == (total - resumed_at) * T
    assert json.loads((sweep_dir(tmp_path) / "runs" / rows[0]["run_id"] / "status.json").read_text())["status"] == "done"
    print(f"\npreempted at step {resumed_at}/{total}; the requeued job trained {total - resumed_at} steps")


@SLURM
def test_cancelled_job_is_failed_in_status_and_rerun_completes_only_it(slurm_cluster, queue_clean, tmp_path):
    # Two grid points: a short one that completes, and the victim, long enough to be still training when it
    # is cancelled (cancelled once its first step line is out, not merely RUNNING: a short job could finish
    # between the two on a fast machine).
    victim_budget = f"split.budget_tokens={LONG * T}"
    grid = [f"split.budget_tokens={8 * T},{LONG * T}", "split.pretrain_fraction=0", "split.expert_domain=d3",
            f"train.checkpoint_every_steps={10 * LONG}"]  # not TINY's every 2 steps: 1500 checkpoints
    queue_clean.append(tmp_path)
    proc = popen_cli(tmp_path, *slurm_args(slurm_cluster, *grid))
    try:
        wait_for((sweep_dir(tmp_path) / "launches.jsonl").exists, 120, "no launch written")
        points = last_launch(tmp_path)["points"]
        (victim,) = [p for p in points if victim_budget in p["overrides"]]
        slurm_cluster.wait_for_state(victim["job_id"], ["RUNNING"], timeout=120)
        wait_for(lambda: training_started(Path(victim["stdout"])), 120, "the victim did not start training",
                 poll=0.05)
        slurm_cluster.run("scancel", victim["job_id"])
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "1 of 2 grid points failed" in output and victim["job_id"] in output, output[-3000:]
    states = {s["run_id"]: s for s in status(tmp_path)}
    assert states[victim["run_id"]]["state"] == "failed"
    assert states[victim["run_id"]]["scheduler_state"].startswith("CANCELLED")
    assert states[victim["run_id"]]["log"] and Path(states[victim["run_id"]]["log"]).exists()
    assert sorted(s["state"] for s in states.values()) == ["done", "failed"]
    again = run_cli(tmp_path, *slurm_args(slurm_cluster, *grid), timeout=300)
    assert "1 already recorded, 0 still in the queue, 1 to submit" in again.stdout
    assert [p["overrides"] for p in last_launch(tmp_path)["points"] if p["state_at_launch"] == "submitted"] == \
        [victim["overrides"]]
    assert sorted(s["state"] for s in status(tmp_path)) == ["done", "done"]
    assert len(read_rows(sweep_dir(tmp_path))) == 10


@SLURM
@pytest.mark.parametrize("setting, value, expected", [
    ("partition", "no_such_partition", "Check hydra.launcher.partition (now 'no_such_partition')"),
    ("mem_gb", None, "Check hydra.launcher.mem_gb"),
])
def test_bad_launcher_setting_is_a_clear_error(slurm_cluster, queue_clean, tmp_path, setting, value, expected):
    value = value if value is not None else int(slurm_cluster.mem_gb) + 8
    queue_clean.append(tmp_path)
    args = slurm_args(slurm_cluster, f"split.budget_tokens={4 * T}", "split.pretrain_fraction=0.5",
                      "split.expert_domain=d0", f"hydra.launcher.{setting}={value}")
    proc = run_cli(tmp_path, *args, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "splitsweep: error: SLURM refused the job" in proc.stderr and expected in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert slurm_cluster.job_ids() == [] or all(slurm_cluster.sacct_state(j) for j in slurm_cluster.job_ids())


# ------------------------------------------------------------------------------------------ seeds first
def _sacct_times(cluster, ids: list[str]) -> dict[str, tuple[float, float]]:
    out = cluster.run("sacct", "-X", "-n", "-P", "-o", "JobID,Start,End", "-j", ",".join(ids)).stdout
    times = {}
    for line in out.splitlines():
        job_id, start, end = line.split("|")
        parse = lambda s: time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%S"))  # noqa: E731
        times[job_id] = (parse(start), parse(end))
    return times


def _waiting_node_seconds(cluster, root: Path) -> tuple[float, float, int]:
    """(node-seconds that expert jobs held an allocation before their seed existed, without training it
    themselves; node-seconds of every job of the sweep; number of jobs). Single-node jobs: 1 node each."""
    from omegaconf import OmegaConf

    from splitsweep.plan import make_plan

    experts = []  # (run_id, job id, D) from the Hydra job dirs: the launcher records hydra.job.id = SLURM id
    for hydra_dir in sorted(sweep_dir(root).glob("jobs/*/.hydra")):
        plan = make_plan(OmegaConf.load(hydra_dir / "config.yaml"))
        job_id = str(OmegaConf.load(hydra_dir / "hydra.yaml").hydra.job.id)
        experts.append((plan.run_id, job_id, plan.pretrain_tokens))
    seed_dirs = sorted((root / "store" / "seeds").glob("*/tokens_*/meta.json"))
    published = {int(p.parent.name.split("_")[1]): p.stat().st_mtime for p in seed_dirs}
    trainers = {json.loads(line)["run_id"] for f in (root / "store" / "seeds").glob("*/segments.jsonl")
                for line in f.read_text().splitlines()}
    launch = sweep_dir(root) / "launches.jsonl"
    seed_ids = [str(s["job_id"]) for s in last_launch(root).get("seeds", [])] if launch.exists() else []
    times = _sacct_times(cluster, [j for _, j, _ in experts] + seed_ids)
    waiting = 0.0
    for run_id, job_id, d in experts:
        start, end = times[job_id]
        if run_id not in trainers and d in published:
            waiting += max(0.0, min(published[d], end) - start)
    total = sum(end - start for start, end in times.values())
    return waiting, total, len(times)


@SLURM
def test_seeds_first_experts_hold_no_allocation_while_the_seed_trains(slurm_cluster, queue_clean, tmp_path):
    """Naive (all jobs at once, experts wait on the seed lock) against seeds first (afterok dependencies)."""
    # D = 120 batches, D' = 8 batches: the seed is most of the work, as when many experts share one seed.
    grid = [f"split.budget_tokens={128 * T}", "split.pretrain_fraction=0.9375", "split.expert_domain=d0,d1,d2"]
    naive, first = tmp_path / "naive", tmp_path / "first"
    queue_clean += [naive, first]
    results = {}
    for name, root, extra in (("naive", naive, [NAIVE]), ("seeds first", first, [])):
        started = time.monotonic()
        run_cli(root, *slurm_args(slurm_cluster, *grid, *extra), timeout=400)
        wall = time.monotonic() - started
        waiting, total, n_jobs = _waiting_node_seconds(slurm_cluster, root)
        results[name] = (waiting, total, wall, n_jobs)
        assert len(read_rows(sweep_dir(root))) == 3 * 5
    line = "; ".join(f"{k}: {w:.0f} node-s waiting of {t:.0f} node-s in {n} jobs, {wall:.0f}s wall"
                     for k, (w, t, wall, n) in results.items())
    print(f"\nseeds first vs naive: {line}")
    assert results["seeds first"][0] <= 1.0  # sacct times are whole seconds
    assert results["naive"][0] > results["seeds first"][0]
