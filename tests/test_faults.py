"""Never a wrong row, never a lost row, never a stuck point: real processes, real files, real faults.

One test per failure mode of issue #11 (kills at chosen moments, concurrent launches, a full disk, corrupt
shards, stale and stopped lock holders, foreign lines), then a randomized trial of kill -9 over a small sweep.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from splitsweep import checkpoint as ckpt
from splitsweep.distributed import DistEnv
from splitsweep.records import RecordWriteError, append_rows, is_recorded, read_rows, recorded_rows
from splitsweep.store import FileLock, LeaseLost
from tests.helpers import REPO, TINY, TOKENS_PER_STEP, run_cli, segments

T = TOKENS_PER_STEP
ENV1 = DistEnv(0, 1, 0, torch.device("cpu"))


def cli_args(args) -> list[str]:
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags (-m) go before the overrides
    return [*flags, *TINY, *(a for a in args if not a.startswith("-"))]


def run_tiny(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(root, *cli_args(args), env={"OMP_NUM_THREADS": "1"})


def cli_env(root: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "SPLITSWEEP_OUTPUT": str(root), "WANDB_MODE": "disabled",
            "OMP_NUM_THREADS": "1"}


def start(root: Path, *args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "splitsweep", *cli_args(args)], cwd=REPO, env=cli_env(root),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def wait_for(log: Path, text: str, proc: subprocess.Popen | None = None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before printing {text!r}:\n{log.read_text()}")
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {log}:\n{log.read_text()}")


def wait_until(predicate, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) too early:\n{log.read_text()}")
        time.sleep(0.01)
    raise AssertionError(f"timed out:\n{log.read_text()}")


def expert_progress(root: Path):
    return lambda: any(ckpt.is_complete(p) for p in (root / "sweeps" / "test" / "runs").glob("*/progress"))


def losses(root: Path, sweep: str = "test") -> dict[tuple, float]:
    rows = read_rows(root / "sweeps" / sweep)
    keys = [(r["pretrain_tokens"], r["special_tokens"], r["expert_domain"], r["eval_domain"]) for r in rows]
    assert len(keys) == len(set(keys)), "a grid point was recorded twice"
    return dict(zip(keys, (r["eval_loss"] for r in rows)))


def assert_same(a: dict, b: dict, tol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=tol, abs=tol), k


# ---------------------------------------------------------------- 1. a slot refreshed while read
def _refresh(slot: str, n: int) -> None:
    model = torch.nn.Linear(64, 64)
    for step in range(1, n + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(step))
        ckpt.save(Path(slot), model, None, {"step": step}, ENV1, slot=True)


def test_a_reader_never_mixes_two_versions_of_a_refreshed_slot(tmp_path):
    slot = tmp_path / "progress"
    _refresh(str(slot), 1)
    writer = mp.get_context("spawn").Process(target=_refresh, args=(str(slot), 300))
    writer.start()
    model, loads = torch.nn.Linear(64, 64), 0
    while writer.is_alive() or loads < 20:
        meta = ckpt.load(slot, model, None)  # a version removed under the reader is read again at the new one
        values = torch.cat([p.detach().flatten() for p in model.parameters()]).unique()
        assert values.tolist() == [float(meta["step"])], "weights of two steps in one load"
        loads += 1
    writer.join()
    assert writer.exitcode == 0 and loads >= 20
    assert [p.name for p in slot.iterdir() if p.name != ckpt.LATEST][0].startswith("step_000000000300")


def test_second_launch_waits_then_resumes_what_the_killed_first_left(tmp_path):
    """The issue's reproduction: a second launch of a running expert, the first killed when it resumes."""
    args = [f"split.pretrain_tokens={2 * T}", f"split.special_tokens={40 * T}", "split.expert_domain=d1",
            "train.checkpoint_every_steps=1", "train.lock_stale_s=30"]
    first = start(tmp_path / "a", *args, log=tmp_path / "first.log")
    wait_until(expert_progress(tmp_path / "a"), first, tmp_path / "first.log")
    first.send_signal(signal.SIGSTOP)  # hold it mid-run (it would finish before a second process starts)
    second = start(tmp_path / "a", *args, log=tmp_path / "second.log")
    wait_for(tmp_path / "second.log", "waiting", second)  # the run's lease is held: no second writer
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()
    out = (tmp_path / "second.log").read_text()
    assert "resuming at step" in out
    run_tiny(tmp_path / "ref", *args)
    assert_same(losses(tmp_path / "a"), losses(tmp_path / "ref"))


