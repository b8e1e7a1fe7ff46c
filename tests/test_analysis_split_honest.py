"""The split, honestly (issue #10, item 4 and the analysis side of item 5): D*/T is searched only where it
was measured unless asked to extrapolate, the measured best point is reported beside the fitted one (with
the baseline at the same fraction), predictions beyond the fitted range say by how much and carry
prediction intervals that cover what they claim, and the compute of each side is stated."""
import sys
import json

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))  # repo root
from analysis.cli import main
from analysis.fit import fit_law
from analysis.inputs import LawInputs
from analysis.intervals import (coverage, coverage_sentence, fit_residuals, heldout_coverage, prediction_interval,
                                residual_pool, rollout_residuals, rollout_steps)
from analysis.io import domain_weights, load_results, select_rows
from analysis.laws import LAWS
from analysis.split import choose_split
from analysis.synthetic import TRUE_PARAMS, make_sweep

LAW = LAWS["two_source"]
GRID = dict(n_values=(1e6, 4e6, 16e6), tokens_per_param=(10, 40))
# eta = 0.1 and a strong domain term put the optimum of this law at D*/T = 0.20 (for every N and T here).
LOW_OPTIMUM = dict(TRUE_PARAMS["two_source"], eta=0.1, C=1000.0)


def rows_of(table):
    return select_rows(load_results(table))


@pytest.fixture(scope="module")
def high_fractions():
    """Measured only at fractions 0.5-0.9 (and pretraining only, 1.0) of a law whose optimum is at 0.2."""
    rows = rows_of(make_sweep(LAW, LOW_OPTIMUM, fractions=(0.5, 0.6, 0.7, 0.8, 0.9), noise=0.001, seed=2, **GRID))
    return rows, fit_law(rows, LAW, n_bootstrap=10)


@pytest.fixture(scope="module")
def noisy():
    """The synthetic law with 0.5% noise, fitted with a bootstrap."""
    rows = rows_of(make_sweep(LAW, TRUE_PARAMS["two_source"], fractions=(0, 0.3, 0.6, 1), seed=1, **GRID))
    return rows, fit_law(rows, LAW, n_bootstrap=10)


# ---- (a) no silent extrapolation of D*/T ---------------------------------------------------------------

def test_split_search_stays_in_the_measured_fractions(high_fractions):
    rows, fit = high_fractions
    mix = domain_weights(rows)
    s = choose_split(fit, 4e6, 1.6e8, mixture_weights=mix, rows=rows)
    assert s["pretrain_fraction"] == pytest.approx(0.5)
    assert s["search"]["measured_fractions"] == [0.5, 1.0] and s["search"]["range"] == [0.5, 1.0]
    assert s["search"]["at_edge"] == "lower" and s["search"]["outside_measured"]
    assert s["search"]["unconstrained_fraction"] == pytest.approx(0.2, abs=0.05)
    assert 0.5 <= s["pretrain_fraction_ci"][0] <= s["pretrain_fraction_ci"][1] <= 1.0
    [w] = s["warnings"]
    assert "D*/T = 0.50 is at the lower edge of the measured fractions 0.50–1.00" in w
    assert "run fractions below 0.50 to bracket it" in w
    assert w in s["notes"]  # the report renders the notes
    assert s["search"]["measured_at"]["exact"]

    e = choose_split(fit, 4e6, 1.6e8, mixture_weights=mix, rows=rows, extrapolate=True)
    assert e["pretrain_fraction"] == pytest.approx(0.2, abs=0.05)
    assert e["search"]["range"] == [0.0, 1.0] and e["search"]["at_edge"] is None
    [w] = e["warnings"]
    assert f"D*/T = {e['pretrain_fraction']:.2f} is outside the measured fractions 0.50–1.00: extrapolated" in w
    lo, hi = e["pretrain_fraction_ci"]
    assert lo <= e["pretrain_fraction"] <= hi < 0.5  # the interval is over [0, 1], so it includes the extrapolation
    assert e["predicted_loss"] < s["predicted_loss"]

    # Measured down to 0.1, the same optimum is inside the measured range: no warning, same answer.
    wide = rows_of(make_sweep(LAW, LOW_OPTIMUM, fractions=(0.1, 0.3, 0.5, 0.7, 0.9), noise=0.001, seed=2, **GRID))
    ok = choose_split(fit, 4e6, 1.6e8, mixture_weights=mix, rows=wide)
    assert ok["warnings"] == [] and ok["search"]["at_edge"] is None
    assert ok["pretrain_fraction"] == pytest.approx(e["pretrain_fraction"], abs=1e-4)


