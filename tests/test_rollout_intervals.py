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
from analysis.intervals import (DISTANCE_FLOOR, ROLLOUT_MIN_SIZES, ResidualPool, box_distance, box_of, coverage,
                                fit_residuals, residual_pool, rollout_residuals, rollout_steps)
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
    # one step ahead: each size step predicts that size only, not the sizes after it
    assert np.array_equal(steps[0][1], n < 8e6) and np.array_equal(steps[0][2], n == 8e6)
    assert np.array_equal(steps[1][1], n < 16e6) and np.array_equal(steps[1][2], n == 16e6)
    budget = (rows["pretrain_tokens"] + rows["special_tokens"]).to_numpy()
    assert np.array_equal(steps[2][1], budget < 40 * n * (1 - 1e-9)) and np.array_equal(steps[2][2], ~steps[2][1])
    # too few sizes for an N step, too few budgets for a budget step: no rollout, own residuals instead
    small = rows[(rows["n_params"] <= 4e6) & (budget < 30 * n)]
    assert rollout_steps(small) == [] and ROLLOUT_MIN_SIZES == 3
    fit = fit_law(small.reset_index(drop=True), LAW)
    assert rollout_residuals(fit, small) is None
    pool = residual_pool(fit, small)
    assert pool.source.startswith("the fit's own residuals") and np.allclose(pool.values, fit_residuals(fit, small))
    assert not pool.distances.any() and pool.box is None  # own residuals are in-range noise: never widened


def test_rollout_pool_is_what_the_refits_predict(ladder):
    rows, fit = ladder
    pool = rollout_residuals(fit, rows)
    expect, dist = [], []
    n = rows["n_params"].to_numpy()
    tpp = ((rows["pretrain_tokens"] + rows["special_tokens"]) / rows["n_params"]).to_numpy()
    for _, mask, predicted in rollout_steps(rows):
        part = fit_law(rows[mask].reset_index(drop=True), LAW)
        test = rows[predicted]
        expect.append(np.log(test["eval_loss"].to_numpy()) - np.log(part.predict(LawInputs.from_table(test,
                                                                                                      fit.domains))))
        # how far each predicted run lies beyond its step's training rows along ln N and ln tokens per parameter
        dist.append(np.stack([np.maximum(np.log(n[predicted] / n[mask].max()), 0),
                              np.maximum(np.log(tpp[predicted] / tpp[mask].max()), 0)], axis=1))
    assert np.allclose(pool.values, np.concatenate(expect), atol=1e-6)
    assert np.allclose(pool.distances, np.concatenate(dist))
    k8 = int((n == 8e6).sum())
    assert np.allclose(pool.distances[:k8], [np.log(2), 0])  # 8M from sizes up to 4M: one doubling of N
    assert np.allclose(pool.distances[-1], [0, np.log(2)])  # 40 tokens per parameter from 20: one doubling
    assert residual_pool(fit, rows).source == f"rollouts (3 steps, {len(pool.values)} residuals)"
    # an extrapolation misses by more than the fit misses its own rows
    assert np.sqrt(np.mean(pool.values ** 2)) > np.sqrt(np.mean(fit_residuals(fit, rows, inflate=False) ** 2))
    s = choose_split(fit, 16e6, 40 * 16e6, mixture_weights=domain_weights(rows), rows=rows)
    assert "rollouts (3 steps" in s["prediction_interval_method"]
    far = choose_split(fit, 64e6, 40 * 64e6, mixture_weights=domain_weights(rows), rows=rows)
    assert "widened for a target 1.39 (ln N) and 0.00 (ln tokens per parameter)" in far["prediction_interval_method"]
    assert np.diff(far["predicted_loss_interval"])[0] / far["predicted_loss"] > \
        np.diff(s["predicted_loss_interval"])[0] / s["predicted_loss"]


