"""The report says first how far to trust it (issue #10, item 6, and the report side of items 3-5): the
law's held-out errors, identifiability, extrapolation, interval coverage, accounting and compute, every
warning; NOT RELIABLE with what to run next when a check fails; measured numbers before fitted ones, the
baseline at the same fraction, the sweep's own accounting, D' = 0 drawn on the plots."""
import hashlib
import json
import sys

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))  # repo root
from analysis import plots
from analysis.cli import main
from analysis.errors import AnalysisError
from analysis.inputs import LawInputs
from analysis.io import MIXTURE, load_results, select_rows
from analysis.law_domain import needs_mixture_tokens
from analysis.laws import LAWS
from analysis.report import (SECTIONS, TRUST, _coverage, accounting_budget, build_report, measured_best_table,
                             sweep_accounting)
from analysis.synthetic import DEFAULT_WEIGHTS, TRUE_PARAMS, law_loss, make_sweep, phonebook_table

LAW = LAWS["two_source"]
GRID = dict(n_values=(1e6, 4e6, 16e6), tokens_per_param=(10, 40))
# eta = 0.1 and a strong domain term put the optimum of this law at D*/T = 0.20 (for every N and T here).
LOW_OPTIMUM = dict(TRUE_PARAMS["two_source"], eta=0.1, C=1000.0)


def harness_columns(t: pd.DataFrame, accounting="per_path", k=1) -> pd.DataFrame:
    """The columns splitsweep/records.py writes: accounting, budget_tokens, n_experts."""
    return t.assign(accounting=accounting, n_experts=k, budget_tokens=t["pretrain_tokens"] + t["special_tokens"])


def first_section(md: str) -> str:
    """The text before the first section after the trust section (the report's first lines)."""
    assert md.split("\n## ")[1].startswith(TRUST + "\n"), "the trust section comes first"
    return md.split("\n## Recommendation\n")[0]


def section(md: str, title: str) -> str:
    return md.split(f"\n## {title}\n")[1].split("\n## ")[0]


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    """Measured only at fractions 0.5-0.9 (and pretraining only) of a law whose optimum is at 0.2."""
    out = tmp_path_factory.mktemp("edge")
    t = harness_columns(make_sweep(LAW, LOW_OPTIMUM, fractions=(0.5, 0.7, 0.9), noise=0.001, seed=2, **GRID))
    md = build_report(t, out, n_bootstrap=4, progress=False).read_text()
    return md, json.loads((out / "split.json").read_text())


@pytest.fixture(scope="module")
def well_posed(tmp_path_factory):
    """The same law measured at fractions 0.1-0.7 that bracket its optimum (0.2), and pretraining only."""
    out = tmp_path_factory.mktemp("good")
    t = harness_columns(make_sweep(LAW, LOW_OPTIMUM, fractions=(0.1, 0.2, 0.3, 0.5, 0.7), noise=0.001, seed=2,
                                   **GRID))
    md = build_report(t, out, n_bootstrap=4, progress=False).read_text()
    return md, json.loads((out / "split.json").read_text()), out


# ---- the first lines ------------------------------------------------------------------------------------