# ---------------------------------------------------------------- 2. whole lines or nothing
def mounted_tmpfs(mnt: Path, size: str):
    if os.geteuid() != 0:
        pytest.fail("the full-disk tests mount a tmpfs and need root (CI runs as root)")
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes=4096", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def tiny_disk(tmp_path):
    yield from mounted_tmpfs(tmp_path / "disk", "256k")


@pytest.fixture
def small_disk(tmp_path):
    yield from mounted_tmpfs(tmp_path / "disk", "8m")


def fill(disk: Path) -> None:
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 256)
        except OSError:
            pass


def test_a_full_disk_fails_loudly_and_leaves_the_table_as_it_was(tiny_disk):
    first = [{"run_id": "r1", "eval_domain": d, "eval_loss": 1.0} for d in "ab"]
    assert append_rows(tiny_disk, first)
    table = tiny_disk / "results.jsonl"
    before = table.read_bytes()
    fill(tiny_disk)
    filler = tiny_disk / "filler"
    free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
    big = [{"run_id": "r2", "eval_domain": f"d{i}", "eval_loss": 2.0, "pad": "p" * 300} for i in range(40)]
    assert len("".join(json.dumps(r) for r in big)) > free
    with pytest.raises(RecordWriteError, match="r2"):
        append_rows(tiny_disk, big)
    assert table.read_bytes() == before  # no partial row
    assert not is_recorded(tiny_disk, "r2")
    filler.unlink()
    assert append_rows(tiny_disk, big)  # a retry once there is room records it whole
    assert len(recorded_rows(tiny_disk, "r2")) == 40 and len(read_rows(tiny_disk)) == 42


def test_a_job_whose_rows_cannot_be_written_is_not_done(small_disk, tmp_path, monkeypatch):
    from splitsweep import job as job_module
    from splitsweep.job import Job
    from tests.helpers import compose_cfg

    cfg = compose_cfg(tmp_path, f"split.pretrain_tokens={2 * T}", f"split.special_tokens={2 * T}",
                      "split.expert_domain=d0", "logger.mode=disabled", "train.handle_signals=false")
    cfg.paths.sweep_dir = str(small_disk)
    real = job_module.append_downstream

    def fill_then_append(*a, **k):  # the disk fills up between training and recording
        fill(small_disk)
        return real(*a, **k)

    monkeypatch.setattr(job_module, "append_downstream", fill_then_append)
    with pytest.raises(OSError):
        Job(cfg).run()
    assert read_rows(small_disk) == []
    status = list((small_disk / "runs").glob("*/status.json"))
    assert not status or json.loads(status[0].read_text())["status"] != "done"
    (small_disk / "filler").unlink()
    monkeypatch.setattr(job_module, "append_downstream", real)
    assert len(Job(cfg).run()) == 5 and len(read_rows(small_disk)) == 5  # the re-run records it, once


def test_a_torn_last_line_is_cut_off_not_glued_to_the_next_row(tmp_path):
    append_rows(tmp_path, [{"run_id": "r1", "eval_domain": "a", "eval_loss": 1.0}])
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"run_id": "r2", "eval_domain": "a", "eval_lo')  # a writer killed mid-line
    assert not is_recorded(tmp_path, "r2")
    assert append_rows(tmp_path, [{"run_id": "r3", "eval_domain": "a", "eval_loss": 3.0}])
    assert [r["run_id"] for r in read_rows(tmp_path)] == ["r1", "r3"]
    assert all(json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines())
    assert "eval_lo" in (tmp_path / "results.jsonl.torn").read_text()  # kept aside for a look


def test_rows_appended_by_a_writer_killed_before_indexing_them_count_once(tmp_path):
    rows = [{"run_id": "r1", "eval_domain": d, "eval_loss": 1.0} for d in "ab"]
    append_rows(tmp_path, rows)
    shutil.rmtree(tmp_path / ".records")  # as if killed between the append and the index
    assert is_recorded(tmp_path, "r1") and recorded_rows(tmp_path, "r1") == rows
    assert append_rows(tmp_path, rows) is False and len(read_rows(tmp_path)) == 2