def test_rollout_intervals_cover_the_held_out_largest_n(ladder):
    rows, _ = ladder
    train = rows[rows["n_params"] < max(SIZES)].reset_index(drop=True)
    test = rows[rows["n_params"] == max(SIZES)]
    fit = fit_law(train, LAW, n_bootstrap=5)
    with_rollouts = coverage(fit, test, 0.8, train_rows=train)
    with_own = coverage(fit, test, 0.8, residuals=fit_residuals(fit, train))
    assert with_rollouts >= 0.65 and with_rollouts >= with_own


def test_box_distance_counts_doublings_outside_the_fitted_range():
    box = box_of([1e6, 4e6], [2e6, 8e7])  # N 1M..4M, tokens per parameter 2..20
    assert np.allclose(box, np.log([[1e6, 4e6], [2, 20]]))
    d = box_distance(box, np.array([2e6, 8e6, 8e6, 0.5e6, 2e6]), np.array([2e7, 16e6, 32e7, 1e6, 2e6]))
    ln2 = np.log(2)
    assert np.allclose(d, [[0, 0], [ln2, 0], [ln2, ln2], [ln2, 0], [0, ln2]])


def test_residuals_widen_along_the_axis_they_were_measured_on():
    """A residual measured one doubling of N out is doubled for a point two doublings of N out, never shrunk for
    a nearer one, and left alone for a point beyond the fitted budgets only (another axis); in-range residuals
    (distance 0) are noise and stay as they are. Every residual gets a random sign."""
    ln2 = np.log(2)
    pool = ResidualPool(np.array([0.01, 0.02, 0.03]), np.array([[ln2, 0], [0, ln2], [0, 0]]), "test",
                        box_of([1], [1]))
    d = np.array([[0, 0], [2 * ln2, 0], [0, 2 * ln2], [ln2 / 2, 0]])
    r = pool.sample(np.random.default_rng(0), (4000, 4), d)
    idx = np.random.default_rng(0).integers(3, size=(4000, 4))
    base = pool.values[idx]
    scale = np.ones((4000, 4))
    scale[:, 1] = np.where(idx[:, 1] == 0, 2, 1)
    scale[:, 2] = np.where(idx[:, 2] == 1, 2, 1)
    assert np.allclose(np.abs(r), base * scale)
    assert 0.45 < np.mean(r > 0) < 0.55  # the sign is not the pool's: all of its residuals are positive here
    # a residual measured very close to its fit is scaled from the floor, not from its tiny distance
    near = ResidualPool(np.array([0.01]), np.array([[1e-6, 0]]), "test", box_of([1], [1]))
    assert np.allclose(np.abs(near.sample(np.random.default_rng(1), (3, 1), [[2 * DISTANCE_FLOOR, 0]])), 0.02)
    assert np.allclose(pool.distance(4.0, 8.0), [[np.log(4), np.log(2)]])
    assert not ResidualPool(pool.values, pool.distances, "no box").distance(4.0, 8.0).any()


def test_rollout_intervals_cover_the_held_out_largest_budget():
    """The held-out largest budget (40 tokens per parameter, from 5 and 10) is predicted by a fit whose rollouts
    are all in N: its intervals are not widened by them, and cover it about as often as they claim."""
    rows = select_rows(load_results(make_sweep(LAW, TRUE_PARAMS["two_source"], n_values=SIZES,
                                               tokens_per_param=(5, 10, 40), fractions=(0, 0.3, 0.6), seed=2,
                                               cross=False, noise=0.02)))
    tpp = (rows["pretrain_tokens"] + rows["special_tokens"]) / rows["n_params"]
    top = tpp > 39
    train, test = rows[~top].reset_index(drop=True), rows[top]
    fit = fit_law(train, LAW, n_bootstrap=5)
    pool = residual_pool(fit, train)
    assert pool.source.startswith("rollouts (2 steps") and not pool.distances[:, 1].any()
    assert 0.7 <= coverage(fit, test, 0.8, train_rows=train) <= 1.0
