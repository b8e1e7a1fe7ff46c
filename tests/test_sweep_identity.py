"""A sweep knows its experiment: a run or a grid with other settings is refused before compute, naming them."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from splitsweep.errors import ConfigError
from splitsweep.plan import config_hash
from splitsweep.records import read_rows
from splitsweep.sweep_identity import check_sweep, defining_config, launch_axes
from tests.helpers import TINY, TOKENS_PER_STEP, run_cli

T = TOKENS_PER_STEP
GRID = ["-m", *TINY, f"split.budget_tokens={4 * T}", "split.pretrain_fraction=0.5,1.0", "split.expert_domain=d0",
        "report.enabled=false"]


def test_launch_axes_are_the_keys_a_grid_varies():
    grid = [["model=a", "split.pretrain_fraction=0.5", "train.lr=1"], ["model=a", "split.pretrain_fraction=1.0"]]
    assert launch_axes(grid, ["split.expert_domain"]) == {"split.pretrain_fraction", "train.lr", "split.expert_domain"}
    assert launch_axes([["model=a"]]) == set()


def test_another_experiment_is_refused_from_a_recorded_sweep(tmp_path):
    run_cli(tmp_path, *GRID)
    sweep = tmp_path / "sweeps" / "test"
    recorded = json.loads((sweep / "sweep.json").read_text())
    assert "split.pretrain_fraction" in recorded["axes"] and "model" not in recorded["axes"]
    rows = read_rows(sweep)
    assert len(rows) == 2 * 5

    # a single run of another model: refused, naming the setting and the way out
    proc = run_cli(tmp_path, *TINY, "model=llama_83k", f"split.pretrain_tokens={2 * T}",
                   f"split.special_tokens={2 * T}", check=False)
    assert proc.returncode == 2
    assert "model.name" in proc.stderr and "llama_27k" in proc.stderr and "sweep_name=" in proc.stderr
    # a grid with another learning rate: refused before any point runs
    proc = run_cli(tmp_path, *GRID, "train.lr=0.01", check=False)
    assert proc.returncode == 2 and "train.lr" in proc.stderr and "nothing was run" in proc.stderr
    assert read_rows(sweep) == rows
    assert not list((tmp_path / "store" / "seeds").glob("*/tokens_*"))[2:]  # no other seed trained

    # a point of the same experiment, alone or as a larger grid, joins it
    run_cli(tmp_path, *TINY, f"split.pretrain_tokens={1 * T}", f"split.special_tokens={3 * T}",
            "split.expert_domain=d0")
    run_cli(tmp_path, *[a if a != "split.pretrain_fraction=0.5,1.0" else "split.pretrain_fraction=0.5,0.75,1.0"
                        for a in GRID])
    assert len(read_rows(sweep)) == 4 * 5
    # the same change under a new name is a new sweep
    run_cli(tmp_path, *TINY, "model=llama_83k", f"split.pretrain_tokens={2 * T}", f"split.special_tokens={2 * T}",
            "sweep_name=test_83k")
    assert len(read_rows(tmp_path / "sweeps" / "test_83k")) == 5


def test_a_setting_varied_as_a_grid_is_an_axis_of_the_sweep(tmp_path):
    point = [f"split.budget_tokens={4 * T}", "split.pretrain_fraction=0.5", "split.expert_domain=d0"]
    run_cli(tmp_path, "-m", *TINY, *point, "train.lr=0.001,0.002", "report.enabled=false")
    assert "train.lr" in json.loads((tmp_path / "sweeps" / "test" / "sweep.json").read_text())["axes"]
    run_cli(tmp_path, *TINY, *point, "train.lr=0.003")
    assert len({r["run_id"] for r in read_rows(tmp_path / "sweeps" / "test")}) == 3


def test_a_setting_added_at_its_default_leaves_a_recorded_experiment_the_same(tmp_path):
    # sweep.json recorded before a setting existed lacks it; recorded after, it holds the default. Both are the
    # experiment a launch at the default is; a launch at another value is another experiment.
    cfg = OmegaConf.create({"seed": 0, "train": {"lr": 0.01, "precision": "fp32", "eval_scope": "all"},
                            "split": {"accounting": "per_path", "pretrain_fraction": 0.5}})
    assert "train.precision" not in defining_config(cfg) and "train.lr" in defining_config(cfg)
    older = {"seed": 0, "train.lr": 0.01, "train.eval_scope": "all"}  # recorded with one added key, not the other
    for recorded in (older, {k: v for k, v in older.items() if k != "train.eval_scope"}):
        (tmp_path / "sweep.json").write_text(json.dumps({"sweep_name": "s", "axes": [], "config": recorded}))
        check_sweep(tmp_path, "s", cfg)
    bf16 = OmegaConf.merge(cfg, {"train": {"precision": "bf16"}})
    with pytest.raises(ConfigError, match="train.precision"):
        check_sweep(tmp_path, "s", bf16)
    # the job's config hash drops the same settings at the same values
    bare = OmegaConf.create({"seed": 0, "train": {"lr": 0.01}, "split": {"pretrain_fraction": 0.5}})
    assert config_hash(cfg) == config_hash(bare) != config_hash(bf16)