# ---------------------------------------------------------------- 3, 4. debris, two writers at once
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid

def test_debris_of_killed_writers_never_blocks_a_rerun(tmp_path):
    args = [f"split.pretrain_tokens={4 * T}", f"split.special_tokens={4 * T}", "split.expert_domain=d0"]
    run_tiny(tmp_path / "ref", *args)
    root = tmp_path / "a"
    run_tiny(root, *args, "split.expert_domain=d1")  # the same seed, so the store and its layout exist
    traj = next((root / "store" / "seeds").iterdir())
    run_dir = root / "sweeps" / "test" / "runs" / json.loads(
        (next((tmp_path / "ref" / "sweeps" / "test" / "runs").iterdir()) / "run.json").read_text())["run_id"]
    for debris in (traj / ".progress.abc123.old" / "x", traj / ".progress.abc123.tmp" / "y",
                   run_dir / ".progress.abc123.old" / "z", run_dir / ".final.tmp-h-1-ab" / "w",
                   run_dir / "progress" / ".tmp-dead" / "v", traj / "progress" / ".tmp-dead" / "u",
                   run_dir / "progress" / f".tmp-{socket.gethostname()}-{dead_pid()}-abcd1234" / "t"):
        debris.parent.mkdir(parents=True, exist_ok=True)
        debris.write_text("half-written")
    run_tiny(root, *args)
    assert_same({k: v for k, v in losses(root).items() if k[2] == "d0"}, losses(tmp_path / "ref"))
    assert not list(run_dir.glob("**/.tmp-*")) and not list(run_dir.glob(".*.old"))  # cleared by the holder


def test_the_same_point_launched_three_times_at_once_trains_and_records_once(tmp_path):
    args = [f"split.pretrain_tokens={8 * T}", f"split.special_tokens={8 * T}", "split.expert_domain=d2",
            "train.checkpoint_every_steps=1"]
    procs = [start(tmp_path / "a", *args, log=tmp_path / f"{i}.log") for i in range(3)]
    for i, p in enumerate(procs):
        assert p.wait(timeout=300) == 0, (tmp_path / f"{i}.log").read_text()
    assert [(s["from_step"], s["to_step"]) for s in segments(tmp_path / "a")] == [(0, 8)]
    run_tiny(tmp_path / "ref", *args)
    assert_same(losses(tmp_path / "a"), losses(tmp_path / "ref"))


def test_three_identical_sweeps_in_one_output_dir_all_finish(tmp_path):
    grid = ["-m", f"split.budget_tokens={8 * T}", "split.pretrain_fraction=0.25,0.5", "split.expert_domain=d0,mixture",
            "report.enabled=false", "train.checkpoint_every_steps=1"]
    procs = [start(tmp_path / "a", *grid, log=tmp_path / f"{i}.log") for i in range(3)]
    for i, p in enumerate(procs):
        assert p.wait(timeout=600) == 0, (tmp_path / f"{i}.log").read_text()
    got = losses(tmp_path / "a")
    assert len(got) == 4 * 5
    run_tiny(tmp_path / "ref", *grid)
    assert_same(got, losses(tmp_path / "ref"))


# ---------------------------------------------------------------- 5. the lease
def _contend(path: str, log: str, rounds: int, barrier) -> None:
    for _ in range(rounds):
        barrier.wait()
        lock = FileLock(path, stale_s=5, poll_s=0.001).acquire()
        t0 = time.monotonic_ns()
        time.sleep(0.002)
        try:
            lock.check()
            ok = True
        except LeaseLost:
            ok = False
        t1 = time.monotonic_ns()
        with open(log, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "t0": t0, "t1": t1, "ok": ok}) + "\n")
        lock.release()
        barrier.wait()
        if os.getpid() == min_pid(log):  # one of them leaves a stale lock for the next round
            stale = Path(path)
            stale.write_text(json.dumps({"host": "elsewhere", "pid": 1, "id": "dead"}))
            os.utime(stale, (time.time() - 60, time.time() - 60))
        barrier.wait()


def min_pid(log: str) -> int:
    return min(json.loads(line)["pid"] for line in Path(log).read_text().splitlines())