def test_first_lines_say_not_reliable_at_the_edge_and_what_to_run(edge):
    md, split = edge
    head = first_section(md)
    lines = md.splitlines()
    assert lines[4].startswith("**NOT RELIABLE**")  # the verdict is the report's first line of text
    assert "D*/T = 0.50 is at the lower edge of the measured fractions 0.50–1.00" in lines[4]
    assert "Run next to make it reliable: run pretrain fractions below 0.50 at N = 1.6e+07" in lines[4]
    # held-out errors of the chosen law, per check, mean and max
    law = split["law"]
    assert f"Held-out errors of {law}: largest N held out (N = 1.6e+07): " in head
    assert "largest budget held out (D + D' = 6.4e+08): " in head
    assert head.count("% mean, ") >= 2 and "% max relative error" in head
    assert "Identified: yes" in head
    assert "Extrapolation: N and T are inside the fitted ranges (interpolation); 80% prediction interval" in head
    assert "Prediction intervals: 80% prediction intervals covered " in head
    # the accounting, from the rows, and the compute statement of split.json
    assert "Accounting: per-path: the accounting the sweep measured (the rows' accounting column: per_path)" in head
    assert "Compute: " + split["compute"]["statement"] in head
    # every warning of the split search
    assert split["warnings"] and all(w in head for w in split["warnings"])
    trust = split["trust"]
    assert trust["reliable"] is False and trust["run_next"] and trust["verdict"] == lines[4]
    assert split["heldout_coverage"]["n_bootstrap"] == 3 and "checks" in split["heldout_coverage"]


def test_a_well_posed_sweep_is_not_labeled_not_reliable(well_posed):
    md, split, _ = well_posed
    head = first_section(md)
    assert "NOT RELIABLE" not in md
    assert split["trust"]["reliable"] is True and split["trust"]["failures"] == []
    assert head.splitlines()[4].startswith("Reliability checks passed")
    assert f"Search: D*/T = {split['pretrain_fraction']:.2f} lies inside the measured fractions 0.10–1.00" in head
    assert split["search"]["at_edge"] is None and split["search"]["measured_fractions"] == [0.1, 1.0]
    assert "largest N held out (N = 1.6e+07)" in head and "Accounting: per-path" in head


def test_measured_numbers_come_before_the_fitted_ones(well_posed):
    md, split, _ = well_posed
    rec = section(md, "Recommendation")
    m = split["measured"]
    measured_at, fitted_at, agreement_at = rec.index("Measured (no fit)"), rec.index("Fitted ("), \
        rec.index("Measured against fitted")
    assert measured_at < fitted_at < agreement_at
    assert (f"the best measured split is D/T = {m['best_fraction']:.2f}" in rec
            and f"own-domain loss {m['best_loss']:.4g}" in rec)
    assert f"{m['gain_vs_pretrain_only']:.2%} better than pretraining only" in rec
    assert "the mixture baseline was not measured at the same fraction" in rec  # make_sweep has none
    assert f"{m['predicted_gain_vs_pretrain_only']:.2%} fitted against {m['gain_vs_pretrain_only']:.2%} measured" in rec
    assert "the fit agrees within its 95% bootstrap interval" in rec or "does NOT agree" in rec
    opt = section(md, "Optimal split")
    assert opt.index("measured best (no fit)") < opt.index("optimal split (fitted)")


def test_one_size_one_budget_is_not_reliable_and_says_what_to_add(tmp_path):
    out = tmp_path / "pb"
    md = build_report(phonebook_table(), out, n_bootstrap=4, progress=False).read_text()
    split = json.loads((out / "split.json").read_text())
    head = first_section(md)
    assert head.splitlines()[4].startswith("**NOT RELIABLE**")
    assert "is not identified by this grid" in head and "Identified: NO" in head
    assert "Run next to make it reliable: add model sizes: the grid has 1 (4.3e+05)" in head
    assert "add budgets at N = 4.3e+05" in head
    # no extrapolation check exists: said, and the k-fold check is labeled interpolation
    assert "largest N held out: not run (one model size in the data)" in head
    assert "k-fold over trained models (interpolation, not extrapolation)" in head
    assert "only interpolation was checked" in head
    assert "Accounting: per-path: no accounting column in the rows (an older table), per-path assumed" in head
    ext, kfold = section(md, "Held-out extrapolation"), section(md, "Held-out interpolation (k-fold)")
    assert "No held-out extrapolation check could run" in ext  # and no k-fold result is shown as one
    assert "k-fold over trained models" not in ext and "heldout" not in ext and "% mean" not in ext
    assert "k-fold over trained models" in kfold and "heldout_kfold.png" in kfold
    assert not split["trust"]["reliable"]
    for title in SECTIONS:
        assert f"\n## {title}\n" in md


