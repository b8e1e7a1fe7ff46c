"""`python -m analysis next` (issue #15): the runs that most shrink the interval of D*/T at a target, per FLOP.

Checked on synthetic sweeps of a known law (the proposal beats random runs of the same cost when the new runs
are actually measured and refitted), on what a run costs given what the records already trained, on the files
it writes (next.json, a sweep file of exactly those points for hydra/sweeper=points) and on bad input."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from analysis.cli import main
from analysis.errors import AnalysisError
from analysis.fit import fit_law
from analysis.io import load_results, select_rows
from analysis.laws import LAWS
from analysis.next_runs import Candidate, candidates, propose, run_cost_tokens, trained_seeds
from analysis.synthetic import TRUE_PARAMS, make_sweep

import bench_next  # the benchmark's own comparison, so the test checks what the README's numbers measure

LAW = LAWS["two_source"]


@pytest.fixture(scope="module")
def poor():
    table = make_sweep(LAW, TRUE_PARAMS["two_source"], seed=0, **bench_next.GRID)
    table["sweep"] = "poor"
    rows = select_rows(load_results(table))
    return table, rows, fit_law(rows, LAW, n_bootstrap=8)


def test_proposed_runs_shrink_the_interval_more_than_random_runs_of_equal_cost():
    res = [bench_next.one_seed(seed, 0.1, 8) for seed in (0, 1)]
    for r in res:
        assert r["cost_random"] <= r["cost_proposed"] * (1 + 1e-9) and r["cost_random"] > 0.8 * r["cost_proposed"]
        assert r["width_proposed"] < r["width_before"]
        # the linear picture's expected width is the measured one within a factor of two
        assert 0.5 < r["expected_width"] / r["width_proposed"] < 2
    assert np.mean([r["width_proposed"] for r in res]) < np.mean([r["width_random"] for r in res])


def test_costs_count_what_the_records_trained(poor):
    table, _, _ = poor
    seeds = trained_seeds(load_results(table))
    n = 1e6
    assert seeds[n] == sorted({0.0, 6e6, 24e6, 10e6, 40e6})  # D of every run at N = 1e6 (0.6·T, and T itself)
    trained = Candidate(n, 6e6, 4e6, "d0", 10e6, 0.6)
    assert run_cost_tokens(trained, seeds, 0.0) == 4e6  # the seed exists: only the expert phase
    longer = Candidate(n, 8e6, 2e6, "d0", 10e6, 0.8)
    assert run_cost_tokens(longer, seeds, 0.0) == 2e6 + 2e6  # from the 6M checkpoint, then the expert
    fresh = Candidate(3e6, 8e6, 2e6, "d0", 10e6, 0.8)
    assert run_cost_tokens(fresh, seeds, 0.0) == 10e6
    only = Candidate(n, 10e6, 0.0, "mixture", 10e6, 1.0)
    assert run_cost_tokens(only, seeds, 0.2) == pytest.approx(2e6 + 2e6)  # 8M from the 6M seed, a 2M decay
    # nothing already measured is proposed again
    cands = candidates(load_results(table), ["d0", "d1", "d2", "d3"], 8e6, 3.2e8, "per-path", 4, None)
    have = {(r.n_params, r.expert_domain, round(r.pretrain_tokens / (r.pretrain_tokens + r.special_tokens), 3))
            for r in table.itertuples() if r.pretrain_tokens + r.special_tokens in (10 * r.n_params, 40 * r.n_params)}
    assert cands and not any((c.n_params, c.expert_domain, round(c.pretrain_fraction, 3)) in have
                             and c.budget_tokens in (10 * c.n_params, 40 * c.n_params) for c in cands)


def test_budget_spent_in_order_and_seeds_shared(poor):
    table, rows, fit = poor
    grid = float(table.drop_duplicates("run_id")["flops"].sum())
    out = propose(fit, load_results(table), rows, target_n=8e6, target_budget=3.2e8, accounting="per-path",
                  compute_budget=0.05 * grid)
    assert 0 < out["cost_flops"] <= 0.05 * grid * (1 + 1e-9)
    assert out["cost_flops"] == pytest.approx(sum(r["cost_flops"] for r in out["runs"]))
    ratios = [r["expected_width_ratio"] for r in out["runs"]]
    assert all(b <= a + 1e-12 for a, b in zip(ratios, ratios[1:])) and ratios[-1] == pytest.approx(out["width_ratio"])
    lo, hi = out["expected_interval"]
    clo, chi = out["current"]["interval"]
    assert clo <= lo <= hi <= chi and (hi - lo) < (chi - clo)
    few = propose(fit, load_results(table), rows, target_n=8e6, target_budget=3.2e8, accounting="per-path",
                  max_runs=3)
    assert len(few["runs"]) == 3


def test_cli_writes_next_json_and_a_sweep_of_exactly_those_points(poor, tmp_path, capsys):
    table, _, _ = poor
    src = tmp_path / "rows.jsonl"
    table.to_json(src, orient="records", lines=True)
    out = tmp_path / "next"
    assert main(["next", str(src), "--law", "two_source", "--n-bootstrap", "4", "--target-n-params", "8e6",
                 "--target-budget-tokens", "3.2e8", "--max-runs", "4", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    nxt = json.loads((out / "next.json").read_text())
    assert len(nxt["runs"]) == 4 and nxt["cost_flops"] > 0 and len(nxt["expected_interval"]) == 2
    for r in nxt["runs"]:
        assert {"n_params", "pretrain_tokens", "special_tokens", "expert_domain"} <= set(r) and r["n_params"] > 0
    sweep = (out / "sweeps" / "poor_next.yaml").read_text()
    assert "override /hydra/sweeper: points" in sweep
    points = [json.loads(line.strip()[2:]) for line in sweep.splitlines() if line.strip().startswith("- [")]
    assert len(points) == 4
    for p, r in zip(points, nxt["runs"]):
        assert f"split.budget_tokens={int(round(r['budget_tokens']))}" in p
        assert f"split.expert_domain={r['expert_domain']}" in p
    assert printed == nxt["command"] and "sweeps=poor_next" in printed and f"file://{out.resolve()}" in printed


def test_points_sweeper_runs_exactly_its_points():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.splitsweep_points import PointsSweeper
    overrides = OverridesParser.create().parse_overrides(["sweeps=x", "model=llama_21k", "logger.mode=disabled"])
    sweeper = PointsSweeper(points=[["model=llama_38k", "split.pretrain_fraction=0.5"],
                                    ["split.pretrain_fraction=0.25"]], params={"ignored": "1,2"})
    [batch] = sweeper.split_arguments(overrides, None)
    assert batch == [["sweeps=x", "logger.mode=disabled", "model=llama_38k", "split.pretrain_fraction=0.5"],
                     ["sweeps=x", "model=llama_21k", "logger.mode=disabled", "split.pretrain_fraction=0.25"]]
    with pytest.raises(ValueError, match="model=a,b"):
        sweeper.split_arguments(OverridesParser.create().parse_overrides(["model=a,b"]), None)
    with pytest.raises(ValueError, match="needs hydra.sweeper.points"):
        PointsSweeper(points=[])


def test_bad_targets_and_budgets_are_refused_with_the_numbers(poor, tmp_path, capsys):
    table, rows, fit = poor
    with pytest.raises(AnalysisError, match=r"is 200x the largest fitted N \(8e\+06\)"):
        propose(fit, load_results(table), rows, target_n=1.6e9, target_budget=3.2e10, accounting="per-path",
                max_runs=2)
    with pytest.raises(AnalysisError, match="buys no candidate: the cheapest run costs"):
        propose(fit, load_results(table), rows, target_n=8e6, target_budget=3.2e8, accounting="per-path",
                compute_budget=1.0)
    far = propose(fit, load_results(table), rows, target_n=3.2e7, target_budget=1.28e9, accounting="per-path",
                  max_runs=1)
    assert any("is 4x the largest fitted N" in w for w in far["warnings"])
    src = tmp_path / "rows.jsonl"
    table.to_json(src, orient="records", lines=True)
    assert main(["next", str(src), "--law", "two_source", "--target-n-params", "-5", "--target-budget-tokens",
                 "1e8", "--max-runs", "1", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "--target-n-params must be a positive number, got -5.0" in capsys.readouterr().err


def test_vectorized_reductions_equal_the_one_candidate_formula():
    from analysis.next_runs import _reduction, _reductions
    rng = np.random.default_rng(0)
    p = 7
    a = rng.standard_normal((p, p))
    sigma, grad, s2 = a @ a.T + np.eye(p), rng.standard_normal(p), 0.3
    jacs = [rng.standard_normal((1 if i % 3 else 4, p)) for i in range(12)]
    stacks = [(np.array(ix), np.stack([jacs[i] for i in ix])) for ix in ([i for i in range(12) if i % 3],
                                                                        [i for i in range(12) if not i % 3])]
    which = np.ones(12, bool)
    which[5] = False
    got = _reductions(sigma, sigma @ grad, stacks, which, s2)
    want = [_reduction(sigma, sigma @ grad, jc, s2) if which[i] else 0.0 for i, jc in enumerate(jacs)]
    assert np.allclose(got, want, rtol=1e-12, atol=0)