def test_six_processes_breaking_one_stale_lock_never_hold_it_together(tmp_path):
    path, log = tmp_path / "x.lock", tmp_path / "holds.jsonl"
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "id": "dead"}))
    os.utime(path, (time.time() - 60, time.time() - 60))
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(6)
    procs = [ctx.Process(target=_contend, args=(str(path), str(log), 30, barrier)) for _ in range(6)]
    [p.start() for p in procs]
    [p.join(120) for p in procs]
    assert all(p.exitcode == 0 for p in procs)
    holds = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(holds) == 6 * 30
    valid = sorted((h for h in holds if h["ok"]), key=lambda h: h["t0"])
    for a, b in zip(valid, valid[1:]):
        assert a["t1"] <= b["t0"], f"two holders at once: {a} and {b}"
    assert len(valid) >= 6 * 30 * 0.9  # a lease is lost only in a microsecond-wide window


def test_a_lock_of_a_dead_process_on_this_host_is_broken_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "x.lock"
    holder = FileLock(path, stale_s=3600)
    path.write_text(json.dumps({**json.loads(holder.token), "pid": dead.pid}))  # fresh mtime, dead PID
    t0 = time.monotonic()
    with FileLock(path, stale_s=3600, poll_s=0.01):
        assert time.monotonic() - t0 < 60  # not the hour a heartbeat-only lock would wait


def test_a_stopped_seed_holder_resumed_after_losing_its_lease_publishes_nothing(tmp_path):
    common = [f"split.pretrain_tokens={60 * T}", f"split.special_tokens={2 * T}", "train.lock_stale_s=2",
              "train.checkpoint_every_steps=2"]
    stopped = start(tmp_path / "a", *common, "split.expert_domain=d0", log=tmp_path / "stopped.log")
    wait_for(tmp_path / "stopped.log", "training steps 0..60", stopped)
    stopped.send_signal(signal.SIGSTOP)
    try:
        run_tiny(tmp_path / "a", *common, "split.expert_domain=d1")  # breaks the stale lease, trains the seed
    finally:
        stopped.send_signal(signal.SIGCONT)
    assert stopped.wait(timeout=300) == 0, (tmp_path / "stopped.log").read_text()
    out = (tmp_path / "stopped.log").read_text()
    assert "taken over by another job" in out and "nothing published" in out
    assert [(s["from_step"], s["to_step"]) for s in segments(tmp_path / "a")] == [(0, 60)]  # trained once
    run_tiny(tmp_path / "ref", *common, "split.expert_domain=d0")
    run_tiny(tmp_path / "ref", *common, "split.expert_domain=d1")
    assert_same(losses(tmp_path / "a"), losses(tmp_path / "ref"))


# ---------------------------------------------------------------- 6, 7, 8, 13
def test_foreign_lines_in_the_table_do_not_block_a_sweep(tmp_path):
    sweep = tmp_path / "sweeps" / "test"
    sweep.mkdir(parents=True)
    (sweep / "results.jsonl").write_text('{"note": "copied from elsewhere"}\n[1, 2, 3]\n"text"\n')
    run_tiny(tmp_path, f"split.pretrain_tokens={2 * T}", f"split.special_tokens={2 * T}")
    assert len(read_rows(sweep)) == 5
    status = subprocess.run([sys.executable, "-m", "splitsweep.status", str(sweep)], cwd=REPO,
                            env=cli_env(tmp_path), capture_output=True, text=True)
    assert status.returncode == 0, status.stderr


def test_a_corrupt_stored_seed_is_detected_moved_aside_and_rebuilt(tmp_path):
    args = [f"split.pretrain_tokens={6 * T}", f"split.special_tokens={2 * T}"]
    run_tiny(tmp_path / "a", *args, "split.expert_domain=d0")
    seed = next((tmp_path / "a" / "store" / "seeds").glob("*/tokens_*"))
    shard = next(seed.glob("*.distcp"))
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    out = run_tiny(tmp_path / "a", *args, "split.expert_domain=d1").stdout
    assert "moved to" in out
    assert ckpt.is_good(seed) and list(seed.parent.glob(".tokens_*.corrupt-*"))
    run_tiny(tmp_path / "ref", *args, "split.expert_domain=d0")
    run_tiny(tmp_path / "ref", *args, "split.expert_domain=d1")
    assert_same(losses(tmp_path / "a"), losses(tmp_path / "ref"))
    # a flipped byte (same size) is caught by the checksum
    shard = next(seed.glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ckpt.CorruptCheckpoint, match="checksum"):
        ckpt.verify(seed)