# ---- the baseline beside the best split is the one at the same fraction -----------------------------------

N0, T0 = 4.3e5, 2e6
FRACTIONS = (0.0, 0.25, 0.5, 0.75)


def expert_loss(dom, f):
    return 2.0 + (f - 0.5) ** 2 if dom == "d0" else 2.2 + 0.5 * (f - 0.25) ** 2


def baseline_loss(dom, f):
    return (2.6 if dom == "d0" else 2.5) - 0.6 * f  # far from its mean over fractions at 0.5


PRETRAIN_ONLY = {"d0": 2.45, "d1": 2.35}


def designed_table():
    """One N, one budget, 2 domains; experts at 4 fractions, the baseline at the same 4 and at D' = 0."""
    rows = []

    def add(expert, f, loss_of):
        d, dp = f * T0, (1 - f) * T0
        for ev in ("d0", "d1"):
            if expert != MIXTURE and ev != expert:
                continue
            rows.append(dict(run_id=f"{expert}-{f}", n_params=N0, pretrain_tokens=d, special_tokens=dp,
                             expert_domain=expert, eval_domain=ev, mixture_weight=0.5, eval_loss=loss_of(ev, f)))
    for f in FRACTIONS:
        for dom in ("d0", "d1"):
            add(dom, f, expert_loss)
        add(MIXTURE, f, baseline_loss)
    add(MIXTURE, 1.0, lambda ev, f: PRETRAIN_ONLY[ev])
    return pd.DataFrame(rows)


def mean2(fn, f):
    return (fn("d0", f) + fn("d1", f)) / 2


def test_measured_table_shows_the_baseline_at_the_same_fraction():
    table = load_results(designed_table())
    [row] = measured_best_table(table, sweep_accounting(table))
    best = min(FRACTIONS, key=lambda f: mean2(expert_loss, f))
    assert best == 0.5
    same = mean2(baseline_loss, best)
    mean_over_fractions = np.mean([mean2(baseline_loss, f) for f in FRACTIONS])
    assert abs(same - mean_over_fractions) > 0.05
    n, budget, frac, loss, pre, base, gain_pre, gain_base, _ = row
    assert frac == "0.50" and float(loss) == pytest.approx(mean2(expert_loss, best), rel=1e-3)
    assert float(base) == pytest.approx(same, rel=1e-3) and float(base) != pytest.approx(mean_over_fractions, rel=1e-3)
    assert float(pre) == pytest.approx(2.4, rel=1e-3)
    assert gain_base == f"{(same - mean2(expert_loss, best)) / same:.2%}"


def test_report_beside_the_best_split_is_the_same_fraction_baseline(tmp_path):
    out = tmp_path / "designed"
    md = build_report(designed_table(), out, n_bootstrap=4, progress=False, coverage_bootstrap=0).read_text()
    split = json.loads((out / "split.json").read_text())
    m = split["measured"]
    same = mean2(baseline_loss, m["best_fraction"])
    assert m["baseline_loss_at_best"] == pytest.approx(same)
    rec = section(md, "Recommendation")
    assert f"the mixture baseline at the same fraction measured {same:.4g}" in rec
    assert f"{m['gain_vs_baseline_same_fraction']:.2%} better than it" in rec
    table = section(md, "Measured split curves (no fit)")
    assert "| mixture baseline at the same fraction |" in table and f"| {same:.4g} |" in table
    assert "mixture baseline loss |" not in table  # the old mean-over-fractions column is gone
    assert "coverage_bootstrap = 0" in first_section(md)


# ---- the accounting the sweep measured -------------------------------------------------------------------