def test_cli_split_extrapolate_flag(high_fractions, tmp_path, capsys):
    rows, _ = high_fractions
    src = tmp_path / "results.jsonl"
    src.write_text(make_sweep(LAW, LOW_OPTIMUM, fractions=(0.5, 0.6, 0.7, 0.8, 0.9), noise=0.001, seed=2,
                              **GRID).to_json(orient="records", lines=True))
    args = ["split", str(src), "--n-params", "4e6", "--budget-tokens", "1.6e8", "--law", "two_source",
            "--n-bootstrap", "3", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    s = json.loads((tmp_path / "a" / "split.json").read_text())
    assert s["pretrain_fraction"] == pytest.approx(0.5) and s["search"]["at_edge"] == "lower"
    assert "run fractions below 0.50 to bracket it" in capsys.readouterr().err
    assert main(args + ["--extrapolate", "--out", str(tmp_path / "b")]) == 0
    e = json.loads((tmp_path / "b" / "split.json").read_text())
    assert e["search"]["extrapolate"] and e["pretrain_fraction"] < 0.5
    assert "extrapolated" in capsys.readouterr().err
    assert {"measured", "compute", "extrapolation", "predicted_loss_interval"} <= set(e)


# ---- (b) the measured best point, with the baseline at the same fraction ----------------------------------

N0, T0 = 4.3e5, 2e6
FRACTIONS = (0.0, 0.25, 0.5, 0.75)
WEIGHTS = {"d0": 0.75, "d1": 0.25}


def expert_loss(dom, f):
    return 2.0 + (f - 0.5) ** 2 if dom == "d0" else 2.2 + 0.5 * (f - 0.25) ** 2


def baseline_loss(dom, f):
    # The mixture model seeded at f*T and continued on the mixture: far from its mean over fractions at 0.5.
    return (2.6 if dom == "d0" else 2.5) - 0.6 * f


PRETRAIN_ONLY = {"d0": 2.45, "d1": 2.35}


def designed_table():
    """One N, one budget, 2 domains; experts at 4 fractions, the baseline at the same 4 and at D' = 0."""
    rows = []

    def add(expert, f, loss_of):
        d, dp = f * T0, (1 - f) * T0
        for ev in ("d0", "d1"):
            if expert != "mixture" and ev != expert:
                continue
            rows.append(dict(run_id=f"{expert}-{f}", n_params=N0, pretrain_tokens=d, special_tokens=dp,
                             expert_domain=expert, eval_domain=ev, mixture_weight=0.5, eval_loss=loss_of(ev, f)))
    for f in FRACTIONS:
        for dom in ("d0", "d1"):
            add(dom, f, expert_loss)
        add("mixture", f, baseline_loss)
    add("mixture", 1.0, lambda ev, f: PRETRAIN_ONLY[ev])
    return pd.DataFrame(rows)


def weighted(fn, f):
    return sum(w * fn(d, f) for d, w in WEIGHTS.items())


def test_measured_best_point_uses_the_baseline_at_the_same_fraction():
    rows = rows_of(designed_table())
    fit = fit_law(rows, LAW, n_bootstrap=4)
    s = choose_split(fit, N0, T0, mixture_weights=domain_weights(rows), weighting=WEIGHTS, rows=rows)
    m = s["measured"]
    assert m["scale"]["exact"] and m["domain_weights"] == WEIGHTS
    curve = m["curve"]
    assert [c["pretrain_fraction"] for c in curve] == [0.0, 0.25, 0.5, 0.75, 1.0]
    pre = sum(w * PRETRAIN_ONLY[d] for d, w in WEIGHTS.items())
    for c in curve[:-1]:
        f = c["pretrain_fraction"]
        assert c["expert_loss"] == pytest.approx(weighted(expert_loss, f))
        assert c["baseline_loss"] == pytest.approx(weighted(baseline_loss, f))  # same fraction, not a mean
    assert curve[-1]["expert_loss"] == pytest.approx(pre) and curve[-1]["baseline_loss"] == pytest.approx(pre)

    expected = {f: weighted(expert_loss, f) for f in FRACTIONS}
    best = min(expected, key=expected.get)
    assert best == 0.5  # d0 (weight 0.75) has its optimum at 0.5, d1 at 0.25
    assert m["best_fraction"] == best and m["best_loss"] == pytest.approx(expected[best])
    same = weighted(baseline_loss, best)
    mean_over_fractions = np.mean([weighted(baseline_loss, f) for f in FRACTIONS] + [pre])
    assert abs(same - mean_over_fractions) > 0.05  # the construction tells the two apart
    assert m["baseline_loss_at_best"] == pytest.approx(same)
    assert m["gain_vs_baseline_same_fraction"] == pytest.approx((same - expected[best]) / same)
    assert m["pretrain_only_loss"] == pytest.approx(pre)
    assert m["gain_vs_pretrain_only"] == pytest.approx((pre - expected[best]) / pre)
    # the law's gains at the same points, their bootstrap intervals and whether the measurement agrees
    for name in ("pretrain_only", "baseline_same_fraction"):
        lo, hi = m[f"predicted_gain_vs_{name}_ci"]
        assert lo <= hi and isinstance(m[f"predicted_gain_vs_{name}"], float)
        measured = m["gain_vs_pretrain_only" if name == "pretrain_only" else "gain_vs_baseline_same_fraction"]
        assert m[f"agrees_{name}"] == (lo <= measured <= hi)
    assert m["agrees"] == m["agrees_pretrain_only"]
    assert "measured best split at N = 4.3e+05" in m["statement"]
    assert "fitted_at_scale" in m

    # A scale that was not measured: the nearest measured one, said so.
    far = choose_split(fit, 2 * N0, 3 * T0, mixture_weights=domain_weights(rows), weighting=WEIGHTS, rows=rows)
    assert not far["measured"]["scale"]["exact"]
    assert far["measured"]["scale"]["statement"].startswith("nearest measured scale to the requested N = 8.6e+05")
    assert far["measured"]["best_fraction"] == best


# ---- (c) prediction intervals and extrapolation factors --------------------------------------------------

def test_prediction_intervals_cover_fresh_draws(noisy):
    rows, fit = noisy
    covered, n = 0.0, 0
    for seed in (11, 12, 13):
        fresh = rows_of(make_sweep(LAW, TRUE_PARAMS["two_source"], fractions=(0, 0.3, 0.6, 1), seed=seed, **GRID))
        covered += coverage(fit, fresh, 0.8, train_rows=rows) * len(fresh)
        n += len(fresh)
    assert n >= 250
    assert 0.6 <= covered / n <= 0.95
    # a wider interval covers more; the interval brackets the prediction
    fresh = rows_of(make_sweep(LAW, TRUE_PARAMS["two_source"], fractions=(0, 0.3, 0.6, 1), seed=11, **GRID))
    assert coverage(fit, fresh, 0.5, train_rows=rows) < coverage(fit, fresh, 0.95, train_rows=rows)
    x = LawInputs.from_table(fresh, fit.domains)
    lo, hi = prediction_interval(fit, x, 0.8, rows=rows)
    assert np.all(lo < fit.predict(x)) and np.all(fit.predict(x) < hi)


def test_target_beyond_the_fitted_range_says_by_how_much(noisy):
    rows, fit = noisy
    mix = domain_weights(rows)
    n_max = rows["n_params"].max()
    s = choose_split(fit, 20 * n_max, 6.4e8, mixture_weights=mix, rows=rows)
    ex = s["extrapolation"]
    assert ex["n_factor"] == pytest.approx(20) and ex["n"]["side"] == "above" and ex["beyond"]
    assert ex["t_factor"] == pytest.approx(1.0) and ex["budget"]["side"] == "inside"
    assert "is 20x the largest fitted" in ex["statement"]
    assert any("20x the largest fitted" in w and "80% prediction interval" in w for w in s["warnings"])
    lo, hi = s["predicted_loss_interval"]
    assert lo < s["predicted_loss"] < hi and ex["prediction_interval"] == [lo, hi]
    below = choose_split(fit, rows["n_params"].min() / 4, 1e7 / 2, mixture_weights=mix, rows=rows)
    assert below["extrapolation"]["n_factor_below_min"] == pytest.approx(4)
    assert below["extrapolation"]["t_factor_below_min"] == pytest.approx(2)
    inside = choose_split(fit, 4e6, 1.6e8, mixture_weights=mix, rows=rows)
    assert not inside["extrapolation"]["beyond"] and inside["warnings"] == []


def test_heldout_coverage_per_check(noisy):
    rows, _ = noisy
    checks = heldout_coverage(rows, LAW, n_bootstrap=4)
    assert set(checks) == {"largest_N", "largest_T"}
    for c in checks.values():
        assert c["level"] == 0.8 and 0 <= c["covered"] <= c["n_rows"] and c["coverage"] == c["covered"] / c["n_rows"]
    assert checks["largest_N"]["n_rows"] == int((rows["n_params"] == rows["n_params"].max()).sum())
    text = coverage_sentence(checks)
    assert text.startswith("80% prediction intervals covered ")
    assert f"{checks['largest_N']['covered']} of {checks['largest_N']['n_rows']} held-out points" in text


# ---- (d) compute accounting -------------------------------------------------------------------------------

def test_compute_accounting_both_accountings(noisy):
    rows, fit = noisy
    mix = domain_weights(rows)
    n, t, k = 4e6, 1.6e8, 4
    p = choose_split(fit, n, t, mixture_weights=mix, rows=rows)
    c = p["compute"]
    assert c["accounting"] == "per-path" and c["k_experts"] == k and c["flops_per_token"] == 6 * n
    assert c["split"]["tokens"] == pytest.approx(k * t) and c["split"]["flops"] == pytest.approx(6 * n * k * t)
    assert c["split"]["tokens_per_model"] == pytest.approx(t)
    assert c["split"]["tokens_if_seed_trained_once"] == pytest.approx(p["pretrain_tokens"] + k * p["special_tokens"])
    assert c["pretrain_only"] == {"models": 1, "tokens": t, "flops": pytest.approx(6 * n * t)}
    assert c["baseline"]["tokens"] == pytest.approx(t) and c["baseline"]["flops"] == pytest.approx(6 * n * t)
    assert f"each of the K = {k} experts trains T = D + D' = 1.6e+08 tokens" in c["statement"]
    assert "K·T = 6.4e+08 tokens" in c["statement"] and "pretraining only trains one model of T" in c["statement"]

    C = 4e8
    s = choose_split(fit, n, C, accounting="shared-seed", mixture_weights=mix, rows=rows)
    c = s["compute"]
    assert c["accounting"] == "shared-seed"
    assert s["pretrain_tokens"] + k * s["special_tokens"] == pytest.approx(C)
    assert c["split"]["tokens"] == pytest.approx(C) and c["split"]["flops"] == pytest.approx(6 * n * C)
    assert c["split"]["tokens_per_model"] == pytest.approx(s["pretrain_tokens"] + s["special_tokens"])
    assert c["pretrain_only"]["tokens"] == pytest.approx(C) and c["pretrain_only"]["flops"] == pytest.approx(6 * n * C)
    assert c["baseline"]["tokens"] == pytest.approx(C)
    assert f"K = {k} experts × D'" in c["statement"] and "one model of C = 4e+08 tokens" in c["statement"]
    # measured points are in the same accounting: D/C and C = D + K·D'
    for pt in s["measured"]["curve"]:
        assert pt["compute_tokens"] == pytest.approx(pt["pretrain_tokens"] + k * pt["special_tokens"])
        assert pt["compute_flops"] == pytest.approx(6 * s["measured"]["scale"]["n_params"] * pt["compute_tokens"])
        assert pt["pretrain_fraction"] == pytest.approx(pt["pretrain_tokens"] / pt["compute_tokens"])


def test_prediction_interval_from_the_data_the_fit_carries(noisy):
    """Without rows=, the residuals come from the data the fit carries (when fit_law stores them)."""
    rows, fit = noisy
    if getattr(fit, "problem", None) is None:
        pytest.skip("this FitResult does not carry its data")
    x = LawInputs.from_table(rows, fit.domains)
    own = fit_residuals(fit, rows)
    assert np.allclose(prediction_interval(fit, x, 0.8), prediction_interval(fit, x, 0.8, residuals=own))
    assert coverage(fit, rows, 0.8) == coverage(fit, rows, 0.8, residuals=own)


def test_the_monte_carlo_error_of_an_interval_end_is_large_for_a_thin_tail_and_shrinks_with_resamples():
    from analysis.split import percentile_mc_error

    rng = np.random.default_rng(0)
    q = [2.5, 97.5]

    def edge_with_tail(n):  # D* at pretraining only in 90% of the resamples, spread below in the rest
        return np.where(rng.random(n) < 0.9, 1.0, rng.uniform(0.2, 0.9, n))

    few, many = percentile_mc_error(edge_with_tail(50), q), percentile_mc_error(edge_with_tail(2000), q)
    assert few[1] == 0.0 and many[1] == 0.0  # the upper end sits on the atom at 1.0
    assert few[0] > 0.05 and many[0] < few[0] / 3
    dense = percentile_mc_error(rng.normal(0.5, 0.01, 2000), q)
    assert max(dense) < 0.002
