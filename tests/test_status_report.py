"""The status command knows the whole grid a launch planned (launches.jsonl, written before anything runs):
points not started are pending, each point is labelled with its own overrides, and nothing is planned."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splitsweep import status as st
from splitsweep.plan import make_plan
from splitsweep.store import FileLock
from tests.helpers import REPO, TINY, TOKENS_PER_STEP, compose_cfg, run_cli

T = TOKENS_PER_STEP


def sweep_dir(root: Path) -> Path:
    return root / "sweeps" / "test"


def by_state(statuses) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in statuses:
        out.setdefault(s.state, []).append(s)
    return out


def planned_labels(root: Path) -> dict[str, str]:
    """run_id -> its overrides, as the launch planned them."""
    lines = (sweep_dir(root) / "launches.jsonl").read_text().splitlines()
    return {p["run_id"]: " ".join(p["overrides"]) for line in lines for p in json.loads(line)["points"]}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} after {timeout}s")


def test_partly_run_grid_shows_every_point(tmp_path):
    """#0 recorded, #1 running (its seed is locked by this test), #2 not reached yet."""
    grid = [f"split.budget_tokens={4 * T}", "split.pretrain_fraction=0,0.5,1", "split.expert_domain=d0"]
    seed = make_plan(compose_cfg(tmp_path, f"split.budget_tokens={4 * T}", "split.pretrain_fraction=0.5",
                                 "split.expert_domain=d0"))
    lock = FileLock(tmp_path / "store" / "seeds" / seed.trajectory_id / ".lock", stale_s=120).acquire()
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPLITSWEEP_OUTPUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "splitsweep", "-m", "report.enabled=false", *TINY, *grid],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (sweep_dir(tmp_path) / "runs" / seed.run_id / "run.json").exists() or proc.poll() is not None,
                 180, "grid point #1 did not start")
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        statuses = st.collect(sweep_dir(tmp_path), scheduler=False)
        states = by_state(statuses)
        assert sorted(states) == ["done", "pending", "running"] and all(len(v) == 1 for v in states.values())
        assert states["running"][0].run_id == seed.run_id
        assert "split.pretrain_fraction=1" in states["pending"][0].label.split()
        assert "not started yet" in states["pending"][0].detail
        labels = planned_labels(tmp_path)
        assert {s.run_id: s.label for s in statuses} == labels
        table = st.format_table(statuses, sweep_dir(tmp_path))
        assert "3 grid points: 1 done, 1 running, 1 pending, 0 failed" in table
        assert "all grid points are recorded" not in table
        lock.release()
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
    finally:
        lock.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    table = st.format_table(st.collect(sweep_dir(tmp_path), scheduler=False), sweep_dir(tmp_path))
    assert "3 grid points: 3 done, 0 running, 0 pending, 0 failed" in table and "all grid points are recorded" in table


def test_failed_point_is_labelled_with_its_own_overrides_and_nothing_is_planned(tmp_path, monkeypatch):
    grid = [f"split.budget_tokens={8 * T}", "split.pretrain_fraction=0", "split.expert_domain=d0",
            "train.grad_clip=1e30", "train.lr=3e-3,1e12,2e-3"]  # lr 1e12: the loss is nan at step 2
    proc = run_cli(tmp_path, "-m", "report.enabled=false", *TINY, *grid, check=False)
    assert proc.returncode != 0 and "loss is nan" in proc.stderr, proc.stderr[-3000:]

    def no_planning(*args, **kwargs):
        raise AssertionError("status planned a grid point")

    monkeypatch.setattr("splitsweep.plan.make_plan", no_planning)
    before = sorted((p, p.stat().st_mtime) for p in sweep_dir(tmp_path).rglob("*"))
    statuses = st.collect(sweep_dir(tmp_path), scheduler=False)
    assert sorted((p, p.stat().st_mtime) for p in sweep_dir(tmp_path).rglob("*")) == before  # read-only
    states = by_state(statuses)
    assert sorted((k, len(v)) for k, v in states.items()) == [("done", 2), ("failed", 1)]
    (failed,) = states["failed"]
    lr = [o for o in failed.label.split() if o.startswith("train.lr=")]
    assert len(lr) == 1 and float(lr[0].split("=")[1]) == 1e12, failed.label
    assert "loss is nan" in failed.detail and failed.log and Path(failed.log).exists()
    for done in states["done"]:
        assert [float(o.split("=")[1]) for o in done.label.split() if o.startswith("train.lr=")] in ([3e-3], [2e-3])
    table = st.format_table(statuses, sweep_dir(tmp_path))
    assert "3 grid points: 2 done, 0 running, 0 pending, 1 failed" in table


def write_launch(d: Path, pid: int, points: list[tuple[str, str]], at: float) -> None:
    entry = {"time": at, "launcher": "sequential", "argv": ["splitsweep/__main__.py", "-m", "x=1,2,3"],
             "host": os.uname().nodename, "pid": pid, "seeds": [],
             "points": [{"idx": i, "overrides": [f"x={label}"], "dirname": f"jobs/x={label}", "run_id": run_id,
                         "state_at_launch": "queued", "job_id": None} for i, (run_id, label) in enumerate(points)]}
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "launches.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def start_job(d: Path, run_id: str, label: str) -> None:
    hydra = d / "jobs" / f"x={label}" / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "config.yaml").write_text("{}\n")
    (hydra / "overrides.yaml").write_text(f"- x={label}\n")
    (d / "runs" / run_id).mkdir(parents=True)
    (d / "runs" / run_id / "run.json").write_text(json.dumps({"run_id": run_id}))


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_sequential_launch_process_decides(tmp_path, dead_pid):
    """Alive: points it started before the current one failed, the current one runs, the rest wait.
    Ended: a started point without records failed at once (not 'running' for --stale-s), the rest are pending."""
    alive, ended = tmp_path / "alive", tmp_path / "ended"
    for d, pid in ((alive, os.getpid()), (ended, dead_pid)):
        write_launch(d, pid, [("r0", "0"), ("r1", "1"), ("r2", "2")], time.time() - 5)
        (d / "results.jsonl").write_text("")
        start_job(d, "r0", "0")
        time.sleep(0.05)
        start_job(d, "r1", "1")
    got = {s.run_id: s for s in st.collect(alive, scheduler=False)}
    assert [got[r].state for r in ("r0", "r1", "r2")] == ["failed", "running", "pending"]
    assert "went on to the next grid point" in got["r0"].detail
    assert [got[r].label for r in ("r0", "r1", "r2")] == ["x=0", "x=1", "x=2"]
    assert "all grid points are recorded" not in st.format_table(list(got.values()), alive)
    got = {s.run_id: s for s in st.collect(ended, scheduler=False)}
    assert [got[r].state for r in ("r0", "r1", "r2")] == ["failed", "failed", "pending"]
    assert f"pid {dead_pid}" in got["r1"].detail and "ended" in got["r2"].detail


def test_running_points_are_not_all_recorded(tmp_path):
    d = tmp_path / "s"
    write_launch(d, os.getpid(), [("r0", "0"), ("r1", "1")], time.time() - 5)
    (d / "results.jsonl").write_text(json.dumps({"run_id": "r0", "eval_domain": "d0", "eval_loss": 1.0}) + "\n")
    start_job(d, "r1", "1")
    statuses = st.collect(d, scheduler=False)
    table = st.format_table(statuses, d)
    assert "2 grid points: 1 done, 1 running, 0 pending, 0 failed" in table
    assert "all grid points are recorded" not in table