def shared_seed_table(k=4, n_values=(1e6, 4e6), tokens_per_param=(10, 40), fractions=(0.0, 0.3, 0.6)):
    """A shared-seed sweep: at each C, a seed of D = f·C shared by K experts of D' = (1 - f)·C / K, the
    baseline the seed continued on the mixture for K·D' (one model of C), and pretraining only (D = C)."""
    domains = list(DEFAULT_WEIGHTS)
    rows = []
    for n in n_values:
        for tpp in tokens_per_param:
            c = tpp * n
            runs = [(dom, f * c, (1 - f) * c / k) for f in fractions for dom in domains]
            runs += [(MIXTURE, f * c, (1 - f) * c) for f in fractions] + [(MIXTURE, c, 0.0)]
            for expert, d, dp in runs:
                rid = hashlib.sha1(f"{n}|{d}|{dp}|{expert}".encode()).hexdigest()[:12]
                for ev in domains:
                    rows.append(dict(run_id=rid, n_params=n, pretrain_tokens=d, special_tokens=dp,
                                     expert_domain=expert, eval_domain=ev, mixture_weight=DEFAULT_WEIGHTS[ev],
                                     accounting="shared_seed", budget_tokens=c, n_experts=k, status="ok"))
    df = pd.DataFrame(rows)
    df["eval_loss"] = law_loss(LAW, TRUE_PARAMS["two_source"], LawInputs.from_table(df, domains), domains)
    return df


def test_accounting_and_budget_come_from_the_rows():
    raw = shared_seed_table()
    table = load_results(raw)
    sweep = sweep_accounting(table)
    assert sweep["accounting"] == "shared-seed" and sweep["measured"] == "shared-seed" and sweep["k"] == 4
    assert "the rows' accounting column: shared_seed" in sweep["source"] and "n_experts" in sweep["source"]
    # io.tidy makes budget_tokens D + D'; the recorded budget C = D + K·D' (one model of C for the baseline)
    assert np.allclose(accounting_budget(table, "shared-seed", 4), raw["budget_tokens"])
    assert not np.allclose(table["budget_tokens"], raw["budget_tokens"])
    # older tables: per-path; an explicit accounting overrides, and says the sweep measured another
    old = load_results(raw.drop(columns=["accounting", "n_experts", "budget_tokens"]))
    assert sweep_accounting(old)["accounting"] == "per-path" and "per-path assumed" in sweep_accounting(old)["source"]
    asked = sweep_accounting(table, "per-path")
    assert asked["accounting"] == "per-path" and "the sweep measured shared-seed" in asked["source"]
    mixed = raw.copy()
    mixed.loc[mixed.index[:20], "accounting"] = "per_path"
    with pytest.raises(AnalysisError, match="mix accountings"):
        sweep_accounting(load_results(mixed))
    with pytest.raises(AnalysisError, match="unknown accounting"):
        sweep_accounting(load_results(raw.assign(accounting="per_token")))


def test_report_answers_in_the_sweeps_accounting(tmp_path):
    out = tmp_path / "shared"
    raw = shared_seed_table()
    md = build_report(raw, out, n_bootstrap=2, progress=False, coverage_bootstrap=0).read_text()
    split = json.loads((out / "split.json").read_text())
    assert split["accounting"] == "shared-seed" and split["k_experts"] == 4
    assert split["n_params"] == 4e6 and split["budget_tokens"] == pytest.approx(raw["budget_tokens"].max())
    assert split["pretrain_tokens"] + 4 * split["special_tokens"] == pytest.approx(split["budget_tokens"])
    head = first_section(md)
    assert ("Accounting: shared-seed: the accounting the sweep measured (the rows' accounting column: "
            "shared_seed)") in head
    assert "Compute: shared-seed accounting: seed D = " in head
    # the measured table is grouped by C (not by D + D', which varies with the fraction at a fixed C)
    table = section(md, "Measured split curves (no fit)")
    assert "| N | C | best D/C |" in table
    assert table.count("\n| 1e+06 |") == 2 and table.count("\n| 4e+06 |") == 2


