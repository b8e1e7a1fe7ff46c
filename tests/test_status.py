"""The status command's decisions, on hand-made sweep directories (no training, no cluster)."""
import json
import os
import time

import pytest

from splitsweep import status as st


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def rows(run_id, n=5):
    return "".join(json.dumps({"run_id": run_id, "eval_domain": f"d{i}", "eval_loss": 1.0}) + "\n" for i in range(n))


@pytest.fixture
def sweep(tmp_path):
    d = tmp_path / "sweeps" / "s"
    folder = d / ".submitit"
    points = []
    for i, run_id in enumerate(["aaaa", "bbbb", "cccc", "dddd", "eeee"]):
        job_id = f"10_{i}" if run_id != "dddd" else None
        points.append({"idx": i, "overrides": [f"split.expert_domain=d{i}"], "dirname": f"jobs/p{i}",
                       "run_id": run_id, "trajectory_id": "t", "seed_tokens": 256, "job_id": job_id,
                       "state_at_launch": "submitted", "seed_job_id": "9",
                       "folder": str(folder / str(job_id)), "stdout": str(folder / f"{job_id}/{job_id}_0_log.out"),
                       "stderr": str(folder / f"{job_id}/{job_id}_0_log.err")})
    write(d / "launches.jsonl", json.dumps({"launcher": "slurm", "argv": ["splitsweep/__main__.py", "-m", "x=1,2"],
                                            "seeds": [{"job_id": "9", "stderr": str(folder / "9/9_0_log.err")}],
                                            "points": points}) + "\n")
    write(d / "results.jsonl", rows("aaaa"))
    write(d / "runs" / "bbbb" / "progress" / "meta.json", {"step": 7})
    write(folder / "10_2" / "10_2_0_log.err", "Traceback ...\n")
    return d


def test_scheduler_and_records_decide(sweep, monkeypatch):
    monkeypatch.setattr(st, "scheduler_states", lambda ids: {
        "10_0": ("COMPLETED", "None"), "10_1": ("RUNNING", "None"), "10_2": ("CANCELLED by 0", "None"),
        "10_4": ("PENDING", "Dependency"), "9": ("RUNNING", "None")})
    got = {s.run_id: s for s in st.collect(sweep)}
    assert got["aaaa"].state == "done" and got["aaaa"].detail == "5 rows"
    assert got["bbbb"].state == "running" and got["bbbb"].detail == "step 7"
    assert got["cccc"].state == "failed" and got["cccc"].scheduler_state == "CANCELLED by 0"
    assert got["cccc"].log == str(sweep / ".submitit" / "10_2" / "10_2_0_log.err")
    assert got["dddd"].state == "pending" and got["dddd"].detail == "not submitted"
    assert got["eeee"].state == "pending" and got["eeee"].detail == "waits for seed job 9"
    table = st.format_table(list(got.values()), sweep)
    assert "5 grid points: 1 done, 1 running, 2 pending, 1 failed" in table
    assert "log: " + str(sweep / ".submitit" / "10_2" / "10_2_0_log.err") in table
    assert "re-run `python -m splitsweep -m x=1,2`" in table


def test_dependency_never_satisfied_is_a_failure_with_the_seed_log(sweep, monkeypatch):
    monkeypatch.setattr(st, "scheduler_states", lambda ids: {"10_1": ("PENDING", "DependencyNeverSatisfied")})
    got = {s.run_id: s for s in st.collect(sweep)}
    assert got["bbbb"].state == "failed" and "seed job 9 failed" in got["bbbb"].detail
    assert got["bbbb"].log == str(sweep / ".submitit" / "9" / "9_0_log.err")


def test_a_completed_job_without_records_is_a_failure(sweep, monkeypatch):
    monkeypatch.setattr(st, "scheduler_states", lambda ids: {"10_1": ("COMPLETED", "None")})
    got = {s.run_id: s for s in st.collect(sweep)}
    assert got["bbbb"].state == "failed" and "without writing records" in got["bbbb"].detail


def test_without_a_scheduler_run_dirs_decide(tmp_path):
    d = tmp_path / "sweep"
    write(d / "results.jsonl", rows("done1"))
    write(d / "runs" / "fail1" / "run.json", {"run_id": "fail1", "config": {"split": {"expert_domain": "d0"}}})
    write(d / "runs" / "fail1" / "status.json", {"status": "failed", "message": "loss is nan at step 3"})
    write(d / "runs" / "live1" / "run.json", {"run_id": "live1", "config": {"split": {"expert_domain": "d1"}}})
    write(d / "runs" / "live1" / "progress" / "meta.json", {"step": 12})
    write(d / "runs" / "dead1" / "run.json", {"run_id": "dead1", "config": {"split": {"expert_domain": "d2"}}})
    old = time.time() - 3600
    for p in [d / "runs" / "dead1", d / "runs" / "dead1" / "run.json"]:
        os.utime(p, (old, old))
    write(d / "runs" / "pre1" / "run.json", {"run_id": "pre1", "config": {"split": {"expert_domain": "d3"}}})
    write(d / "runs" / "pre1" / "progress" / "meta.json", {"step": 5})
    write(d / "runs" / "pre1" / "status.json", {"status": "preempted", "message": "stopped by signal 15"})
    for p in [d / "runs" / "pre1", *(d / "runs" / "pre1").rglob("*")]:
        os.utime(p, (old, old))
    got = {s.run_id: s for s in st.collect(d, scheduler=False)}
    assert got["done1"].state == "done"
    assert got["fail1"].state == "failed" and got["fail1"].detail == "loss is nan at step 3"
    assert got["live1"].state == "running" and got["live1"].detail == "step 12"
    assert got["dead1"].state == "failed" and "no records" in got["dead1"].detail
    assert got["pre1"].state == "failed" and "checkpoint at step 5" in got["pre1"].detail
    assert got["fail1"].label == "split.expert_domain=d0"


