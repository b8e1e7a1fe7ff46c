"""split.accounting: a budget read per expert path (T = D + D') or as the total compute of one seed shared by
K experts (C = D + K·D', the baseline one model of C tokens)."""
from __future__ import annotations

import pytest

from splitsweep.errors import ConfigError
from splitsweep.plan import make_plan
from splitsweep.records import read_rows
from tests.helpers import TINY, TOKENS_PER_STEP, compose_cfg, run_cli

T = TOKENS_PER_STEP
SHARED = ["split.accounting=shared_seed", f"split.budget_tokens={40 * T}"]


def plan(tmp_path, *overrides):
    return make_plan(compose_cfg(tmp_path, *overrides))


@pytest.mark.parametrize("fraction, seed, expert, baseline", [(0.0, 0, 10, 40), (0.2, 8, 8, 32), (0.5, 20, 5, 20),
                                                               (1.0, 40, 0, 0)])
def test_shared_seed_splits_the_total_compute(tmp_path, fraction, seed, expert, baseline):
    e = plan(tmp_path, *SHARED, f"split.pretrain_fraction={fraction}", "split.expert_domain=d1")
    b = plan(tmp_path, *SHARED, f"split.pretrain_fraction={fraction}", "split.expert_domain=mixture")
    steps = lambda p: (p.pretrain_tokens // T, p.special_tokens // T)  # the grid point's (D, D'), in steps
    assert steps(e) == (seed, expert)  # D = f·C, D' = (1 - f)·C / K with K = 4 books
    assert steps(b) == (seed, baseline)  # the baseline: one model of C tokens
    assert steps(e)[0] + 4 * steps(e)[1] == sum(steps(b)) == 40  # equal compute
    if fraction == 1.0:  # pretraining only: one annealed mixture model for every expert domain
        assert e.run_id == b.run_id and e.expert_domain == b.expert_domain == "mixture"
        assert (e.seed_steps, e.expert_steps, e.cooldown_steps) == (32, 8, 8)  # branched 20% of D early
    else:
        assert (e.seed_steps, e.expert_steps, e.cooldown_steps) == (seed, expert, 0)
    assert e.accounting == "shared_seed" and e.n_experts == 4 and e.budget_tokens == 40 * T
    # the same trained model is the same run, whatever accounting named it
    same = plan(tmp_path, f"split.pretrain_tokens={seed * T}", f"split.special_tokens={expert * T}",
                "split.expert_domain=d1")
    assert same.run_id == e.run_id and same.accounting == "per_path"


def test_invalid_fractions_and_accountings(tmp_path):
    # 0.35 of 40 steps is 14 steps, but (40 - 14) / 4 experts is not whole; 0.3 (12 + 4 x 7) and 0.4 are
    with pytest.raises(ConfigError, match=r"shared by 4 experts.*nearest valid fractions: 0.3 or 0.4"):
        plan(tmp_path, *SHARED, "split.pretrain_fraction=0.35", "split.expert_domain=d0")
    assert plan(tmp_path, *SHARED, "split.pretrain_fraction=0.35", "split.expert_domain=mixture").expert_steps == 26
    with pytest.raises(ConfigError, match="per_path, shared_seed"):
        plan(tmp_path, "split.accounting=equal", f"split.budget_tokens={40 * T}", "split.pretrain_fraction=0.5")
    with pytest.raises(ConfigError, match="n_experts"):
        plan(tmp_path, *SHARED, "split.n_experts=0", "split.pretrain_fraction=0.5", "split.expert_domain=d0")


def test_a_shared_seed_grid_records_its_accounting(tmp_path):
    run_cli(tmp_path, "-m", *TINY, *SHARED, "split.pretrain_fraction=0.5,1.0", "split.expert_domain=d0,mixture",
            "report.enabled=false")
    rows = read_rows(tmp_path / "sweeps" / "test")
    assert {r["accounting"] for r in rows} == {"shared_seed"} and {r["budget_tokens"] for r in rows} == {40 * T}
    own = {(r["pretrain_tokens"], r["expert_domain"]): r["special_tokens"] for r in rows}
    # at f = 1 the d0 grid point is the pretraining-only model, recorded once as the mixture's
    assert own == {(20 * T, "d0"): 5 * T, (20 * T, "mixture"): 20 * T, (40 * T, "mixture"): 0}
    assert [r["cooldown_tokens"] for r in rows if r["special_tokens"] == 0] == [8 * T] * 5
    # a per-path run is another experiment in this sweep
    proc = run_cli(tmp_path, *TINY, f"split.budget_tokens={40 * T}", "split.pretrain_fraction=0.5",
                   "split.expert_domain=d0", check=False)
    assert proc.returncode == 2 and "split.accounting" in proc.stderr