def readme_table():
    """The default phonebook sweep's measured table (README): one N, C = 1,024,000 at equal total compute, K = 4
    experts of (1 - f)·C / 4 against the baseline continued on the mixture for (1 - f)·C, eval_loss_se recorded."""
    c, k, rows = 1_024_000, 4, []
    expert = dict(zip((0, .2, .4, .6, .8, 1.0), (1.232, .542, .320, .300, .291, .404)))
    baseline = dict(zip((0, .2, .4, .6, .8, 1.0), (.476, .447, .413, .393, .374, .404)))
    for f in expert:
        for e in ("d0", "d1", "d2", "d3", MIXTURE):
            if f == 1.0 and e != MIXTURE:
                continue  # at f = 1 both sides are the same pretraining-only model
            dp = (1 - f) * c / (k if e != MIXTURE else 1)
            for ev in ("d0", "d1", "d2", "d3"):
                if e != MIXTURE and ev != e:
                    continue
                rows.append(dict(run_id=f"{e}-{f}", n_params=2.01e5, pretrain_tokens=f * c, special_tokens=dp,
                                 expert_domain=e, eval_domain=ev, mixture_weight=0.25, eval_loss_se=0.004,
                                 eval_loss=(expert if e != MIXTURE else baseline)[f] + 0.001 * int(ev[1]),
                                 accounting="shared_seed", budget_tokens=c, n_experts=k, status="ok"))
    return pd.DataFrame(rows)


def test_default_sweep_report_measures_at_equal_compute(tmp_path):
    out = tmp_path / "readme"
    md = build_report(readme_table(), out, n_bootstrap=2, progress=False, coverage_bootstrap=0).read_text()
    split = json.loads((out / "split.json").read_text())
    assert split["accounting"] == "shared-seed" and split["budget_tokens"] == 1_024_000
    # grouped by C (not by D + D', which changes with the fraction): every measured fraction the split law
    # describes is searched (not 0 for a power of the mixture tokens: analysis/law_domain.py), and the baseline
    # is the one at the same (N, C, D)
    lowest = 0.2 if needs_mixture_tokens(LAWS[split["law"]]) else 0.0
    assert split["search"]["measured_at"]["fractions"] == pytest.approx(
        [f for f in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) if f >= lowest])
    assert split["search"]["range"] == [lowest, 1.0]
    m = split["measured"]
    assert m["best_fraction"] == pytest.approx(0.8)
    assert m["gain_vs_pretrain_only"] == pytest.approx((0.4055 - 0.2925) / 0.4055)
    assert m["gain_vs_baseline_same_fraction"] == pytest.approx((0.3755 - 0.2925) / 0.3755)
    rec = section(md, "Recommendation")
    assert rec.index("Measured (no fit)") < rec.index("Fitted (")
    assert "the best measured split is D/C = 0.80" in rec
    assert "pretraining only measured 0.4055" in rec  # mean over the 4 books of 0.404 + 0.001·i
    assert "the mixture baseline at the same fraction measured 0.3755" in rec
    table = section(md, "Measured split curves (no fit)")
    assert "| 2.01e+05 | 1.024e+06 | 0.80 | 0.2925 | 0.4055 | 0.3755 | 27.87% | 22.10% | — |" in table
    assert "Error bars: eval_loss_se." in table
    assert first_section(md).splitlines()[4].startswith("**NOT RELIABLE**")  # one N, one C


# ---- plots: D' = 0 is drawn, error bars where there are standard errors --------------------------------------