def test_cli_json_and_missing_dir(tmp_path, capsys):
    d = tmp_path / "sweep"
    write(d / "results.jsonl", rows("r1"))
    assert st.main([str(d), "--json", "--no-scheduler"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["state"] == "done"
    assert st.main([str(tmp_path / "nope")]) == 2


def test_a_job_slurm_still_holds_in_any_live_state_is_waited_for_not_resubmitted():
    # The launcher's decision, with a fake scheduler: every state of status.ALIVE (REQUEUE_HOLD included)
    # attaches the earlier job; a finished, failed or unknown one is submitted again.
    from splitsweep.launch_plan import still_queued
    from splitsweep.slurm import Point
    from splitsweep.status import ALIVE

    states = {**{f"j{i}": (s, "") for i, s in enumerate(ALIVE)}, "done": ("COMPLETED", ""),
              "failed": ("FAILED", ""), "cancelled": ("CANCELLED by 0", ""), "gone": ("", "")}
    points = [Point(i, [], f"d{i}", f"run-{job}", "t", 0, True, False) for i, job in enumerate(states)]
    points.append(Point(99, [], "d99", "run-new", "t", 0, True, False))  # never launched before
    latest = {p.run_id: {"job_id": p.run_id[4:], "folder": "/x"} for p in points if p.run_id != "run-new"}
    attached = {p.run_id[4:]: state for p, _, state in still_queued(points, latest, states)}
    assert set(attached) == {f"j{i}" for i in range(len(ALIVE))} and "REQUEUE_HOLD" in attached.values()
    recorded = Point(100, [], "d100", "run-j0", "t", 0, True, True)  # recorded meanwhile: nothing to wait for
    assert still_queued([recorded], latest, states) == []


# squeue(1) JOB STATE CODES, every one; the terminal ones end a job for good.
SLURM_STATES = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "CONFIGURING", "COMPLETING", "DEADLINE", "FAILED", "NODE_FAIL",
                "OUT_OF_MEMORY", "PENDING", "PREEMPTED", "RUNNING", "RESV_DEL_HOLD", "REQUEUE_FED", "REQUEUE_HOLD",
                "REQUEUED", "RESIZING", "REVOKED", "SIGNALING", "SPECIAL_EXIT", "STAGE_OUT", "STOPPED", "SUSPENDED",
                "TIMEOUT")
TERMINAL = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "REVOKED",
            "TIMEOUT"}


def test_alive_is_every_state_slurm_may_still_run_a_job_in_and_covers_submitits_incomplete_ones():
    from submitit.core.core import InfoWatcher

    assert {s for s in SLURM_STATES if st.is_alive(s)} == set(SLURM_STATES) - TERMINAL
    assert set(st.ALIVE) <= set(SLURM_STATES) and set(st.ALIVE.values()) <= {"pending", "running"}

    class Says(InfoWatcher):  # submitit's own decision, on a state given here instead of sacct's
        def get_state(self, job_id, mode="standard"):
            return job_id

    incomplete = {s for s in SLURM_STATES if not Says().is_done(s)}
    assert "PREEMPTED" in incomplete and incomplete <= set(st.ALIVE)


def test_a_seed_job_slurm_still_holds_is_reused_unless_its_dependency_can_never_be_met():
    # The launcher's seed decision (slurm.live_seeds), with a fake scheduler: one not-ready point per state.
    from splitsweep.launch_plan import live_seeds
    from splitsweep.slurm import Point

    states = {**{f"j{i}": (s, "") for i, s in enumerate(st.ALIVE)}, "done": ("COMPLETED", ""),
              "failed": ("FAILED", ""), "cancelled": ("CANCELLED by 0", ""), "gone": ("", ""),
              "never": ("PENDING", "DependencyNeverSatisfied")}
    points = [Point(i, [], f"d{i}", f"run{i}", f"t-{job}", 256, False, False) for i, job in enumerate(states)]
    points.append(Point(99, [], "d99", "run99", "t-new", 256, False, False))  # no seed job launched before
    latest = {(f"t-{job}", 256): {"job_id": job, "folder": "/x/%j"} for job in states}
    reused = {key[0][2:]: state for key, (_, state) in live_seeds(points, latest, states).items()}
    assert reused == {f"j{i}": s for i, s in enumerate(st.ALIVE)} and reused["j2"] == "REQUEUE_HOLD"
    # A point recorded, attached to its own live job, or whose seed is stored needs no seed job.
    done, ready = Point(1, [], "a", "r1", "t-j0", 256, False, True), Point(2, [], "b", "r2", "t-j0", 256, True, False)
    attached = Point(3, [], "c", "r3", "t-j0", 256, False, False, attached=True)
    assert live_seeds([done, ready, attached], latest, states) == {}


def test_a_torn_or_foreign_line_of_the_manifest_is_skipped(sweep):
    with open(sweep / "launches.jsonl", "a") as f:
        f.write('[1, 2]\n{"launcher": "slurm", "points": [{"idx": 0, "run_id": "ffff", "job_')  # a killed launcher
    assert [len(launch["points"]) for launch in st.launches(sweep)] == [5]
    assert set(st.latest_jobs(sweep)) == {"aaaa", "bbbb", "cccc", "eeee"}
