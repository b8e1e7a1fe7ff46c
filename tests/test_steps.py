"""Steps: identities from declared fields only, one exclusion rule, outputs that follow from the identity, and
done() read from the outputs. (That a grid point's steps keep the recorded ids: test_identity_golden.py.)"""
from __future__ import annotations

import dataclasses

import pytest

from splitsweep.identity import identity, payload, signature
from splitsweep.layout import StoreLayout, SweepLayout
from splitsweep.records import append_rows
from splitsweep.steps import DownstreamStep, ExpertStep, SeedStep, Trajectory, TrajectorySchedule

TRAJECTORY = Trajectory(1, {"dim": 24, "n_layers": 3}, 512, {"kind": "hf", "files": "x"}, 128, 4,
                        {"betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}, 1.0, 0,
                        TrajectorySchedule("wsd", 6e-3, 10), [10, 20])
EXPERT = ExpertStep(TRAJECTORY, 32, 8, "python", 0.1, 0.2, 1)


def test_identity_hashes_the_declared_fields_under_their_keys():
    assert payload(TRAJECTORY.schedule) == {"name": "wsd", "peak_lr": 6e-3, "warmup_steps": 10}
    assert set(payload(TRAJECTORY)) == {"version", "model", "vocab_size", "data", "seq_len", "global_batch",
                                        "optimizer", "grad_clip", "seed", "schedule", "mixture_counts"}
    assert identity(TRAJECTORY) == signature(payload(TRAJECTORY)) == TRAJECTORY.identity


def test_a_dependency_enters_as_its_identity():
    run = payload(EXPERT)
    assert run["trajectory"] == TRAJECTORY.identity
    other = dataclasses.replace(TRAJECTORY, seed=1)
    assert dataclasses.replace(EXPERT, trajectory=other).identity != EXPERT.identity


@pytest.mark.parametrize("step, field, value", [
    (TRAJECTORY, "precision", "fp32"), (EXPERT, "pretrain_only_cooldown_steps", 0),
    (TRAJECTORY.schedule, "seed_steps", None)])
def test_a_setting_at_its_added_at_default_leaves_the_identity_as_it_was(step, field, value):
    assert field not in payload(step)
    changed = dataclasses.replace(step, **{field: {"fp32": "bf16", 0: 3, None: 32}[value]})
    assert field in payload(changed) and identity(changed) != identity(step)


@pytest.mark.parametrize("field, value", [("seed_steps", 33), ("expert_steps", 9), ("expert_domain", "perl"),
                                          ("min_lr_factor", 0.0), ("decay_fraction", 1.0)])
def test_every_defining_field_changes_the_run_id(field, value):
    assert dataclasses.replace(EXPERT, **{field: value}).identity != EXPERT.identity


def test_downstream_is_keyed_by_what_decides_its_numbers():
    base = DownstreamStep(EXPERT.identity, ("a", "b"), 0, None, 0, 1000, None, "0.4.9")
    assert payload(base)["run_id"] == EXPERT.identity
    for field, value in [("tasks", ("a", "b", "c")), ("num_fewshot", 5), ("limit", 10), ("lm_eval", "0.5")]:
        assert dataclasses.replace(base, **{field: value}).identity != base.identity


def test_outputs_follow_from_identities_and_done_reads_them(tmp_path):
    store, sweep = tmp_path / "store", tmp_path / "sweep"
    seed = EXPERT.seed
    assert seed == SeedStep(TRAJECTORY, 32) and seed.tokens == 32 * 128 * 4
    assert seed.output(store) == StoreLayout(store).seed(TRAJECTORY.identity, seed.tokens)
    assert TRAJECTORY.output(store) == seed.output(store).parent
    assert EXPERT.output(sweep) == SweepLayout(sweep).run(EXPERT.identity)
    assert dataclasses.replace(EXPERT, seed_steps=0).seed is None
    assert not seed.done(store) and not EXPERT.done(sweep)
    append_rows(sweep, [{"run_id": EXPERT.identity, "eval_domain": "python", "eval_loss": 1.0}])
    assert EXPERT.done(sweep)
    assert not dataclasses.replace(EXPERT, expert_domain="perl").done(sweep)
    evaluation = DownstreamStep(EXPERT.identity, ("a",), 0, None, 0, 1000, None, "0.4.9")
    assert not evaluation.done(sweep)
    append_rows(sweep, [{"run_id": EXPERT.identity, "eval_id": evaluation.identity, "task": "a"}],
                filename="downstream.jsonl", key="eval_id")
    assert evaluation.done(sweep)
    assert not dataclasses.replace(evaluation, num_fewshot=5).done(sweep)


def test_the_job_directory_name_never_leaves_out_a_setting_that_defines_a_result():
    """A Hydra job directory is named by identity.job_dir_overrides (conf/config.yaml's hydra.sweep.subdir): it
    leaves out the settings and groups under identity.NOT_DEFINING and the sweep file, and nothing else;
    otherwise two grid points that differ only in a defining setting would share one job directory."""
    from splitsweep.identity import job_dir_overrides

    defining = ["model=llama_21k", "split.pretrain_fraction=0.5", "train.lr=1e-3", "data.domains=[a,b]",
                "+train.new_knob=1", "loggers.x=1", "train.threads_per_core=2", "sweep_name_suffix=x"]
    not_defining = ["sweeps=phonebook", "logger.mode=offline", "logger=wandb", "paths.root=/x", "train.threads=2",
                    "hydra/launcher=slurm", "eval=phonebook_mc", "eval.tasks=[a]", "train.checkpoint_every_steps=9",
                    "+report.enabled=false", "~train.compile", "sweep_name=s"]
    assert job_dir_overrides(not_defining + defining) == sorted(defining)
