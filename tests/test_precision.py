"""Mixed precision, compile, and the deferred host syncs of the training loop (real torchtitan models, CPU)."""
import sys

import numpy as np
import pytest
import torch

from splitsweep import checkpoint as ckpt
from splitsweep.data import MIXTURE
from splitsweep.data.phonebook import Phonebook
from splitsweep.distributed import DistEnv, allocated_threads
from splitsweep.job import Job
from splitsweep.model import ModelSpec, build_model
from splitsweep.parallelize import TrainLayout, adamw, parallelize
from splitsweep.records import read_rows
from splitsweep.schedule import Schedule
from splitsweep.train import BatchSpec, TrainingPath, Preempted, Trainer, TrainingDiverged
from tests.helpers import TINY, TOKENS_PER_STEP, compose_cfg, run_cli

T = TOKENS_PER_STEP
ONE = DistEnv(0, 1, 0, torch.device("cpu"))
SPEC = ModelSpec("llama_27k", dim=32, n_layers=2, n_heads=4, n_kv_heads=4, multiple_of=16)
BOOK = Phonebook(n_domains=2, entries_per_domain=30, heldout_sequences=4, seq_len=32, seed=0)
BATCH = BatchSpec(global_batch=8, micro_batch=None, seq_len=32)


def trainer(layout=TrainLayout(), lr=3e-3, sync_every=10, model=None):
    model = model or parallelize(build_model(SPEC, BOOK.vocab_size, 32, seed=0), ONE, layout)
    opt = adamw(model, ONE, lr, (0.9, 0.95), 1e-8, 0.0)
    return Trainer(model, opt, BOOK, Schedule("wsd", lr, 2, 0.1), BATCH, ONE, layout=layout, sync_every=sync_every)


def losses(tr, steps):
    """The loss of every step, read through the training log (sync_every=1)."""
    seen = {}
    tr.train(TrainingPath(steps, 0, MIXTURE), 0, steps, "t", log=lambda s, m: seen.__setitem__(s, m["train/loss"]))
    return np.array([seen[s] for s in sorted(seen)])


def test_bf16_follows_fp32_and_is_really_bf16():
    # 30 AdamW steps of a 27k model: the two trajectories stay within 1% of each other step by step
    # (measured: at most 0.3% here), and are not the same computation (bf16 rounding is visible).
    fp32 = losses(trainer(sync_every=1), 30)
    bf16 = losses(trainer(TrainLayout(precision="bf16"), sync_every=1), 30)
    assert np.max(np.abs(bf16 - fp32) / fp32) < 0.01
    assert np.max(np.abs(bf16 - fp32)) > 1e-5
    assert fp32[-1] < fp32[0] * 0.9 and bf16[-1] < bf16[0] * 0.9


def test_checkpoints_stay_fp32_and_resume_across_precisions(tmp_path):
    tr = trainer(TrainLayout(precision="bf16"))
    tr.train(TrainingPath(8, 0, MIXTURE), 0, 4, "t")
    ckpt.save(tmp_path / "c", tr.model, tr.optimizer, {"step": 4}, ONE)
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())
    # Resume in fp32 and in bf16: both load the same fp32 weights and optimizer state and continue.
    for precision in ("fp32", "bf16"):
        again = trainer(TrainLayout(precision=precision))
        ckpt.load(tmp_path / "c", again.model, again.optimizer)
        for a, b in zip(again.model.parameters(), tr.model.parameters()):
            assert torch.equal(a, b)
        again.train(TrainingPath(8, 0, MIXTURE), 4, 8, "t")
        assert np.isfinite(again.evaluate(BOOK.heldout(0))[0])
    # And a continuation in fp32 tracks the bf16 run's own continuation closely.
    tr.train(TrainingPath(8, 0, MIXTURE), 4, 8, "t")
    fp32 = trainer(TrainLayout())
    ckpt.load(tmp_path / "c", fp32.model, fp32.optimizer)
    fp32.train(TrainingPath(8, 0, MIXTURE), 4, 8, "t")
    rows = BOOK.heldout(0)
    assert fp32.evaluate(rows)[0] == pytest.approx(tr.evaluate(rows)[0], rel=0.01)


def _nan_after(model, calls: int):
    count = {"n": 0}

    def hook(_module, _inputs, output):
        count["n"] += 1
        return output * float("nan") if count["n"] > calls else output

    model.register_forward_hook(hook)


def test_a_nan_is_caught_within_the_sync_interval_and_never_checkpointed():
    tr = trainer(sync_every=5)
    _nan_after(tr.model, 3)  # steps 1-3 are finite, step 4 is not
    saved = []
    with pytest.raises(TrainingDiverged, match="by step 5"):
        tr.train(TrainingPath(20, 0, MIXTURE), 0, 20, "t", checkpoint=saved.append, checkpoint_every=100)
    # A checkpoint forces a read first: the NaN of step 4 is caught there, and nothing NaN is saved.
    tr = trainer(sync_every=5)
    _nan_after(tr.model, 3)
    saved = []
    with pytest.raises(TrainingDiverged, match="by step 4"):
        tr.train(TrainingPath(20, 0, MIXTURE), 0, 20, "t", checkpoint=saved.append, checkpoint_every=2)
    assert saved == [2]