def test_d_prime_zero_points_are_plotted_not_dropped(well_posed):
    _, _, out = well_posed
    assert (out / "loss_vs_special.png").stat().st_size > 1000
    rows = select_rows(load_results(make_sweep(LAW, LOW_OPTIMUM, fractions=(0.2, 0.6), noise=0.0, **GRID)))
    pts = plots.special_points(rows)
    zero = pts[pts["special_tokens"] == 0]
    # one pretraining-only point per (N, D + D'): 3 sizes x 2 budgets, none dropped
    assert len(zero) == 6 and set(zero["pretrain_tokens"]) == {tpp * n for n in GRID["n_values"]
                                                               for tpp in GRID["tokens_per_param"]}
    fit = type("F", (), {"law": LAW})()
    fig = plots.loss_vs_special_figure(rows, fit, lambda n, d, grid: np.full(len(grid), 3.0))
    for ax, n in zip(fig.axes, sorted(rows["n_params"].unique())):
        assert ax.get_xscale() == "symlog"  # a log axis cannot show D' = 0
        assert ax.get_xlim()[0] < 0 < ax.get_xlim()[1]
        plotted = [(x, y) for line in ax.get_lines() for x, y in zip(line.get_xdata(), line.get_ydata())]
        want = zero[zero["n_params"] == n]
        assert len(want) == 2
        for y in want["eval_loss"]:
            assert any(x == 0 and y_ == pytest.approx(y) for x, y_ in plotted), (n, y)
        assert any("D'=0" in t.get_text() for t in ax.get_legend().get_texts())
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_error_bars_from_eval_loss_se():
    rows = select_rows(load_results(make_sweep(LAW, LOW_OPTIMUM, fractions=(0.2, 0.6), noise=0.0, **GRID)))
    assert not plots.has_se(rows)
    m, err = plots.mean_and_se(rows, "n_params")
    assert err is None
    with_se = rows.assign(eval_loss_se=0.01)
    assert plots.has_se(with_se)
    m, err = plots.mean_and_se(with_se, "n_params")
    counts = with_se.groupby("n_params").size().to_numpy()
    assert np.allclose(err, 0.01 * np.sqrt(counts) / counts)
    pts = plots.special_points(with_se)
    assert pts["se"].notna().all()
    fit = type("F", (), {"law": LAW})()
    fig = plots.loss_vs_special_figure(with_se, fit, lambda n, d, grid: np.full(len(grid), 3.0))
    assert all(any(c.has_yerr for c in ax.containers) for ax in fig.axes)
    import matplotlib.pyplot as plt
    plt.close(fig)
    assert plots.measured_split_curves(with_se.assign(pretrain_fraction=with_se["pretrain_tokens"]
                                                      / with_se["budget_tokens"]), "eval_loss") is not None


# ---- coverage is cheap or skipped with a reason; the CLI defaults ---------------------------------------------

def test_coverage_skipped_with_a_reason():
    rows = select_rows(load_results(designed_table().head(6)))
    c = _coverage(rows, None, 3, 0, False)
    assert "only" in c["statement"] and "trained models" in c["statement"] and "checks" not in c
    c = _coverage(rows, None, 0, 0, False)
    assert "coverage_bootstrap = 0" in c["statement"]


