"""Shared-seed accounting in the measured split and the held-out checks: runs are grouped by the budget C
(C = D + K·D' for an expert, D + D' for the mixture baseline, one model of C tokens), not by D + D', which
changes with the fraction at a fixed C; the baseline is matched at the same (N, C, D) (its D' is K times
the expert's)."""
import sys

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))  # repo root
from analysis.intervals import heldout_coverage
from analysis.io import MIXTURE, budget_of, domain_weights, load_results, select_rows
from analysis.laws import LAWS
from analysis.pipeline import analyze
from analysis.report import accounting_budget, sweep_accounting
from analysis.split import choose_split
from analysis.validate import heldout

N, C, K = 200_000, 1_024_000, 4
FRACTIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# The default phonebook sweep (README): each expert on its own book, the mixture model on each book.
EXPERT = dict(zip(FRACTIONS, (1.232, 0.542, 0.320, 0.300, 0.291, 0.404)))
BASELINE = dict(zip(FRACTIONS, (0.476, 0.447, 0.413, 0.393, 0.374, 0.404)))  # at f = 1 the same model
BOOKS = ("d0", "d1", "d2", "d3")


def default_sweep(budgets=(C,), scale=lambda c: 1.0) -> pd.DataFrame:
    """A shared-seed sweep like the default phonebook one: at each C, a seed of D = f·C shared by K experts of
    D' = (1 - f)·C / K, the baseline the seed continued on the mixture for (1 - f)·C, and at f = 1 one
    pretraining-only model (the mixture model, evaluated on each book). Book i adds 0.001·i to the loss."""
    rows = []
    for c in budgets:
        for f in FRACTIONS:
            for e in BOOKS + (MIXTURE,):
                if f == 1.0 and e != MIXTURE:
                    continue  # at f = 1 both sides are the same pretraining-only model
                dp = (1 - f) * c / (K if e != MIXTURE else 1)
                for ev in BOOKS:
                    if e != MIXTURE and ev != e:
                        continue
                    loss = (EXPERT if e != MIXTURE else BASELINE)[f] * scale(c) + 0.001 * int(ev[1])
                    rows.append(dict(run_id=f"{c}-{e}-{f}", n_params=N, pretrain_tokens=f * c, special_tokens=dp,
                                     expert_domain=e, eval_domain=ev, mixture_weight=0.25, eval_loss=loss,
                                     accounting="shared_seed", budget_tokens=c, n_experts=K, status="ok"))
    return pd.DataFrame(rows)


def mean_over_books(values, f):
    return float(np.mean([values[f] + 0.001 * i for i in range(len(BOOKS))]))


def test_budget_of_is_the_recorded_budget():
    raw = default_sweep()
    table = load_results(raw)
    assert not np.allclose(table["budget_tokens"], raw["budget_tokens"])  # tidy makes it D + D'
    assert np.array_equal(budget_of(table).to_numpy(), raw["budget_tokens"].to_numpy(float))
    assert np.array_equal(accounting_budget(table, "shared-seed", K).to_numpy(), raw["budget_tokens"].to_numpy(float))
    # per path (or a table without the accounting column) the budget is D + D', as tidy has it
    assert np.array_equal(budget_of(table, "per-path").to_numpy(), table["budget_tokens"].to_numpy())
    old = load_results(raw.drop(columns=["accounting", "n_experts", "budget_tokens"]))
    assert np.array_equal(budget_of(old).to_numpy(), old["budget_tokens"].to_numpy())


def test_default_sweep_measured_split_searches_every_fraction():
    table = load_results(default_sweep())
    rows = select_rows(table)
    sweep = sweep_accounting(table)
    assert sweep["accounting"] == "shared-seed" and sweep["k"] == K
    fit = analyze(rows, "auto", n_bootstrap=2, progress=False).split_fit
    s = choose_split(fit, N, C, accounting=sweep["accounting"], mixture_weights=domain_weights(rows), rows=rows)
    scale = s["search"]["measured_at"]
    assert scale["exact"] and scale["path_tokens"] == C and scale["tokens_range"] == [C, C]
    assert scale["fractions"] == pytest.approx(list(FRACTIONS))  # not just 1.0
    assert s["search"]["measured_fractions"] == [0.0, 1.0] and s["search"]["range"] == [0.0, 1.0]
    assert "C = D + K·D' = 1.024e+06" in scale["where"]

    m = s["measured"]
    curve = m["curve"]
    assert [c["pretrain_fraction"] for c in curve] == pytest.approx(list(FRACTIONS))
    for c in curve:
        f = round(c["pretrain_fraction"], 6)
        assert c["compute_tokens"] == pytest.approx(C) and c["baseline_compute_tokens"] == pytest.approx(C)
        assert c["expert_loss"] == pytest.approx(mean_over_books(EXPERT, f))
        assert c["baseline_loss"] == pytest.approx(mean_over_books(BASELINE, f))  # the baseline at (N, C, D)
        assert c["baseline_special_tokens"] == pytest.approx((1 - f) * C)  # K times the expert's D'
    pre, best, base = (mean_over_books(EXPERT, 1.0), mean_over_books(EXPERT, 0.8), mean_over_books(BASELINE, 0.8))
    assert m["best_fraction"] == pytest.approx(0.8) and m["best_loss"] == pytest.approx(best)
    assert m["pretrain_only_loss"] == pytest.approx(pre)
    assert m["gain_vs_pretrain_only"] == pytest.approx((pre - best) / pre)
    assert m["gain_vs_pretrain_only"] == pytest.approx((0.404 - 0.291) / 0.404, abs=2e-3)
    assert m["baseline_loss_at_best"] == pytest.approx(base)
    assert m["gain_vs_baseline_same_fraction"] == pytest.approx((base - best) / base)
    assert m["gain_vs_baseline_same_fraction"] == pytest.approx((0.374 - 0.291) / 0.374, abs=2e-3)
    assert not m["best_is_edge"]


def test_heldout_checks_hold_out_the_largest_c():
    one = select_rows(load_results(default_sweep()))
    law = LAWS["chinchilla"]
    checks, _ = heldout(one, law)
    assert checks["largest_T"] == {"skipped": "one budget C in the data"}  # one C, though D + D' varies
    assert "mean_rel_error" in checks["runs_kfold"]

    two = select_rows(load_results(default_sweep(budgets=(C, 2 * C), scale=lambda c: 1.0 if c == C else 0.9)))
    checks, table = heldout(two, law)
    assert checks["largest_T"]["held_out"] == "C = 2.048e+06"
    assert checks["largest_T"]["n_test"] == int((budget_of(two) == 2 * C).sum()) == len(two) // 2
    assert "runs_kfold" not in checks
    held = table[table["check"] == "largest_T"]
    assert set(held["run_id"]) == {r for r in two["run_id"] if r.startswith(f"{2 * C}-")}
    cov = heldout_coverage(two, law, n_bootstrap=2, n_resample=200)
    assert cov["largest_T"]["held_out"] == "C = 2.048e+06"
    assert cov["largest_T"]["n_rows"] == len(two) // 2 and cov["largest_T"]["n_runs"] == two["run_id"].nunique() // 2