def test_a_stop_signal_is_read_on_the_sync_cadence_and_checkpoints_there():
    tr = trainer(sync_every=4)
    calls = {"n": 0}

    def hook(*_):
        calls["n"] += 1
        if calls["n"] == 2:  # the signal arrives during step 2
            tr.stop.signum = 12

    tr.model.register_forward_hook(hook)
    saved = []
    with pytest.raises(Preempted, match="after step 4") as err:
        tr.train(TrainingPath(20, 0, MIXTURE), 0, 20, "t", checkpoint=saved.append, checkpoint_every=100)
    assert saved == [4] and err.value.signum == 12


@pytest.mark.slow
def test_compiled_blocks_train_as_eager_does():
    # Inductor on CPU: the same 6 steps agree to 1e-4 relative (measured ~1e-6); ~30 s of compilation.
    eager = losses(trainer(sync_every=1), 6)
    compiled_tr = trainer(TrainLayout(compile=True), sync_every=1)
    assert any("Compiled" in type(b).__name__ or hasattr(b, "_orig_mod") for b in compiled_tr.model.layers.values())
    compiled = losses(compiled_tr, 6)
    assert compiled == pytest.approx(eager, rel=1e-4)


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_activation_checkpointing_changes_memory_not_the_numbers(mode):
    eager = losses(trainer(sync_every=1), 4)
    ac = losses(trainer(TrainLayout(activation_checkpointing=mode), sync_every=1), 4)
    assert ac == pytest.approx(eager, rel=1e-5)


def test_bf16_job_records_its_precision_and_a_trajectory_of_its_own(tmp_path):
    args = [f"split.pretrain_tokens={4 * T}", f"split.special_tokens={2 * T}", "split.expert_domain=d0"]
    fp32 = Job(compose_cfg(tmp_path, *args)).run()
    bf16 = Job(compose_cfg(tmp_path, *args, "train.precision=bf16")).run()
    assert {r["precision"] for r in fp32} == {"fp32"} and {r["precision"] for r in bf16} == {"bf16"}
    assert fp32[0]["seed_id"] != bf16[0]["seed_id"] and fp32[0]["run_id"] != bf16[0]["run_id"]
    for a, b in zip(fp32, bf16):
        assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=0.02)


def test_two_ranks_with_the_bf16_policy_match_one_process_with_autocast(tmp_path):
    # FSDP2 MixedPrecisionPolicy(bf16, fp32 reduce) on 2 gloo ranks against torch.autocast in 1 process:
    # the same bf16 matmuls, reduced in another order; after 12 steps within 0.5% (measured ~1e-3 or less).
    args = [*TINY, f"split.pretrain_tokens={6 * T}", f"split.special_tokens={6 * T}", "split.expert_domain=d1",
            "train.precision=bf16"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    run_cli(tmp_path / "two", *args, prefix=torchrun, env={"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"})
    run_cli(tmp_path / "one", *args)
    two = {r["eval_domain"]: r for r in read_rows(tmp_path / "two" / "sweeps" / "test")}
    one = {r["eval_domain"]: r for r in read_rows(tmp_path / "one" / "sweeps" / "test")}
    assert set(two) == set(one) and {r["precision"] for r in two.values()} == {"bf16"}
    for domain, row in one.items():
        assert two[domain]["eval_loss"] == pytest.approx(row["eval_loss"], rel=5e-3)


def test_precision_and_layout_are_checked_before_any_compute(tmp_path):
    for bad, needle in (("train.precision=bf61", "nearest valid value: bf16"),
                        ("train.activation_checkpointing=ful", "nearest valid value: full"),
                        ("train.sync_every_steps=0", "train.sync_every_steps=0")):
        proc = run_cli(tmp_path, "split.pretrain_tokens=128", "split.special_tokens=128", *TINY, bad, check=False)
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr[-2000:]


def test_threads_follow_the_allocation(monkeypatch):
    for var in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE", "SLURM_CPUS_ON_NODE",
                "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(var, raising=False)
    cpus = len(__import__("os").sched_getaffinity(0))
    assert allocated_threads(3) == 3
    assert allocated_threads(None) == cpus
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cpus * 2))
    assert allocated_threads(None) == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "1")  # a 1-CPU SLURM job on a node without cgroups
    assert allocated_threads(None) == 1
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "8")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    assert allocated_threads(None) == 4
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    assert allocated_threads(None) == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert allocated_threads(None) == 2


def test_a_diverging_run_ends_with_one_clear_line_and_records_nothing(tmp_path):
    proc = run_cli(tmp_path, *TINY, f"split.pretrain_tokens={20 * T}", f"split.special_tokens={2 * T}",
                   "split.expert_domain=d0", "train.lr=1e9", "train.warmup_steps=0", check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "loss is nan by step" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "sweeps" / "test" / "results.jsonl").exists()
    full = run_cli(tmp_path / "full", *TINY, f"split.pretrain_tokens={20 * T}", f"split.special_tokens={2 * T}",
                   "split.expert_domain=d0", "train.lr=1e9", "train.warmup_steps=0", check=False,
                   env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 1 and "Traceback" in full.stderr and "TrainingDiverged" in full.stderr
