"""Real training at tiny sizes: seed reuse, trajectory extension, resume, idempotence, records."""
import json
import math
import signal
import subprocess
import sys
import time

import pytest

from splitsweep import checkpoint as ckpt
from splitsweep.job import Job
from splitsweep.records import COLUMNS, read_rows
from tests.helpers import REPO, TINY, TOKENS_PER_STEP, compose_cfg, run_cli, segments

T = TOKENS_PER_STEP


def job(root, *overrides):
    return Job(compose_cfg(root, *overrides))


def test_seed_is_trained_once_and_shared(tmp_path):
    rows_d0 = job(tmp_path, f"split.pretrain_tokens={4 * T}", f"split.special_tokens={2 * T}",
                  "split.expert_domain=d0").run()
    second = job(tmp_path, f"split.pretrain_tokens={4 * T}", f"split.special_tokens={2 * T}",
                 "split.expert_domain=d1")
    rows_d1 = second.run()
    segs = segments(tmp_path)
    assert [(s["from_step"], s["to_step"]) for s in segs] == [(0, 4)]
    assert rows_d0[0]["seed_id"] == rows_d1[0]["seed_id"]
    assert rows_d0[0]["tokens_trained"] == 6 * T      # seed + expert
    assert second.tokens_trained == 2 * T             # expert only: the seed was reused
    assert rows_d0[0]["run_id"] != rows_d1[0]["run_id"]


def test_trajectory_extends_instead_of_restarting(tmp_path):
    job(tmp_path, f"split.pretrain_tokens={2 * T}", f"split.special_tokens={T}", "split.expert_domain=d0").run()
    longer = job(tmp_path, f"split.pretrain_tokens={4 * T}", f"split.special_tokens={T}", "split.expert_domain=d0")
    longer.run()
    segs = segments(tmp_path)
    assert [(s["from_step"], s["to_step"]) for s in segs] == [(0, 2), (2, 4)]
    assert sum(s["tokens"] for s in segs) == 4 * T    # 4 batches in all, not 6
    assert longer.tokens_trained == 2 * T + T


def test_extended_seed_equals_seed_trained_in_one_go(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    job(a, f"split.pretrain_tokens={2 * T}", f"split.special_tokens={T}", "split.expert_domain=d0").run()
    extended = job(a, f"split.pretrain_tokens={4 * T}", f"split.special_tokens={T}", "split.expert_domain=d0").run()
    direct = job(b, f"split.pretrain_tokens={4 * T}", f"split.special_tokens={T}", "split.expert_domain=d0").run()
    for x, y in zip(extended, direct):
        assert x["eval_loss"] == pytest.approx(y["eval_loss"], rel=1e-5, abs=1e-6)


def test_rerun_is_idempotent(tmp_path):
    args = (f"split.pretrain_tokens={2 * T}", f"split.special_tokens={2 * T}", "split.expert_domain=mixture")
    first = job(tmp_path, *args).run()
    again = job(tmp_path, *args)
    started = time.monotonic()
    second = again.run()
    assert time.monotonic() - started < 5
    assert again.tokens_trained == 0
    rows = read_rows(tmp_path / "sweeps" / "test")
    assert len(rows) == len(first) == len(second)


def test_record_schema(tmp_path):
    rows = job(tmp_path, f"split.pretrain_tokens={2 * T}", f"split.special_tokens={30 * T}",
               "split.expert_domain=d1").run()
    stored = read_rows(tmp_path / "sweeps" / "test")
    assert stored == rows
    assert sorted(r["eval_domain"] for r in rows) == ["d0", "d1", "d2", "d3", "mixture"]
    for r in rows:
        assert set(COLUMNS) <= set(r), set(COLUMNS) - set(r)
        assert r["pretrain_tokens"] == 2 * T and r["special_tokens"] == 30 * T
        assert r["n_params"] == 26784 and r["n_params_total"] > r["n_params"]
        assert r["flops"] == 6 * r["n_params"] * 32 * T
        assert r["schedule"] == "wsd" and r["status"] == "ok" and r["expert_domain"] == "d1"
        assert math.isfinite(r["eval_loss"]) and 0 < r["eval_loss"] < 5
        assert r["mixture_weight"] == (1.0 if r["eval_domain"] == "mixture" else 0.25)
        assert (r["recall_accuracy"] is None) == (r["eval_domain"] == "mixture")
    own = next(r for r in rows if r["eval_domain"] == "d1")
    other = next(r for r in rows if r["eval_domain"] == "d0")
    assert own["eval_loss"] < other["eval_loss"]  # the expert got better at its own book


def test_cosine_schedule_is_recorded_and_seeds_are_not_shared_across_d(tmp_path):
    job(tmp_path, "train.schedule=cosine", f"split.pretrain_tokens={2 * T}", f"split.special_tokens={T}",
        "split.expert_domain=d0").run()
    rows = job(tmp_path, "train.schedule=cosine", f"split.pretrain_tokens={4 * T}", f"split.special_tokens={T}",
               "split.expert_domain=d0").run()
    assert {r["schedule"] for r in rows} == {"cosine"}
    assert sorted((s["from_step"], s["to_step"]) for s in segments(tmp_path)) == [(0, 2), (0, 4)]


def _step(slot) -> int | None:
    try:
        return int(ckpt.read_meta(slot)["step"])
    except (FileNotFoundError, ValueError):  # a version replaced while we read it
        return None


def test_killed_job_resumes_from_its_checkpoint(tmp_path):
    args = ["model=llama_83k", *[a for a in TINY if not a.startswith("model=")], f"split.pretrain_tokens={4 * T}",
            f"split.special_tokens={60 * T}", "split.expert_domain=d2", "train.checkpoint_every_steps=5"]
    env = {"PYTHONPATH": str(REPO), "SPLITSWEEP_OUTPUT": str(tmp_path / "killed"), "WANDB_MODE": "disabled"}
    import os
    proc = subprocess.Popen([sys.executable, "-m", "splitsweep", *args], cwd=REPO, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = [p for p in (tmp_path / "killed" / "sweeps" / "test" / "runs").glob("*/progress")
                 if ckpt.is_complete(p)]
        step = _step(found[0]) if found else None
        if step is not None and step >= 20:
            progress = step
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert progress is not None, "no expert checkpoint appeared"
    assert read_rows(tmp_path / "killed" / "sweeps" / "test") == []  # a killed job leaves no row
    out = run_cli(tmp_path / "killed", *args)
    assert "resuming at step" in out.stdout
    rows = read_rows(tmp_path / "killed" / "sweeps" / "test")
    assert len(rows) == 5
    assert rows[0]["tokens_trained"] <= (64 - progress) * T  # not restarted from zero
    # Resuming gives the same model as never stopping (batches and lr are functions of the step).
    straight = run_cli(tmp_path / "straight", *args)
    assert straight.returncode == 0
    ref = read_rows(tmp_path / "straight" / "sweeps" / "test")
    for x, y in zip(sorted(rows, key=lambda r: r["eval_domain"]), sorted(ref, key=lambda r: r["eval_domain"])):
        assert x["eval_loss"] == pytest.approx(y["eval_loss"], rel=1e-5)
