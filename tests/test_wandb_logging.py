"""Each job logs to W&B through the real wandb library: offline into the sweep dir by default."""
import os

from tests.helpers import TINY, TOKENS_PER_STEP, run_cli

T = TOKENS_PER_STEP
ARGS = [*TINY, f"split.pretrain_tokens={2 * T}", f"split.special_tokens={2 * T}", "split.expert_domain=d0"]


def wandb_files(root):
    return sorted(p.name for p in (root / "sweeps" / "test").rglob("run-*.wandb"))


def test_offline_runs_for_seed_and_expert_with_deterministic_ids(tmp_path):
    env = {"WANDB_MODE": "", "WANDB_DIR": "", "WANDB_CACHE_DIR": str(tmp_path / "cache"),
           "WANDB_CONFIG_DIR": str(tmp_path / "config")}
    env = {k: v for k, v in env.items() if v} | {"WANDB_MODE": "offline"}
    os.environ.pop("WANDB_DIR", None)
    run_cli(tmp_path, *ARGS, "logger.mode=offline", env=env)
    files = wandb_files(tmp_path)
    assert len(files) == 2
    assert any(f.startswith("run-seed-") for f in files) and any(f.startswith("run-expert-") for f in files)
    blob = b"".join(p.read_bytes() for p in (tmp_path / "sweeps" / "test").rglob("run-expert-*.wandb"))
    for needle in (b"train/loss", b"eval/d0/loss", b"expert", b"test"):  # history, summary, job type, group
        assert needle in blob, needle


def test_wandb_mode_disabled_wins(tmp_path):
    run_cli(tmp_path, *ARGS, "logger.mode=offline", env={"WANDB_MODE": "disabled"})
    assert wandb_files(tmp_path) == []
    assert (tmp_path / "sweeps" / "test" / "results.jsonl").exists()