def test_cli_split_and_report_default_to_per_domain_and_the_rows_accounting(tmp_path, monkeypatch):
    import analysis.pipeline as pipeline
    import analysis.report as report
    src = tmp_path / "results.jsonl"
    src.write_text(shared_seed_table(n_values=(1e6,), tokens_per_param=(10,)).to_json(orient="records", lines=True))
    seen = []
    monkeypatch.setattr(report, "build_report", lambda *a, **kw: seen.append(kw) or tmp_path / "report.md")
    assert main(["report", str(src), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert main(["report", str(src), "--out", str(tmp_path / "r"), "--quiet", "--shared-coefficients",
                 "--coverage-bootstrap", "0", "--extrapolate"]) == 0
    assert seen[0]["per_domain"] is None and seen[0]["accounting"] is None and seen[0]["coverage_bootstrap"] == 3
    assert seen[1]["per_domain"] is False and seen[1]["coverage_bootstrap"] == 0 and seen[1]["extrapolate"]
    assert main(["report", str(src), "--out", str(tmp_path / "r"), "--per-domain", "--shared-coefficients"]) == 2

    real, layouts = pipeline.analyze, []

    def spy(rows, law, **kw):
        layouts.append(kw["per_domain"])
        return real(rows, law, **kw)
    monkeypatch.setattr(pipeline, "analyze", spy)
    args = ["split", str(src), "--n-params", "1e6", "--budget-tokens", "1e7", "--law", "two_source",
            "--n-bootstrap", "0", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    split = json.loads((tmp_path / "a" / "split.json").read_text())
    assert split["accounting"] == "shared-seed" and "shared_seed" in split["accounting_source"]
    assert main(args + ["--shared-coefficients", "--accounting", "per-path", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "split.json").read_text())["accounting"] == "per-path"
    assert layouts == [None, False]


# ---- each check alone makes the recommendation NOT RELIABLE, with something to run ----------------------

def test_each_failed_check_is_not_reliable_with_a_suggestion(well_posed):
    import copy
    from types import SimpleNamespace

    from analysis.report import assess
    _, good, _ = well_posed
    rows = select_rows(load_results(harness_columns(make_sweep(LAW, LOW_OPTIMUM, fractions=(0.1, 0.2, 0.3, 0.5, 0.7),
                                                               noise=0.001, seed=2, **GRID))))
    sweep = sweep_accounting(rows)
    checks = {"largest_N": {"held_out": "N = 1.6e+07", "mean_rel_error": 0.01, "max_rel_error": 0.02},
              "largest_T": {"held_out": "D + D' = 6.4e+08", "mean_rel_error": 0.01, "max_rel_error": 0.02}}

    def run(split, checks=checks, diagnostics=None):
        fit = SimpleNamespace(diagnostics=diagnostics or {"identified": True, "warnings": [], "reasons": [],
                                                          "bootstrap_checked": True})
        analysis = SimpleNamespace(split_law="two_source", chosen="two_source", split_fit=fit,
                                   checks={"two_source": checks}, why="chosen", failures={}, left_out=None)
        return assess(analysis, split, rows, sweep)

    assert run(copy.deepcopy(good))["reliable"]

    bad = run(good, {**checks, "largest_N": {**checks["largest_N"], "mean_rel_error": 0.07}})
    assert not bad["reliable"] and "held-out mean error above 5% (largest N held out: 7.00%)" in bad["verdict"]
    assert any(r.startswith("add model sizes between and beyond") for r in bad["run_next"])

    bad = run(good, diagnostics={"identified": False, "warnings": ["E = 1e-06 is at about 0: the grid does not pin "
                                                                   "the irreducible loss"], "reasons": ["E at 0"]})
    assert not bad["reliable"] and "two_source is not identified by this grid (E at 0)" in bad["verdict"]
    assert "Identified: NO" not in bad["verdict"] and any("levels off" in r for r in bad["run_next"])

    edge_ = copy.deepcopy(good)
    edge_["search"].update(at_edge="lower", outside_measured=True, unconstrained_fraction=0.05)
    bad = run(edge_)
    assert "is at the lower edge of the measured fractions 0.10–1.00" in bad["verdict"]
    assert any(r.startswith("run pretrain fractions below 0.10") and "0.05" in r for r in bad["run_next"])

    off = copy.deepcopy(good)
    m = off["measured"]
    m.update(gain_vs_pretrain_only=m["predicted_gain_vs_pretrain_only"] / 2, agrees_pretrain_only=False,
             agrees_pretrain_only_within_noise=False)
    bad = run(off)
    assert "the fit does not reproduce the measured comparison" in bad["verdict"]
    assert any(r.startswith(f"repeat the measured best fraction {m['best_fraction']:.2f}") for r in bad["run_next"])
    # outside the bootstrap interval but inside the prediction interval: a caution, not a failure
    m.update(agrees_pretrain_only_within_noise=True)
    assert run(off)["reliable"] and any("within noise" in c for c in run(off)["cautions"])
