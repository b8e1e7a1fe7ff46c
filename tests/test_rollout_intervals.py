"""Prediction intervals from rollouts (issue #10, item 4): a new run's error is what a fit gets wrong about a run
it never saw, so given the rows the intervals resample the residuals of one-step-ahead rollouts (each model size
predicted by the law fitted on the smaller sizes, the largest budget of each size by a fit without it), not the
fit's residuals on its own rows. Checked on a synthetic law: the steps are the ones stated, the pool is what the
refits predict, and intervals built from it cover the held-out largest N about as often as they claim where the
fit's own residuals do not."""
import sys

import numpy as np
import pytest

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))  # repo root
from analysis.fit import fit_law
from analysis.inputs import LawInputs
from analysis.intervals import (ROLLOUT_MIN_SIZES, coverage, fit_residuals, residual_pool, rollout_residuals,
                                rollout_steps)
from analysis.io import domain_weights, load_results, select_rows
from analysis.laws import LAWS
from analysis.split import choose_split
from analysis.synthetic import TRUE_PARAMS, make_sweep

LAW = LAWS["two_source"]
SIZES = (1e6, 2e6, 4e6, 8e6, 16e6)


@pytest.fixture(scope="module")
def ladder():
    rows = select_rows(load_results(make_sweep(LAW, TRUE_PARAMS["two_source"], n_values=SIZES,
                                               fractions=(0, 0.3, 0.6), seed=1, cross=False)))
    return rows, fit_law(rows, LAW)


def test_rollout_steps_are_the_stated_ones(ladder):
    rows, _ = ladder
    steps = rollout_steps(rows)
    assert [s[0] for s in steps] == ["N = 8e+06 from 3 smaller sizes", "N = 1.6e+07 from 4 smaller sizes",
                                     "the largest budget of each N from the smaller ones"]
    n = rows["n_params"].to_numpy()
    assert np.array_equal(steps[0][1], n < 8e6) and np.array_equal(steps[1][1], n < 16e6)
    budget = (rows["pretrain_tokens"] + rows["special_tokens"]).to_numpy()
    assert np.array_equal(steps[2][1], budget < 40 * n * (1 - 1e-9))
    # too few sizes for an N step, too few budgets for a budget step: no rollout, own residuals instead
    small = rows[(rows["n_params"] <= 4e6) & (budget < 30 * n)]
    assert rollout_steps(small) == [] and ROLLOUT_MIN_SIZES == 3
    fit = fit_law(small.reset_index(drop=True), LAW)
    assert rollout_residuals(fit, small) is None
    pool, source = residual_pool(fit, small)
    assert source.startswith("the fit's own residuals") and np.allclose(pool, fit_residuals(fit, small))


def test_rollout_pool_is_what_the_refits_predict(ladder):
    rows, fit = ladder
    pool = rollout_residuals(fit, rows)
    expect = []
    for _, mask in rollout_steps(rows):
        part = fit_law(rows[mask].reset_index(drop=True), LAW)
        test = rows[~mask]
        expect.append(np.log(test["eval_loss"].to_numpy()) - np.log(part.predict(LawInputs.from_table(test,
                                                                                                      fit.domains))))
    assert np.allclose(pool, np.concatenate(expect), atol=1e-6)
    _, source = residual_pool(fit, rows)
    assert source == f"rollouts (3 steps, {len(pool)} residuals)"
    # an extrapolation misses by more than the fit misses its own rows
    assert np.sqrt(np.mean(pool ** 2)) > np.sqrt(np.mean(fit_residuals(fit, rows, inflate=False) ** 2))
    s = choose_split(fit, 16e6, 40 * 16e6, mixture_weights=domain_weights(rows), rows=rows)
    assert "rollouts (3 steps" in s["prediction_interval_method"]


def test_rollout_intervals_cover_the_held_out_largest_n(ladder):
    rows, _ = ladder
    train = rows[rows["n_params"] < max(SIZES)].reset_index(drop=True)
    test = rows[rows["n_params"] == max(SIZES)]
    fit = fit_law(train, LAW, n_bootstrap=5)
    with_rollouts = coverage(fit, test, 0.8, train_rows=train)
    with_own = coverage(fit, test, 0.8, residuals=fit_residuals(fit, train))
    assert with_rollouts >= 0.65 and with_rollouts > with_own
