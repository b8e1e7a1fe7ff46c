"""The train section's typed values: conf/train/cpu.yaml declares the keys and defaults, train_args.TrainArgs
their types, and the two agree; a value of the wrong type is refused before any compute, naming the key."""
from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from helpers import REPO, compose_cfg
from splitsweep.errors import ConfigError
from splitsweep.plan import check_config, make_plan
from splitsweep.train_args import OptimizerArgs, TrainArgs


def test_the_schema_and_the_config_file_declare_the_same_keys():
    declared = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "train" / "cpu.yaml"))
    assert set(declared) == {f.name for f in dataclasses.fields(TrainArgs)}
    assert set(declared["optimizer"]) == {f.name for f in dataclasses.fields(OptimizerArgs)}


def test_values_are_typed_once(tmp_path):
    plan = make_plan(compose_cfg(tmp_path, "train.lr=1", "train.progress_every_s=0.5", "split.pretrain_tokens=128",
                                 "split.special_tokens=128"))
    t = plan.train
    assert t.lr == 1.0 and isinstance(t.lr, float) and t.progress_every_s == 0.5
    assert t.optimizer.betas == (0.9, 0.95) and isinstance(t.optimizer.weight_decay, float)
    assert t.global_batch == 4 and t.micro_batch is None and t.compile is False and t.handle_signals is True
    assert plan.layout.precision == "fp32" and plan.schedule.peak_lr == 1.0


@pytest.mark.parametrize("override, message", [
    ("train.handle_signals=1", "train.handle_signals=1 must be true or false"),
    ("train.compile=yes", "train.compile='yes' must be true or false"),
    ("train.lock_stale_s=soon", "train.lock_stale_s='soon' must be a number"),
    ("train.optimizer.eps=[1,2]", "train.optimizer.eps"),
])
def test_a_value_of_the_wrong_type_names_its_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        check_config(compose_cfg(tmp_path, override))