def test_a_corrupt_progress_checkpoint_is_moved_aside_and_the_run_resumes_from_an_earlier_state(tmp_path):
    args = [f"split.pretrain_tokens={2 * T}", f"split.special_tokens={40 * T}", "split.expert_domain=d1",
            "train.checkpoint_every_steps=1"]
    first = start(tmp_path / "a", *args, log=tmp_path / "first.log")
    wait_until(expert_progress(tmp_path / "a"), first, tmp_path / "first.log")
    first.send_signal(signal.SIGKILL)
    first.wait()
    slot = next((tmp_path / "a" / "sweeps" / "test" / "runs").glob("*/progress"))
    shard = next(ckpt.resolve(slot).glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-7])  # a truncated shard
    out = run_tiny(tmp_path / "a", *args).stdout
    assert "moved to" in out and "resuming from an earlier state" in out
    run_tiny(tmp_path / "ref", *args)
    assert_same(losses(tmp_path / "a"), losses(tmp_path / "ref"))


def test_a_stop_signal_while_waiting_for_a_lock_ends_the_wait(tmp_path):
    args = [f"split.pretrain_tokens={2 * T}", f"split.special_tokens={2 * T}", "split.expert_domain=d0"]
    run_tiny(tmp_path / "probe", *args)  # learn the run id
    run_id = next((tmp_path / "probe" / "sweeps" / "test" / "runs").iterdir()).name
    lock = FileLock(tmp_path / "a" / "sweeps" / "test" / "runs" / run_id / ".lock", stale_s=3600).acquire()
    try:
        waiter = start(tmp_path / "a", *args, log=tmp_path / "w.log")
        wait_for(tmp_path / "w.log", "waiting", waiter)
        waiter.send_signal(signal.SIGTERM)
        code = waiter.wait(timeout=60)
    finally:
        lock.release()
    assert code != 0 and "stopped by signal 15 while waiting" in (tmp_path / "w.log").read_text()
    assert read_rows(tmp_path / "a" / "sweeps" / "test") == []


def test_a_recorded_point_is_found_without_reading_the_table(tmp_path, monkeypatch):
    from splitsweep import records
    from splitsweep.job import Job
    from tests.helpers import compose_cfg

    cfg = compose_cfg(tmp_path, f"split.pretrain_tokens={2 * T}", f"split.special_tokens={2 * T}",
                      "logger.mode=disabled", "train.handle_signals=false")
    rows = Job(cfg).run()

    def no_full_read(*a, **k):
        raise AssertionError("the whole table was read")

    monkeypatch.setattr(records, "read_rows", no_full_read)
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: no_full_read() if self.name == "results.jsonl"
                        else Path.read_bytes(self).decode())
    assert Job(cfg).run() == rows


# ---------------------------------------------------------------- randomized kill -9 trials
@pytest.mark.slow
def test_random_kill_9_moments_over_a_small_sweep(tmp_path):
    grid = ["-m", f"split.budget_tokens={12 * T}", "split.pretrain_fraction=0.25,0.5,1.0",
            "split.expert_domain=d0,mixture", "report.enabled=false", "train.checkpoint_every_steps=1"]
    run_tiny(tmp_path / "ref", *grid)
    ref = losses(tmp_path / "ref")
    rng = random.Random(11)
    kills, trial = 0, 0
    while kills < 20:
        root, trial = tmp_path / f"t{trial}", trial + 1
        for attempt in range(6):
            log = tmp_path / f"{root.name}-{attempt}.log"
            proc = start(root, *grid, log=log)
            try:
                wait_for(log, "#0 :", proc, timeout=120)  # Hydra is launching: the work has started
                proc.wait(timeout=rng.uniform(0.0, 3.0))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
            assert proc.returncode == 0, log.read_text()
            break
        run_tiny(root, *grid)  # whatever the kills left, a plain re-run completes the sweep
        assert_same(losses(root), ref)
    assert kills >= 20
