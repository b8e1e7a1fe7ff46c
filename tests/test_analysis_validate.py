"""Held-out validation picks the law that generated the data."""
import sys
import pytest

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))  # repo root
from analysis.io import load_results, select_rows
from analysis.laws import LAWS
from analysis.pipeline import analyze
from analysis.synthetic import TRUE_PARAMS, make_sweep
from analysis.validate import pick_law


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
