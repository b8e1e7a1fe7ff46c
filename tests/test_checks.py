"""Every value a job relies on is checked before any compute: a ConfigError naming the key, the bad value and
the valid range; through the default launcher, a bad grid point stops the whole grid before point #0 runs."""
import pytest
from hydra import compose, initialize_config_dir

from splitsweep.plan import ConfigError, make_plan
from tests.helpers import REPO, TINY, TOKENS_PER_STEP, compose_cfg, run_cli

T = TOKENS_PER_STEP
SPLIT = [f"split.pretrain_tokens={T}", f"split.special_tokens={T}"]

# override -> what the message must say (the key with the bad value first, then the valid range)
BAD = {
    "train.eval_batch=0": ["train.eval_batch=0", "integer >= 1", "nearest valid value: 1"],
    "data.heldout_sequences=0": ["data.heldout_sequences=0", "integer >= 1", "nearest valid value: 1"],
    "train.min_lr_factor=-0.1": ["train.min_lr_factor=-0.1", "[0, 1]", "nearest valid value: 0"],
    "train.min_lr_factor=1.5": ["train.min_lr_factor=1.5", "[0, 1]", "nearest valid value: 1"],
    "train.decay_fraction=1.5": ["train.decay_fraction=1.5", "[0, 1]", "nearest valid value: 1"],
    "train.decay_fraction=-0.5": ["train.decay_fraction=-0.5", "[0, 1]", "nearest valid value: 0"],
    "train.lock_stale_s=0": ["train.lock_stale_s=0", "> 0", "default is 120"],
    "train.lock_stale_s=-5": ["train.lock_stale_s=-5", "> 0"],
    "seed=-1": ["seed=-1", "integer >= 0", "nearest valid value: 0"],
    "seed=1.5": ["seed=1.5", "integer >= 0", "1 or 2"],
    "seed=abc": ["seed='abc'", "integer >= 0"],
    "train.device=tpu": ["train.device='tpu'", "auto, cpu, cuda", "nearest valid value: cpu"],
    "train.device=cuda:0": ["train.device='cuda:0'", "auto, cpu, cuda", "nearest valid value: cuda"],
    "sweep_name=../..": ["sweep_name='../..'", "plain name", "no '/'"],
    "sweep_name=..": ["sweep_name='..'", "not '.' or '..'"],
    "sweep_name=a/b": ["sweep_name='a/b'", "no '/'", "sweep_name=a_b"],
    "train.checkpoint_every_steps=0": ["train.checkpoint_every_steps=0", "integer >= 1"],
    "train.progress_every_s=0": ["train.progress_every_s=0", "> 0"],
    "train.lr=0": ["train.lr=0", "> 0"],
    "train.lr=-0.001": ["train.lr=-0.001", "> 0"],
    "train.warmup_steps=-1": ["train.warmup_steps=-1", "integer >= 0", "nearest valid value: 0"],
    "train.grad_clip=0": ["train.grad_clip=0", "> 0"],
    "train.schedule=linear": ["train.schedule='linear'", "wsd, cosine"],
    "train.global_batch=4.5": ["train.global_batch=4.5", "4 or 5"],
    "train.threads=-1": ["train.threads=-1", "integer >= 1"],
    "train.optimizer.betas=[0.9,1.0]": ["train.optimizer.betas=[0.9, 1.0]", "[0, 1)"],
    "train.optimizer.eps=0": ["train.optimizer.eps=0", "> 0"],
    "train.optimizer.weight_decay=-0.1": ["train.optimizer.weight_decay=-0.1", ">= 0"],
    "data.n_domains=0": ["data.n_domains=0", "integer >= 1"],
    "data.data_seed=-1": ["data.data_seed=-1", "integer >= 0"],
}


@pytest.mark.parametrize("override", list(BAD))
def test_bad_value_is_a_config_error_naming_it(tmp_path, override):
    with pytest.raises(ConfigError) as err:
        make_plan(compose_cfg(tmp_path, *SPLIT, override))
    for part in BAD[override]:
        assert part in str(err.value), str(err.value)
    assert not (tmp_path / "store").exists()  # nothing prepared, nothing trained


def test_hf_heldout_tokens_checked_before_data_is_prepared(tmp_path):
    base = [o for o in TINY if not o.startswith("data.")]  # TINY's data keys are the phonebook's
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.root={tmp_path}", *base, *SPLIT, "data=hf",
                                           f"data.data_files={tmp_path}/none-*.jsonl", "data.heldout_tokens=0"])
    with pytest.raises(ConfigError, match=r"data\.heldout_tokens=0 must be an integer >= 1; nearest valid value: 1"):
        make_plan(cfg)
    assert not (tmp_path / "store").exists()


def assert_nothing_ran(root):
    assert not (root / "store").exists()
    sweep = root / "sweeps" / "test"
    assert not (sweep / "results.jsonl").exists() and not (sweep / "runs").exists() and not (sweep / "jobs").exists()


@pytest.mark.parametrize("grid, point, message", [
    ("split.pretrain_fraction=0.5,1.5", "split.pretrain_fraction=1.5", "split.pretrain_fraction=1.5 is outside [0, 1]"),
    ("train.eval_batch=8,0", "train.eval_batch=0", "train.eval_batch=0 must be an integer >= 1"),
    ("seed=0,-1", "seed=-1", "seed=-1 must be an integer >= 0"),
])
def test_default_launcher_checks_the_whole_grid_first(tmp_path, grid, point, message):
    args = ["-m", "report.enabled=false", *TINY, f"split.budget_tokens={4 * T}", "split.pretrain_fraction=0.5",
            "split.expert_domain=d0", grid]
    proc = run_cli(tmp_path, *args, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = next(x for x in proc.stderr.splitlines() if x.startswith("splitsweep: error: grid point #1 ("))
    overrides, reason = line.removeprefix("splitsweep: error: grid point #1 (").split("): ", 1)
    assert point in overrides.split() and reason.startswith(message), line
    assert "splitsweep: nothing was run" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_nothing_ran(tmp_path)


@pytest.mark.parametrize("mode", [[], ["-m"]])
def test_sweep_name_outside_the_output_root_is_refused_before_hydra_writes(tmp_path, mode):
    root = tmp_path / "out"
    proc = run_cli(root, *mode, "report.enabled=false", *TINY, "sweep_name=../..", *SPLIT, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "sweep_name='../..' must be a plain name" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["out"])  # nothing beside the output root
    assert not (root / "store").exists()
