"""What a ladder (sweeps/realtext_ladder.yaml) is made of: budgets stated per parameter, hyperparameters as
functions of N, experts that follow the data's domains, annealed pretraining-only runs, standard errors over
documents, and a sweep identity that reads a rule of the grid's axes as one setting."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from splitsweep.distributed import DistEnv
from splitsweep.errors import ConfigError
from splitsweep.model import ModelSpec, build_model
from splitsweep.plan import make_plan
from splitsweep.records import read_rows
from splitsweep.schedule import Schedule
from splitsweep.sweep_identity import check_sweep
from splitsweep.train import BatchSpec, StopFlag, Trainer
from tests.helpers import TINY, TOKENS_PER_STEP, compose_cfg, run_cli

T = TOKENS_PER_STEP
N_27K = 26_784  # non-embedding parameters of llama_27k, TINY's model


def plan(tmp_path, *overrides):
    return make_plan(compose_cfg(tmp_path, *overrides))


def per_param(*overrides):
    return ("split.budget_tokens=null", *overrides)  # the default sweep states its budget in tokens


# ---- budgets per parameter --------------------------------------------------------------------------------

def test_a_budget_per_parameter_is_rounded_to_whole_multiples_of_steps(tmp_path):
    p = plan(tmp_path, *per_param("split.tokens_per_param=2", "split.budget_step_multiple=4",
                                  "split.pretrain_fraction=0.5"))
    assert p.n_params == N_27K
    quantum = 4 * T
    assert p.budget_tokens == round(2 * N_27K / quantum) * quantum == 105 * quantum  # 53,760 for 53,568
    assert p.pretrain_tokens + p.special_tokens == p.budget_tokens  # per path: D + D' = T
    big = plan(tmp_path, *per_param("model=llama_83k", "split.tokens_per_param=2", "split.budget_step_multiple=4",
                                    "split.pretrain_fraction=0.5"))
    assert big.budget_tokens == round(2 * big.n_params / quantum) * quantum  # the same rule at another N
    with pytest.raises(ConfigError, match=r"either split.budget_tokens \(here 5120\) or split.tokens_per_param"):
        plan(tmp_path, "split.tokens_per_param=2", f"split.budget_tokens={40 * T}", "split.pretrain_fraction=0.5")
    with pytest.raises(ConfigError, match="tokens_per_param needs split.pretrain_fraction"):
        plan(tmp_path, *per_param("split.tokens_per_param=2", f"split.pretrain_tokens={T}", f"split.special_tokens={T}"))
    with pytest.raises(ConfigError, match=r"split.tokens_per_param=-1 must be a number > 0, e.g. 20"):
        plan(tmp_path, *per_param("split.tokens_per_param=-1", "split.pretrain_fraction=0.5"))


def test_hyperparameters_follow_the_model_size(tmp_path):
    rule = ["train.lr='${ss_by_n:${model},0.01,-0.5,26784}'", "train.warmup_steps='${ss_by_n_int:${model},2,1,26784}'"]
    small = plan(tmp_path, *rule, f"split.pretrain_tokens={8 * T}", f"split.special_tokens={4 * T}")
    large = plan(tmp_path, *rule, "model=llama_83k", f"split.pretrain_tokens={8 * T}", f"split.special_tokens={4 * T}")
    assert small.schedule.peak_lr == pytest.approx(0.01) and small.schedule.warmup_steps == 2
    assert large.schedule.peak_lr == pytest.approx(0.01 * (83_280 / 26_784) ** -0.5)
    assert large.schedule.warmup_steps == round(2 * 83_280 / 26_784)


# ---- pretraining only is a finished run -------------------------------------------------------------------

def test_pretraining_only_branches_from_the_trajectory_and_decays(tmp_path):
    p = plan(tmp_path, f"split.pretrain_tokens={10 * T}", "split.special_tokens=0", "split.expert_domain=d2")
    assert p.expert_domain == "mixture"  # no expert: the grid point's domain does not matter
    assert (p.pretrain_tokens, p.special_tokens) == (10 * T, 0)  # what the rows record
    assert (p.seed_steps, p.expert_steps, p.cooldown_steps) == (8, 2, 2)  # the path: 20% of D decayed
    assert p.schedule.lr(9, p.seed_steps, p.expert_steps) == pytest.approx(p.schedule.peak_lr * p.schedule.min_lr_factor)
    assert p.run_id == plan(tmp_path, f"split.pretrain_tokens={10 * T}", "split.special_tokens=0",
                            "split.expert_domain=mixture").run_id
    stable = plan(tmp_path, f"split.pretrain_tokens={10 * T}", "split.special_tokens=0",
                  "train.pretrain_only_cooldown=0")
    assert (stable.seed_steps, stable.expert_steps, stable.cooldown_steps) == (10, 0, 0)
    assert stable.run_id != p.run_id  # another model
    with pytest.raises(ConfigError, match=r"train.pretrain_only_cooldown=1.5 is outside \[0, 1\]"):
        plan(tmp_path, "train.pretrain_only_cooldown=1.5", f"split.pretrain_tokens={T}", f"split.special_tokens={T}")
    assert plan(tmp_path, f"split.pretrain_tokens={10 * T}", "split.special_tokens=0",
                "train.schedule=cosine").cooldown_steps == 0  # an independent cosine seed is annealed already


# ---- experts follow the data's domains --------------------------------------------------------------------

def test_each_expands_to_every_domain_and_the_baseline(tmp_path):
    run_cli(tmp_path, "-m", *TINY, "split.expert_domain=each", f"split.budget_tokens={6 * T}",
            "split.pretrain_fraction=0.5", "data.n_domains=3", "report.enabled=false", "train.eval_scope=own")
    rows = read_rows(tmp_path / "sweeps" / "test")
    assert {(r["expert_domain"], r["eval_domain"]) for r in rows} == {
        ("d0", "d0"), ("d1", "d1"), ("d2", "d2"),  # eval_scope=own: an expert on its own domain only
        ("mixture", "d0"), ("mixture", "d1"), ("mixture", "d2"), ("mixture", "mixture")}
    mix = {r["eval_domain"]: r for r in rows if r["expert_domain"] == "mixture"}
    w = {d: mix[d]["mixture_weight"] for d in ("d0", "d1", "d2")}
    assert mix["mixture"]["eval_loss"] == pytest.approx(sum(w[d] * mix[d]["eval_loss"] for d in w))
    launch = [json.loads(line) for line in (tmp_path / "sweeps" / "test" / "launches.jsonl").read_text().splitlines()]
    planned = [next(o for o in p["overrides"] if o.startswith("split.expert_domain=")) for p in launch[-1]["points"]]
    assert planned == [f"split.expert_domain={d}" for d in ("d0", "d1", "d2", "mixture")]
    single = run_cli(tmp_path, *TINY, "split.expert_domain=each", f"split.pretrain_tokens={4 * T}",
                     f"split.special_tokens={2 * T}", "sweep_name=single", check=False)
    assert single.returncode == 2 and "expands in a multirun (-m) only" in single.stderr


# ---- standard errors over documents -----------------------------------------------------------------------

def test_the_standard_error_counts_documents_not_sequences():
    spec = ModelSpec("t", 16, 1, 2, 2, 8)
    model = build_model(spec, 32, 8, seed=0)
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    trainer = Trainer(model, torch.optim.AdamW(model.parameters()), None, Schedule("wsd", 1e-3, 0, 0.1),
                      BatchSpec(2, None, 8), env, 1.0, StopFlag())
    rows = np.random.default_rng(0).integers(0, 32, size=(12, 9))
    docs = np.repeat([0, 1, 2], 4)
    mean, tokens, se_docs = trainer.evaluate_with_se(rows, 5, docs)
    _, _, se_rows = trainer.evaluate_with_se(rows, 5)
    sums = trainer._row_sums(rows, 5)
    assert tokens == 12 * 8 and mean == pytest.approx(sums.sum() / 96)
    doc_sums, doc_tokens = sums.reshape(3, 4).sum(1), np.full(3, 32.0)
    expected = np.sqrt(3 / 2 * np.sum((doc_sums - mean * doc_tokens) ** 2) / 96 ** 2)
    assert se_docs == pytest.approx(expected)
    seq_means = sums / 8
    assert se_rows == pytest.approx(np.std(seq_means, ddof=1) / np.sqrt(12))
    assert se_docs != pytest.approx(se_rows)


# ---- the sweep's identity ---------------------------------------------------------------------------------

def test_a_rule_of_an_axis_is_one_setting_of_the_sweep(tmp_path):
    rule = "train.lr='${ss_by_n:${model},0.01,-0.5,26784}'"
    sweep = tmp_path / "sweep"
    axes = {"model"}
    check_sweep(sweep, "test", compose_cfg(tmp_path, rule), axes)
    check_sweep(sweep, "test", compose_cfg(tmp_path, rule, "model=llama_83k"), axes)  # another lr, the same rule
    with pytest.raises(ConfigError, match="train.lr"):
        check_sweep(sweep, "test", compose_cfg(tmp_path, "train.lr='${ss_by_n:${model},0.02,-0.5,26784}'",
                                               "model=llama_83k"), axes)
