"""Held-out validation picks the law that generated the data."""
import sys

import numpy as np
import pytest

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))  # repo root
from analysis.fit import fit_law
from analysis.io import load_results, select_rows
from analysis.laws import LAWS
from analysis.pipeline import analyze
from analysis.synthetic import TRUE_PARAMS, make_sweep
from analysis.validate import heldout_splits, pick_law, shared_screening


@pytest.mark.parametrize("law_name", list(LAWS))
def test_auto_picks_the_generating_law(law_name):
    df = select_rows(load_results(make_sweep(LAWS[law_name], TRUE_PARAMS[law_name], noise=0.003, seed=11,
                                             n_values=(1e6, 2e6, 4e6, 8e6), tokens_per_param=(10, 40),
                                             fractions=(0, 0.25, 0.5, 0.75, 1))))
    result = analyze(df, "auto")
    assert result.chosen == law_name, result.why
    for name in LAWS:
        checks = result.checks[name]
        assert "mean_rel_error" in checks["largest_N"] and "mean_rel_error" in checks["largest_T"]
    assert result.scores[law_name] < 0.01  # the generating law predicts held-out runs within 1%


def test_ties_go_to_the_simpler_law():
    best, why = pick_law({"chinchilla": 0.0100, "two_source": 0.0099, "transfer": 0.05},
                         {"chinchilla": 5, "two_source": 8, "transfer": 8})
    assert best == "chinchilla" and "fewest parameters" in why
    best, _ = pick_law({"chinchilla": 0.02, "two_source": 0.01}, {"chinchilla": 5, "two_source": 8})
    assert best == "two_source"


def _ladder(law_name="two_source", seed=3):
    return select_rows(load_results(make_sweep(LAWS[law_name], TRUE_PARAMS[law_name], noise=0.003, seed=seed,
                                               n_values=(1e6, 2e6, 4e6, 8e6), tokens_per_param=(10, 20, 40),
                                               fractions=(0, 0.25, 0.5, 0.75, 1))))


def test_the_shared_screening_sees_no_held_out_row():
    df = _ladder()
    law = LAWS["two_source"]
    screened = shared_screening(df, law, per_domain=True)
    extrapolation, _ = heldout_splits(df)
    in_every_training_set = np.logical_and.reduce([mask for _, mask, _ in extrapolation])
    assert screened is not None and screened.n_rows == int(in_every_training_set.sum()) < len(df)
    # Held-out losses made absurd change nothing: the starts are chosen on the other rows alone.
    spoiled = df.copy()
    spoiled.loc[~in_every_training_set, "eval_loss"] *= 3.0
    again = shared_screening(spoiled, law, per_domain=True)
    np.testing.assert_array_equal(again.theta, screened.theta)
    assert again.labels == screened.labels


@pytest.mark.parametrize("law_name", ["two_source", "transfer"])
def test_fits_from_the_shared_screening_reach_the_optimum_of_their_own(law_name):
    df = _ladder(law_name)
    law = LAWS[law_name]
    screened = shared_screening(df, law, per_domain=True)
    for mask in [np.ones(len(df), bool)] + [m for _, m, _ in heldout_splits(df)[0]]:
        train = df[mask].reset_index(drop=True)
        own = fit_law(train, law, per_domain=True, domains=sorted(df["eval_domain"].unique()))
        shared = fit_law(train, law, per_domain=True, domains=sorted(df["eval_domain"].unique()), screened=screened)
        assert shared.n_starts == own.n_starts
        assert shared.objective <= own.objective * (1 + 1e-6)


def test_a_screening_of_another_layout_is_ignored():
    df = _ladder()
    screened = shared_screening(df, LAWS["two_source"], per_domain=False)
    fit = fit_law(df, LAWS["two_source"], per_domain=True, screened=screened)
    assert fit.layout.size > len(screened.labels)  # the per-domain grid, screened on its own
    assert fit.objective <= fit_law(df, LAWS["two_source"], per_domain=True).objective * (1 + 1e-9)
