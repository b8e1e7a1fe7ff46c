"""The loop of issue #15 with real training: a deliberately poor grid (2 sizes, 2 budgets, fractions 1/2 and 1),
then three rounds of `python -m analysis next` whose printed command is run as is (the sweep file of exactly the
proposed points), each followed by a refit: after three rounds the interval of D*/C at the target is narrower than
on the poor grid, and no round widens it by more than the Monte Carlo error of the interval's ends (1,000 bootstrap
resamples: measured 0.481, 0.476, 0.442, 0.387; with 20 resamples the same fits gave 0.84, 0.52, 0.40, 0.57:
benchmarks/README.md §9)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import next_loop  # noqa: E402


def test_three_rounds_of_next_narrow_the_interval(tmp_path):
    history = next_loop.loop(tmp_path, rounds=3, max_runs=4, n_bootstrap=1000)
    widths = [h["width"] for h in history]
    assert len(widths) == 4 and all(h["runs"] == 4 and h["cost_flops"] > 0 for h in history[:3])
    assert widths[-1] < widths[0] and min(widths[1:]) < widths[0], widths
    for before, after in zip(history, history[1:]):
        noise = 2 * (before["mc_error"] ** 2 + after["mc_error"] ** 2) ** 0.5
        assert after["width"] <= before["width"] + noise, (widths, [h["mc_error"] for h in history])
    rows = (tmp_path / "outputs" / "sweeps" / "next_loop" / "results.jsonl").read_text().splitlines()
    assert len(rows) > 24  # the proposed runs joined the sweep's own table
