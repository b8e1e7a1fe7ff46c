"""The splitting report: report.md, one self-contained report.html (PNG plots embedded), the PNGs,
fit.json and split.json, all written whole or not at all (every figure and text is built in memory
first; each file then goes through a temp file and os.replace).

The report opens with how far to trust it ("How far to trust this report"): the law and its held-out
errors, whether the grid identifies it, how far the recommendation extrapolates, how often the 80%
prediction intervals covered held-out runs, the accounting and compute of the comparison, and every
warning of the split search. A recommendation that fails a check (law not identified or not validated,
a held-out mean error above 5%, D*/T at the edge of or outside the measured fractions, a measured best
fraction at an inner edge of the measured ones, measured and fitted gains that disagree beyond noise and
materially, a split-blind law) is labeled NOT RELIABLE, with what to run next (split.json "trust").
Where the sweep measured the comparison, the measured numbers come before the fitted ones.

The question is answered in the accounting the sweep measured (the rows' `accounting` column: per_path
or shared_seed; per-path for older tables without it), at the rows' budget (T = D + D', or C = D + K·D'
with K = n_experts) unless told otherwise.

A report written where an earlier one is leaves none of the earlier one's files behind (a "no law could
be fitted" report beside a stale fit.json would contradict itself): report.md is removed first, then the
REPORT_FILES the new report does not write, then the new files are written and report.md last, so a
report.md in the directory is always a complete report of its own files. Files not in REPORT_FILES
(the user's, W&B's run directory) are never touched.

Python API for the end-of-sweep Hydra callback:
    build_report(results, out_dir, budget_tokens=None, law="auto", n_bootstrap=20, accounting=None)
"""
from __future__ import annotations

import base64
import html
import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from splitsweep.fsio import read_jsonl
from splitsweep.layout import SweepLayout

from . import atomic, plots
from .diagnostics import short
from .errors import AnalysisError
from .fit import log_progress
from .inputs import LawInputs
from .intervals import N_BOOTSTRAP
from .io import DEFAULT_SELECTION, SELECTIONS, batch_tokens_of, budget_of, domain_weights, load_results, select_rows
from .laws import LAWS
from .pipeline import Analysis, analyze
from .roles import BASELINE, MIXTURE, OWN, role
from .split import ACCOUNTINGS, CI_LEVEL, GRID, PI_LEVEL, Budget, check_budget, choose_split, fraction_curve, path_loss
from .split import domain_weights as split_weights
from .validate import rel_error

TRUST = "How far to trust this report"
NEXT_SECTION = "What to run next"
NEXT_BUDGET_SHARE = 0.1  # the report proposes runs worth a tenth of the sweep's own training compute
NEXT_TABLE_ROWS = 20

FIT_SECTIONS = (
    "Fitted parameters", "Measured vs predicted", "Loss against D'", "Held-out extrapolation",
    "Held-out interpolation (k-fold)", "Optimal split", "Predicted gain over pretraining only",
)
SECTIONS = (TRUST, "Recommendation", "Data", "Measured split curves (no fit)", "Laws and held-out validation",
            *FIT_SECTIONS, NEXT_SECTION, "Downstream accuracy", "Notes")

# Every file build_report writes (figures by their Doc.figure names). Only these are ever removed.
REPORT_FILES = (
    "report.md", "report.html", "fit.json", "split.json", "next.json", "measured_loss.png", "measured_recall.png",
    "measured_vs_predicted.png", "loss_vs_special.png", "heldout.png", "heldout_kfold.png", "split_curve.png",
    "fraction_vs_budget.png", "fraction_vs_n.png", "downstream.png",
)

ROW_ACCOUNTINGS = {"per_path": "per-path", "shared_seed": "shared-seed"}  # records.py names -> split.py names
MAX_HELDOUT_ERROR = 0.05     # a held-out check's mean relative error above this: NOT RELIABLE
# A measured gain disagrees with the fitted one when it lies outside the fit's 95% bootstrap interval and its
# 80% prediction interval (beyond the noise of one run) and differs materially: by more than this share of
# the larger of the two gains, or in sign. (An 80% interval alone misses one good measurement in five.)
GAIN_TOLERANCE = 0.25
COVERAGE_BOOTSTRAP = 3       # bootstrap resamples of each held-out refit of the coverage check (keep it cheap)
MIN_COVERAGE_MODELS = 8      # fewer trained models: the coverage check is skipped, and the report says why
EXTRAPOLATION_CHECKS = {"largest_N": "largest N held out", "largest_T": "largest budget held out"}
KFOLD_CHECK = {"runs_kfold": "k-fold over trained models (interpolation, not extrapolation)"}


class Doc:
    """Sections of paragraphs, bullet lists, tables and figures, rendered to Markdown and to
    self-contained HTML. **bold** in a paragraph or bullet is bold in both."""

    def __init__(self, title: str):
        self.title, self.sections, self.figures = title, [], {}

    def section(self, title: str):
        self.sections.append((title, []))

    def para(self, text: str):
        self.sections[-1][1].append(("p", text))

    def bullets(self, items: list):
        if items:
            self.sections[-1][1].append(("ul", list(items)))

    def table(self, header: list, rows: list):
        self.sections[-1][1].append(("table", header, rows))

    def figure(self, name: str, png: bytes | None, caption: str):
        if png is None:
            self.para(f"({caption}: nothing to plot)")
            return
        self.figures[name] = png
        self.sections[-1][1].append(("img", name, caption))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for title, blocks in self.sections:
            out += [f"## {title}", ""]
            for b in blocks:
                if b[0] == "p":
                    out += [b[1], ""]
                elif b[0] == "ul":
                    out += [f"- {item}" for item in b[1]] + [""]
                elif b[0] == "table":
                    out.append("| " + " | ".join(b[1]) + " |")
                    out.append("|" + "---|" * len(b[1]))
                    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in b[2]]
                    out.append("")
                else:
                    out += [f"![{b[2]}]({b[1]})", ""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape

        def inline(text):
            return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", e(text))

        out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(self.title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
               "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}"
               "img{max-width:100%}strong{color:#a00}</style></head><body>", f"<h1>{e(self.title)}</h1>"]
        for title, blocks in self.sections:
            out.append(f"<h2>{e(title)}</h2>")
            for b in blocks:
                if b[0] == "p":
                    out.append(f"<p>{inline(b[1])}</p>")
                elif b[0] == "ul":
                    out.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in b[1]) + "</ul>")
                elif b[0] == "table":
                    out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in b[1]) + "</tr>")
                    out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b[2]]
                    out.append("</table>")
                else:
                    data = base64.b64encode(self.figures[b[1]]).decode()
                    out.append(f"<figure><img alt='{e(b[2])}' src='data:image/png;base64,{data}'>"
                               f"<figcaption>{e(b[2])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def fmt(v, digits=4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (int, np.integer)):
        return str(v)
    return f"{v:.{digits}g}"


def pct(v, digits=2) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{digits}%}"


# ---- the accounting the sweep measured ---------------------------------------------------------------------

def sweep_accounting(table: pd.DataFrame, accounting: str | None = None) -> dict:
    """The accounting to answer in and the one the sweep measured, with K and where they come from.

    The rows' `accounting` column (splitsweep/records.py: per_path or shared_seed; a row without it, from an
    older table, is per_path) gives the measured accounting; `accounting` (split.py's names) overrides the
    answer's. K is the rows' n_experts under shared-seed accounting (else, and under per-path, the number
    of domains: one expert each).
    """
    domains = sorted(d for d in table["eval_domain"].unique() if d != MIXTURE) or ["all"]
    has_col = "accounting" in table.columns and table["accounting"].notna().any()
    raw = (table["accounting"].where(table["accounting"].notna(), "per_path").astype(str) if has_col
           else pd.Series("per_path", index=table.index))
    unknown = sorted(set(raw) - set(ROW_ACCOUNTINGS) - set(ACCOUNTINGS))
    if unknown:
        raise AnalysisError(f"unknown accounting {', '.join(map(repr, unknown))} in the rows' accounting column; "
                            "a sweep records per_path or shared_seed")
    mapped = raw.map(lambda v: ROW_ACCOUNTINGS.get(v, v))
    kinds = mapped.value_counts()
    if accounting is not None and accounting not in ACCOUNTINGS:
        raise AnalysisError(f"unknown accounting {accounting!r}; choose {' or '.join(ACCOUNTINGS)}")
    if len(kinds) > 1 and accounting is None:
        raise AnalysisError("the rows mix accountings (" + ", ".join(f"{k}: {v} rows" for k, v in kinds.items())
                            + "): one sweep measures one; pass accounting (--accounting per-path|shared-seed) "
                              "to choose the one to answer in")
    measured = kinds.index[0] if len(kinds) == 1 else None
    k, k_source = len(domains), f"one expert per domain ({len(domains)})"
    if "n_experts" in table.columns:
        ks = pd.to_numeric(table.loc[(role(table) != BASELINE) & (mapped == "shared-seed"), "n_experts"],
                           errors="coerce").dropna().unique()
        if len(ks) == 1:
            k, k_source = int(ks[0]), f"K = {int(ks[0])} from the rows' n_experts"
        elif len(ks) > 1:
            raise AnalysisError(f"the rows' n_experts take several values {sorted(int(v) for v in ks)}: one sweep "
                                "shares each seed among one number K of experts")
    answer = accounting or measured
    if not has_col:
        source = "per-path: no accounting column in the rows (an older table), per-path assumed"
    elif accounting is None:
        source = f"{answer}: the accounting the sweep measured (the rows' accounting column: {raw.iloc[0]})"
    elif measured == accounting:
        source = f"{answer}, as asked, and as the sweep measured it"
    else:
        source = (f"{answer}, as asked; the sweep measured {measured or 'several accountings'}, so its fractions "
                  f"and budgets are read in {answer} accounting, not at the budget its runs were planned for")
    if (measured or answer) == "shared-seed":
        source += f"; {k_source}"
    return {"accounting": answer, "measured": measured, "k": k, "k_source": k_source, "source": source,
            "from_rows": has_col and accounting is None}


def accounting_budget(df: pd.DataFrame, accounting: str, k: int) -> pd.Series:
    """Each row's budget in the accounting: T = D + D' (per-path), C = D + K·D' for an expert path and
    C = D + D' for the mixture baseline (one model of C tokens) under shared-seed - what the rows record
    as budget_tokens (records.py), which io.tidy replaces by D + D' (io.budget_of)."""
    return budget_of(df, accounting, k)


# ---- the report ---------------------------------------------------------------------------------------------

def build_report(results, out_dir, budget_tokens: float | None = None, law: str = "auto",
                 n_bootstrap: int = N_BOOTSTRAP,
                 accounting: str | None = None, *, n_params: float | None = None,
                 selection: str = DEFAULT_SELECTION, per_domain: bool | None = None, weighting="equal",
                 batch_tokens: int | None = None, seed: int = 0, progress: bool = True, downstream=None,
                 extrapolate: bool = False, coverage_bootstrap: int = COVERAGE_BOOTSTRAP,
                 next_budget_share: float = NEXT_BUDGET_SHARE) -> Path:
    """Fit, validate, choose the split and write the report into out_dir; returns the path of report.md.

    results: a sweep directory (its results.jsonl), a results file, or a DataFrame.
    budget_tokens / n_params: the question asked; default the largest N measured and the largest budget
    measured at it, in the accounting (T, or C under shared-seed).
    accounting: per-path or shared-seed; default the rows' accounting column (per-path without one).
    per_domain: None (default) one coefficient set per domain whenever the rows have several domains, as
    analyze; False shared coefficients, True per-domain.
    n_bootstrap: resamples of trained models for the intervals (one default everywhere: intervals.N_BOOTSTRAP).
    extrapolate: search D*/T over all fractions, not only the measured ones (the report then says so).
    coverage_bootstrap: resamples of each held-out refit of the 80% prediction-interval coverage check
    (0 skips it).
    next_budget_share: the "What to run next" section proposes runs worth this share of the sweep's training
    compute (0 skips it).
    """
    t0 = time.perf_counter()
    table = load_results(results)
    rows = select_rows(table, selection)
    batch = batch_tokens_of(table, batch_tokens)
    sweep = sweep_accounting(table, accounting)
    acct, k = sweep["accounting"], sweep["k"]
    n_q = float(n_params) if n_params is not None else float(rows["n_params"].max())
    if budget_tokens is not None:
        t_q = float(budget_tokens)
    else:
        # In the measured accounting the rows' budgets are what the sweep planned (T or C); asked another
        # accounting, D + D' as before.
        budgets = accounting_budget(rows, acct, k) if acct == sweep["measured"] else rows["budget_tokens"]
        at = np.isclose(rows["n_params"].to_numpy(float), n_q, rtol=1e-9)
        t_q = float(budgets[at].max() if at.any() else budgets.max())
    mix_w = domain_weights(rows)
    # Bad questions fail before any fitting.
    n_domains = max(1, len([d for d in mix_w if d != MIXTURE]))
    check_budget(t_q, batch, acct, k if acct == "shared-seed" else n_domains)

    analysis = analyze(rows, law, per_domain=per_domain, n_bootstrap=n_bootstrap, seed=seed, progress=progress)
    if analysis.chosen is not None:
        rows = analysis.rows_for()  # the split law's rows (law_domain: without the rows outside its domain)
    doc = Doc("Splitting report")
    files = {}
    split = None
    notes = []
    if analysis.chosen is not None:
        split = choose_split(analysis.split_fit, n_q, t_q, accounting=acct, mixture_weights=mix_w,
                             weighting=weighting, batch_tokens=batch, rows=rows, extrapolate=extrapolate, seed=seed)
        split["law_chosen_because"] = analysis.split_why or analysis.why
        split["accounting_source"] = sweep["source"]
        split["row_selection"] = selection
        split["heldout_coverage"] = _coverage(rows, analysis.split_fit, coverage_bootstrap, seed, progress)
        files["fit.json"] = analysis.fit_json()
        files["fit.json"]["all_laws"] = {k_: analysis.fit_json(k_) for k_ in analysis.fits}
        files["fit.json"]["not_fitted"] = analysis.failures
        files["split.json"] = split
    trust = assess(analysis, split, rows, sweep)
    if split is not None:
        split["trust"] = trust

    _trust(doc, trust)
    _recommendation(doc, analysis, split, table, sweep)
    _data(doc, table, rows, selection, sweep, analysis.left_out)
    _measured(doc, table, sweep)
    _laws(doc, analysis)
    if analysis.chosen is not None:
        _params(doc, analysis)
        _predicted(doc, analysis, rows, mix_w, weighting)
        _optimal(doc, analysis, rows, n_q, t_q, acct, mix_w, weighting, split)
        files["next.json"] = _next_runs(doc, analysis, table, rows, n_q, t_q, acct, batch, weighting, seed,
                                        next_budget_share, results)
    else:
        for title in FIT_SECTIONS:
            doc.section(title)
            doc.para("No law could be fitted, so there is nothing to show here (see Laws and held-out validation).")
        doc.section(NEXT_SECTION)
        doc.para("No law could be fitted, so no run can be proposed from it.")
    _downstream(doc, results, downstream)
    doc.section("Notes")
    for f in analysis.fits.values():
        notes += f.notes
    notes += [f"{k_} not fitted: {v}" for k_, v in analysis.failures.items()]
    if split:
        notes += split["notes"]
    notes.append(f"Built in {time.perf_counter() - t0:.1f} s; fits deterministic (fixed start grids, bootstrap seed "
                 f"{seed}, {n_bootstrap} resamples of trained models).")
    for n in dict.fromkeys(notes):
        doc.para(n)

    # Everything is in memory now: write each file whole. report.md last, so its presence means done.
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _remove_earlier_report(out, keep={*doc.figures, *files, "report.html"})
    for name, png in doc.figures.items():
        atomic.write_bytes(out / name, png)
    for name, obj in files.items():
        atomic.write_json(out / name, obj)
    atomic.write_text(out / "report.html", doc.html())
    path = atomic.write_text(out / "report.md", doc.markdown())
    log_progress(f"report written to {path} ({time.perf_counter() - t0:.1f} s)", progress)
    return path


def sweep_flops(table: pd.DataFrame) -> float:
    """Training compute of the trained models (their flops column, else 6·N·(D + D'))."""
    runs = table.drop_duplicates("run_id")
    if "flops" in runs.columns and runs["flops"].notna().all():
        return float(runs["flops"].sum())
    return float((6 * runs["n_params"] * (runs["pretrain_tokens"] + runs["special_tokens"])).sum())


def _next_runs(doc: Doc, analysis: Analysis, table, rows, n_q, t_q, acct, batch, weighting, seed, share,
               results) -> dict | None:
    """The section: the runs `python -m analysis next` proposes for this report's question."""
    from .next_runs import propose
    doc.section(NEXT_SECTION)
    if not share:
        doc.para("Not computed (next_budget_share = 0).")
        return None
    budget = share * sweep_flops(table)
    try:
        nxt = propose(analysis.split_fit, table, rows, target_n=n_q, target_budget=t_q, accounting=acct,
                      batch_tokens=batch, compute_budget=budget, weighting=weighting, seed=seed)
    except AnalysisError as e:
        doc.para(f"No proposal: {e}")
        return None
    axis = "T" if acct == "per-path" else "C"
    (lo, hi), (elo, ehi) = nxt["current"]["interval"], nxt["expected_interval"]
    shown = " (below)" if len(nxt["runs"]) <= NEXT_TABLE_ROWS else f" (the first {NEXT_TABLE_ROWS} below)"
    doc.para(f"Spending {share:.0%} of this sweep's training compute ({fmt(budget)} FLOPs) on "
             f"{len(nxt['runs'])} runs{shown}, {fmt(nxt['cost_flops'])} FLOPs counting the seeds the sweep already "
             f"trained as free, is expected to narrow the 95% interval of D*/{axis} at N = {fmt(n_q)}, "
             f"{axis} = {fmt(t_q)} from {lo:.3f}–{hi:.3f} to {elo:.3f}–{ehi:.3f} (width x{nxt['width_ratio']:.2f}). "
             f"Method: {nxt['method']}; costs: {nxt['cost_model']}.")
    for w in nxt["warnings"]:
        if "is " in w and "largest fitted N" in w:
            doc.para(f"Caution: {w}.")
    header = ["N", "model", "D", "D'", "expert", f"{axis}", f"D/{axis}", "cost (FLOPs)", "width after"]
    body = [[fmt(r["n_params"]), r.get("model") or "—", fmt(r["pretrain_tokens"]), fmt(r["special_tokens"]),
             r["expert_domain"], fmt(r["budget_tokens"]), f"{r['pretrain_fraction']:.3f}", fmt(r["cost_flops"]),
             f"x{r['expected_width_ratio']:.3f}"] for r in nxt["runs"][:NEXT_TABLE_ROWS]]
    if body:
        doc.table(header, body)
    if len(nxt["runs"]) > NEXT_TABLE_ROWS:
        doc.para(f"... and {len(nxt['runs']) - NEXT_TABLE_ROWS} more (next.json has them all).")
    doc.para(f"For a ready-to-run sweep of these points: `python -m analysis next {results} --target-n-params "
             f"{n_q:.6g} --target-budget-tokens {t_q:.6g} --compute-budget {budget:.4g} --out DIR`.")
    return nxt


def _coverage(rows: pd.DataFrame, fit, n_boot: int, seed: int, progress: bool) -> dict:
    """The 80% prediction-interval coverage on the held-out checks, cheaply (a few resamples), or why not."""
    from .intervals import LEVEL, coverage_sentence, heldout_coverage
    out = {"level": LEVEL, "n_bootstrap": int(n_boot)}
    models = rows["run_id"].nunique()
    if n_boot <= 0:
        out["statement"] = f"the {LEVEL:.0%} prediction intervals were not checked on held-out runs (skipped: " \
                           "coverage_bootstrap = 0)"
        return out
    if models < MIN_COVERAGE_MODELS:
        out["statement"] = (f"the {LEVEL:.0%} prediction intervals were not checked on held-out runs: only "
                            f"{models} trained models, too few to hold some out and still fit (at least "
                            f"{MIN_COVERAGE_MODELS} needed)")
        return out
    try:
        checks = heldout_coverage(rows, fit.law, per_domain=fit.layout.per_domain, level=LEVEL,
                                  n_bootstrap=max(int(n_boot), 2), n_resample=2000, seed=seed, progress=progress)
    except AnalysisError as e:
        out["statement"] = f"the {LEVEL:.0%} prediction intervals could not be checked on held-out runs: {e}"
        return out
    k = sum(c["covered"] for c in checks.values() if c.get("n_rows"))
    n = sum(c["n_rows"] for c in checks.values() if c.get("n_rows"))
    out.update(checks=checks, statement=coverage_sentence(checks, LEVEL), covered=k, n_rows=n,
               coverage=k / n if n else None)
    return out


def _remove_earlier_report(out: Path, keep: set) -> None:
    """Remove an earlier report's files that this one will not rewrite (those it rewrites are replaced
    atomically), and the temp files of an earlier write that was killed. report.md goes first: until
    the new one is written last, the directory holds no report.md to mistake for a finished report."""
    unknown = keep - set(REPORT_FILES)
    assert not unknown, f"add {sorted(unknown)} to REPORT_FILES, or a later report cannot remove them"
    for name in REPORT_FILES:
        if name == "report.md" or name not in keep:
            (out / name).unlink(missing_ok=True)
        for tmp in out.glob(f".{name}.*.tmp"):  # atomic.write_bytes' temp names
            tmp.unlink(missing_ok=True)


# ---- how far to trust it -------------------------------------------------------------------------------------

def _check_text(c: dict | None) -> str:
    if c is None:
        return "—"
    if "mean_rel_error" in c:
        return f"{rel_error(c['mean_rel_error'])} mean, {rel_error(c['max_rel_error'])} max"
    return c.get("skipped") or ("error: " + c.get("error", "?"))


def heldout_lines(checks: dict) -> list:
    """One phrase per held-out check of a law: what was held out and its mean/max relative error."""
    out = []
    for key, label in {**EXTRAPOLATION_CHECKS, **KFOLD_CHECK}.items():
        c = checks.get(key)
        if c is None:
            continue
        if "mean_rel_error" in c:
            out.append(f"{label} ({c.get('held_out', '')}): {rel_error(c['mean_rel_error'])} mean, "
                       f"{rel_error(c['max_rel_error'])} max relative error")
        elif "skipped" in c:
            out.append(f"{label}: not run ({c['skipped']})")
        else:
            out.append(f"{label}: could not be fitted ({c.get('error', '?')})")
    return out


def _g2(v: float) -> str:
    return f"{v:.2f}"


def _fractions_between(a: float, b: float, include=()) -> list:
    """A few pretrain fractions strictly between a and b (rounded to 0.05), and `include` in [0, 1]."""
    lo, hi = min(a, b), max(a, b)
    cand = [round(v * 20) / 20 for v in np.linspace(lo, hi, 4)[1:-1]] + [round(v, 2) for v in include]
    return sorted({v for v in cand if 0.0 <= v <= 1.0 and lo - 1e-9 <= v <= hi + 1e-9
                   and all(abs(v - e) > 1e-9 for e in (a, b) if e not in include)})


def _grid_facts(rows: pd.DataFrame, split: dict | None, sweep: dict) -> dict:
    budgets = accounting_budget(rows, sweep["accounting"], sweep["k"])
    sizes = sorted(float(v) for v in rows["n_params"].unique())
    scale = (split or {}).get("search", {}).get("measured_at") or None
    n_at = scale["n_params"] if scale else sizes[-1]
    at = np.isclose(rows["n_params"].to_numpy(float), n_at, rtol=1e-9)
    b_at = sorted({float(f"{v:.6g}") for v in budgets[at]})
    # The fractions measured at the scale, grouped by the budget in the accounting (T, or C: split.py groups
    # by D + D', which is not one budget of a shared-seed sweep).
    target = float(split["budget_tokens"]) if split else (b_at[-1] if b_at else 1.0)
    b_near = min(b_at, key=lambda b: abs(np.log(b / target))) if b_at else None
    own = []
    if b_near is not None:
        g = rows[at & np.isclose(budgets.to_numpy(float), b_near, rtol=1e-5)]
        # an expert path: own rows (the baseline's, with only whole-mixture evals) and pretraining only, D' = 0
        expert = g[(role(g, baseline_on_mixture=OWN) == OWN) | (g["special_tokens"] == 0)]
        own = sorted({round(float(v), 6) for v in expert["pretrain_tokens"] / b_near})
    return {"sizes": sizes, "budgets_at": b_at, "n_at": n_at, "scale": scale, "budget_near": b_near,
            "where": scale["where"] if scale else f"N = {n_at:.4g}",
            "fractions": scale["fractions"] if scale else [], "own_fractions": own}


def assess(analysis: Analysis, split: dict | None, rows: pd.DataFrame, sweep: dict) -> dict:
    """The trust checks of the recommendation: {"reliable", "verdict", "failures", "cautions", "run_next",
    "lines"} (lines: (label, text) for the report's first section, split.json "trust")."""
    axis = "T" if sweep["accounting"] == "per-path" else "C"
    facts = _grid_facts(rows, split, sweep)
    fails, cautions, run_next, strengthen, lines = [], [], [], [], []

    keys = set()

    def need(text, bucket=run_next, key=None):
        """Add a suggestion once (one per key: the missing sizes are said once, not by every check)."""
        if text in bucket or (key is not None and (id(bucket), key) in keys):
            return
        keys.add((id(bucket), key))
        bucket.append(text)

    if split is None:
        fails.append("no law could be fitted to these results, so nothing is recommended")
        need(f"add runs at more model sizes, budgets or splits (the sweep has {len(facts['sizes'])} model size(s) "
             f"and {rows['run_id'].nunique()} trained models); the laws and why they were not fitted are under "
             "Laws and held-out validation")
        lines.append(("Law", "none could be fitted: " + "; ".join(f"{k}: {v}" for k, v in analysis.failures.items())))
        return _verdict(fails, cautions, run_next, strengthen, lines)

    law = analysis.split_law or analysis.chosen
    fit = analysis.split_fit
    checks = analysis.checks.get(law, {})
    held = heldout_lines(checks)
    law_line = f"{law} ({split.get('law_chosen_because') or analysis.why})"
    if analysis.split_law and analysis.split_law != analysis.chosen:
        law_line += f"; the figures' predictions use {analysis.chosen}"
    lines.append(("Law", law_line))
    lines.append(("Held-out errors of " + law, "; ".join(held) if held else "no held-out check could run"))

    # held-out error
    ran = {k: c for k, c in checks.items() if "mean_rel_error" in c}
    extrap = {k: c for k, c in ran.items() if k in EXTRAPOLATION_CHECKS}
    if not ran:
        fails.append(f"{law} could not be validated: no held-out check ran")
        need("add a second model size or budget D+D' (and enough runs for the law) so that held-out checks can run")
    else:
        labels = {**EXTRAPOLATION_CHECKS, **KFOLD_CHECK}
        bad = {k: c["mean_rel_error"] for k, c in ran.items() if c["mean_rel_error"] > MAX_HELDOUT_ERROR}
        if bad:
            fails.append(f"held-out mean error above {MAX_HELDOUT_ERROR:.0%} ("
                         + ", ".join(f"{labels.get(k, k)}: {rel_error(v)}" for k, v in bad.items())
                         + f"): {law} does not predict runs it never saw")
        if "largest_N" in bad:
            need("add model sizes between and beyond the measured ones ("
                 + ", ".join(fmt(v, 3) for v in facts["sizes"]) + ") "
                 f"so the N term is pinned, e.g. N = {fmt(facts['sizes'][-1] * 2, 3)} and "
                 f"{fmt(facts['sizes'][-1] * 4, 3)}", key="sizes")
        if "largest_T" in bad:
            need(f"add budgets between and beyond the measured ones at N = {fmt(facts['n_at'], 3)} "
                 f"({', '.join(fmt(v, 3) for v in facts['budgets_at'])}), e.g. {axis} = "
                 f"{fmt(facts['budgets_at'][-1] * 2, 3)}", key="budgets")
        if "runs_kfold" in bad:
            need("repeat some runs with another seed to measure the noise of one run (record eval_loss_se), or "
                 "fit another law (--law)")
        if not extrap:
            cautions.append("only interpolation was checked (k-fold over trained models): with one model size and "
                            "one budget no held-out extrapolation check is possible, so predictions at any other N or "
                            f"{axis} are unchecked")
            need(f"to predict other sizes or budgets: add model sizes (measured: "
                 f"{', '.join(fmt(v, 3) for v in facts['sizes'])}) and budgets", strengthen)

    # identifiability
    diag = fit.diagnostics
    if diag.get("identified"):
        lines.append(("Identified", f"yes: the grid pins every free parameter of {law} (no parameter on a bound, "
                      "E not at 0, no decade-wide bootstrap interval, full-rank Jacobian"
                      + ("" if diag.get("bootstrap_checked") else "; intervals not checked: no bootstrap") + ")"))
    else:
        fails.append(f"{law} is not identified by this grid ({short(diag)})")
        lines.append(("Identified", f"NO: {len(diag['warnings'])} warning(s): " + "; ".join(diag["warnings"])))
        reasons = " ".join(diag.get("warnings", []))
        interior = [f for f in facts["own_fractions"] if 0 < f < 1]
        added = len(run_next)
        if len(facts["sizes"]) < 3:
            need(f"add model sizes: the grid has {len(facts['sizes'])} "
                 f"({', '.join(fmt(v, 3) for v in facts['sizes'])}); at least 3 pin an N exponent, e.g. N = "
                 f"{fmt(facts['sizes'][-1] * 2, 3)} and {fmt(facts['sizes'][-1] * 4, 3)}", key="sizes")
        if len(facts["budgets_at"]) < 3:
            need(f"add budgets at N = {fmt(facts['n_at'], 3)}: measured {axis} = "
                 f"{', '.join(fmt(v, 3) for v in facts['budgets_at'])}; e.g. {axis} = "
                 f"{fmt(facts['budgets_at'][-1] * 2, 3)} and {fmt(facts['budgets_at'][0] / 2, 3)}", key="budgets")
        if len(interior) < 3:
            have = ", ".join(_g2(f) for f in facts["own_fractions"]) or "none"
            need(f"add pretrain fractions between 0 and 1 at N = {fmt(facts['n_at'], 3)}, {axis} = "
                 f"{fmt(facts['budget_near'], 3)} (measured: {have}), e.g. "
                 + ", ".join(_g2(f) for f in (0.2, 0.4, 0.6, 0.8)
                             if all(abs(f - e) > 0.05 for e in facts["own_fractions"])), key="fractions")
        if "irreducible" in reasons:
            need(f"add larger budgets or sizes (e.g. {axis} = {fmt(facts['budgets_at'][-1] * 4, 3)}) so the grid "
                 "shows where the loss levels off (E)", key="larger")
        if len(run_next) == added and not keys & {(id(run_next), k_) for k_ in ("sizes", "budgets", "fractions")}:
            need("add model sizes and budgets around the requested N and budget so that every parameter is pinned "
                 "(the warnings name the parameters)")

    # where D*/T lies against the measured fractions
    s = split["search"]
    frac = split["pretrain_fraction"]
    mf = s.get("measured_fractions")
    lo, hi = (mf or [0.0, 1.0])
    if split["split_blind"]:
        fails.append(f"{law} predicts the same loss for every split (split-blind): it cannot choose D*")
        need("add fractions (D' varied at a fixed D + D') so that a split-aware law can tell D from D'")
    elif mf is None:
        fails.append(f"no measured expert path of the fit's domains: D*/{axis} was searched over all fractions and "
                     "cannot be compared with a measurement")
        need("run the split grid (pretrain fractions 0, 0.2, ..., 1, with pretraining only) at "
             f"N = {fmt(split['n_params'])}, "
             f"{axis} = {fmt(split['budget_tokens'])}")
    elif hi - lo < 1e-9:
        if sweep["accounting"] == "shared-seed" and len(facts["own_fractions"]) > 1:
            fails.append(f"the split search found one measured fraction ({lo:.2f}) at {facts['where']}, but the sweep "
                         f"measured D/C = {', '.join(_g2(f) for f in facts['own_fractions'])} at C = "
                         f"{fmt(facts['budget_near'])}: split.py groups measured runs by D + D', which varies with the "
                         "fraction at a fixed C = D + K·D', so under shared-seed accounting its search range and "
                         "measured comparison miss the runs of one C")
            need("read the measured best split per (N, C) below (grouped by C, no fit), or answer in per-path "
                 "accounting (--accounting per-path), until the split search groups shared-seed runs by C",
                 key="shared-seed grouping")
        else:
            fails.append(f"only one pretrain fraction ({lo:.2f}) was measured at {facts['where']}: the split cannot "
                         "be chosen there")
            need(f"run more pretrain fractions at {facts['where']}, e.g. "
                 + ", ".join(_g2(f) for f in (0.0, 0.2, 0.4, 0.6, 0.8) if abs(f - lo) > 0.05), key="fractions")
    elif s.get("at_edge"):
        side, f_free = s["at_edge"], s["unconstrained_fraction"]
        fails.append(f"D*/{axis} = {frac:.2f} is at the {side} edge of the measured fractions {lo:.2f}–{hi:.2f}: "
                     f"the law's optimum over all fractions is {f_free:.2f}, outside what was measured")
        edge = lo if side == "lower" else hi
        need(f"run pretrain fractions {'below' if side == 'lower' else 'above'} {edge:.2f} at {facts['where']}, "
             f"e.g. {', '.join(_g2(f) for f in _fractions_between(f_free, edge, (round(f_free, 2),)))}, so that the "
             f"measured fractions bracket the optimum")
    elif s.get("outside_measured"):
        fails.append(f"D*/{axis} = {frac:.2f} is outside the measured fractions {lo:.2f}–{hi:.2f} (extrapolated)")
        edge = lo if frac < lo else hi
        need(f"run pretrain fractions between {frac:.2f} and {edge:.2f} at {facts['where']}, e.g. "
             + ", ".join(_g2(f) for f in _fractions_between(frac, edge, (round(frac, 2),))))
    else:
        lines.append(("Search", f"D*/{axis} = {frac:.2f} lies inside the measured fractions {lo:.2f}–{hi:.2f} "
                      f"(measured at {facts['where']}: " + ", ".join(_g2(f) for f in facts["fractions"]) + ")"
                      + (" (searched over all fractions: --extrapolate)" if s.get("extrapolate") else "")))

    # the measured comparison
    m = split.get("measured") or {}
    if m.get("best_fraction") is not None:
        done = [c["pretrain_fraction"] for c in m["curve"] if c["expert_loss"] is not None]
        best = m["best_fraction"]
        inner_low = len(done) > 1 and best == min(done) and best > 1e-9
        inner_high = len(done) > 1 and best == max(done) and best < 1 - 1e-9
        if inner_low or inner_high:
            side = "lowest" if inner_low else "highest"
            fails.append(f"the measured best fraction {best:.2f} is the {side} one measured at {facts['where']}: the "
                         "measured optimum may lie beyond it")
            if s.get("at_edge") != ("lower" if inner_low else "upper"):  # else said once, above
                need(f"run pretrain fractions {'below' if inner_low else 'above'} {best:.2f} at {facts['where']}, e.g. "
                     + ", ".join(_g2(f) for f in _fractions_between(0.0 if inner_low else 1.0, best,
                                                                  (0.0,) if inner_low else ())))
        for name, what, gain_key in (("pretrain_only", "pretraining only", "gain_vs_pretrain_only"),
                                     ("baseline_same_fraction", "the mixture baseline at the same fraction",
                                      "gain_vs_baseline_same_fraction")):
            if f"predicted_gain_vs_{name}" not in m or best >= 1 - 1e-9:
                continue  # nothing measured to compare (the best point is pretraining only itself)
            agree, noise = m.get(f"agrees_{name}"), m.get(f"agrees_{name}_within_noise")
            meas, ci, pi = m[gain_key], m.get(f"predicted_gain_vs_{name}_ci"), m.get(f"predicted_gain_vs_{name}_pi")
            told = (f"measured gain over {what} {meas:.2%} against {m[f'predicted_gain_vs_{name}']:.2%} fitted"
                    + (f" ({CI_LEVEL:.0%} bootstrap interval {ci[0]:.2%} to {ci[1]:.2%})" if ci else "")
                    + (f" ({PI_LEVEL:.0%} prediction interval {pi[0]:.2%} to {pi[1]:.2%})" if pi else ""))
            pred = m[f"predicted_gain_vs_{name}"]
            material = (np.sign(meas) != np.sign(pred) and max(abs(meas), abs(pred)) > 1e-4) or \
                abs(meas - pred) > GAIN_TOLERANCE * max(abs(meas), abs(pred))
            if agree is False and noise is not True and not material:
                cautions.append(told + f": outside the fit's intervals, but by {abs(meas - pred):.2%} only (less than "
                                f"{GAIN_TOLERANCE:.0%} of the gain, same sign): the fit's intervals are narrow")
            elif agree is False and noise is not True:
                fails.append(told + ": the fit does not reproduce the measured comparison, beyond the noise of one run")
                need(f"repeat the measured best fraction {best:.2f} and pretraining only at {facts['where']} with "
                     f"another seed (the noise of one run; record eval_loss_se), and run the fractions next to it "
                     f"(e.g. {', '.join(_g2(f) for f in _neighbours(best, done))})")
            elif agree is False:
                cautions.append(told + ": outside the bootstrap interval but inside the prediction interval of one "
                                "measurement, so within noise")
            elif agree is None:
                cautions.append(told + ": agreement not judged (no bootstrap resamples)")
            else:
                lines.append(("Measured vs fitted", told + ": agrees"))
        if m.get("baseline_loss_at_best") is None and best < 1 - 1e-9:
            need(f"run the mixture baseline at fraction {best:.2f} at {facts['where']} (the seed of D = "
                 f"{fmt(m['best_pretrain_tokens'])} continued on the mixture) to measure the gain over the baseline "
                 "at the same fraction", strengthen)
    elif split.get("measured") is not None:
        cautions.append("no measured fraction at this scale has every weighted domain: no measured best point")

    # extrapolation, coverage, accounting, warnings
    ex = split.get("extrapolation")
    if ex:
        pi = ex.get("prediction_interval")
        lines.append(("Extrapolation", ex["statement"] + (f"; {PI_LEVEL:.0%} prediction interval of the loss "
                                                          f"{pi[0]:.4g}–{pi[1]:.4g}" if pi else "")))
        if ex.get("beyond"):
            cautions.append("the recommendation extrapolates beyond the fitted range: " + ex["statement"])
            need(f"measure at the requested N = {fmt(split['n_params'])} and {axis} = {fmt(split['budget_tokens'])} "
                 "(a few fractions around the recommendation) to check the extrapolation", strengthen)
    cov = split.get("heldout_coverage") or {}
    method = split.get("prediction_interval_method")
    lines.append(("Prediction intervals", cov.get("statement", "not checked")
                  + (f" (each interval: {method})" if method else "")))
    if cov.get("coverage") is not None and cov["coverage"] < cov["level"] - 0.25:
        cautions.append(f"the {cov['level']:.0%} prediction intervals covered only {cov['coverage']:.0%} of the "
                        "held-out points: read them as too narrow")
    lines.append(("Accounting", sweep["source"]))
    lines.append(("Compute", split["compute"]["statement"]))
    if sweep["accounting"] == "shared-seed" and split["k_experts"] != sweep["k"]:
        cautions.append(f"the rows record K = {sweep['k']} experts per seed ({sweep['k_source']}) but the split "
                        f"is computed with K = {split['k_experts']} (one expert per fitted domain)")
    if sweep["measured"] and sweep["accounting"] != sweep["measured"]:
        cautions.append(f"answered in {sweep['accounting']} accounting, but the sweep measured {sweep['measured']}")
    if analysis.left_out is not None:
        cautions.append(analysis.left_out.sentence())
    for w in split.get("warnings", []):
        if w not in cautions:
            cautions.append(w)
    return _verdict(fails, cautions, run_next, strengthen, lines)


def _neighbours(best: float, done: list) -> list:
    """Fractions halfway between `best` and its measured neighbours."""
    lower = [f for f in done if f < best - 1e-9]
    upper = [f for f in done if f > best + 1e-9]
    out = []
    if lower:
        out.append(round((max(lower) + best) / 2, 2))
    if upper:
        out.append(round((min(upper) + best) / 2, 2))
    return out or [best]


def _verdict(fails, cautions, run_next, strengthen, lines) -> dict:
    if fails:
        verdict = ("**NOT RELIABLE**: " + "; ".join(fails) + ". Run next to make it reliable: "
                   + "; ".join(run_next or ["see the failed checks above"]) + ".")
    else:
        verdict = ("Reliability checks passed: the law is identified by the grid, its held-out mean errors are at "
                   f"most {MAX_HELDOUT_ERROR:.0%}, D* lies inside the measured fractions, and the measured gains "
                   "agree with the fitted ones (within the fit's intervals, or by less than "
                   f"{GAIN_TOLERANCE:.0%} of the gain)."
                   + (" Cautions below." if cautions else ""))
    return {"reliable": not fails, "verdict": verdict, "failures": fails, "cautions": cautions,
            "run_next": run_next, "would_strengthen": strengthen,
            "lines": [{"what": a, "text": b} for a, b in lines]}


def _trust(doc: Doc, trust: dict):
    doc.section(TRUST)
    doc.para(trust["verdict"])
    doc.bullets([f"{line['what']}: {line['text']}" for line in trust["lines"]])
    if trust["cautions"]:
        doc.para("Warnings and cautions:")
        doc.bullets(trust["cautions"])
    if trust["would_strengthen"]:
        doc.para("Would strengthen it: " + "; ".join(trust["would_strengthen"]) + ".")


def _own_measured(table: pd.DataFrame, sweep: dict, split: dict) -> dict | None:
    """measured_best at exactly the requested (N, budget), when the sweep measured it in this accounting."""
    if sweep["measured"] != split["accounting"]:
        return None
    for m in measured_best(table, sweep):
        if math.isclose(m["n_params"], split["n_params"], rel_tol=1e-6) and \
                math.isclose(m["budget"], split["budget_tokens"], rel_tol=1e-6):
            return m
    return None


def _recommendation(doc: Doc, analysis: Analysis, split: dict | None, table: pd.DataFrame, sweep: dict):
    doc.section("Recommendation")
    if split is None:
        doc.para("No law could be fitted to these results, so no split is recommended; the measured split "
                 "curves below are the evidence there is.")
        return
    law = analysis.split_law or analysis.chosen
    axis = "T" if split["accounting"] == "per-path" else "C"
    m = split.get("measured") or {}
    own = _own_measured(table, sweep, split)
    seen = len([c for c in m.get("curve", []) if c.get("expert_loss") is not None])
    # The fractions the split law was fitted on at this budget (not fraction 0 when its experts, trained from
    # scratch, are outside the law's domain: law_domain).
    fitted = _own_measured(analysis.rows_for(law), sweep, split) if own is not None else None
    searchable = (fitted or {}).get("fractions", [])
    if own is not None and len(searchable) > seen:
        # The split search's measured comparison missed runs of this budget (a shared-seed sweep: its runs of
        # one C differ in D + D'): the measured numbers from the runs grouped by the budget, no comparison.
        doc.para(_own_measured_paragraph(own, axis))
        m = {}
    elif m.get("best_fraction") is not None:
        doc.para(_measured_paragraph(m, axis))
    score = analysis.scores.get(law)
    checks = analysis.checks.get(law, {})
    worst = max((c["max_rel_error"] for c in checks.values() if "max_rel_error" in c), default=None)
    valid = (f"the {law} fit predicted runs it never saw to within {rel_error(score)} on average"
             + (f" ({rel_error(worst)} at worst)" if worst is not None else "")) if score is not None else \
        f"the {law} fit could not be checked on held-out runs"
    if analysis.split_why:
        valid += f" ({analysis.split_why})"
    unit = "tokens per expert path" if split["accounting"] == "per-path" else \
        f"tokens in all (one seed shared by {split['k_experts']} experts)"
    if split["split_blind"]:
        doc.para(f"Fitted: the selected law ({analysis.chosen}) cannot tell pretraining tokens from specialization "
                 f"tokens, so it predicts the same loss ({split['predicted_loss']:.4g}) for every split of "
                 f"{split['budget_tokens']:.4g} {unit} at N = {split['n_params']:.4g}; {valid}. "
                 "Use the measured split curves below.")
        return
    ci = split["pretrain_fraction_ci"]
    mc = split.get("pretrain_fraction_ci_mc_error")
    mc_note = (f"; its ends are percentiles of {split['n_bootstrap']} resamples, uncertain by up to "
               f"±{max(mc):.0%}" if mc and max(mc) >= 0.01 else "")
    pi = split.get("predicted_loss_interval")
    fi = split.get("full_pretrain_loss_interval")
    where = ("" if not split["search"].get("measured_fractions") else
             f", searched within the measured fractions {split['search']['range'][0]:.2f}–"
             f"{split['search']['range'][1]:.2f}" if not split["search"].get("extrapolate") else
             ", searched over all fractions (extrapolate)")
    doc.para(f"Fitted ({law}): for a model of size N = {split['n_params']:.4g} and a budget of "
             f"{split['budget_tokens']:.4g} {unit}, pretrain for D* = {split['pretrain_tokens']:.4g} tokens "
             f"({split['pretrain_fraction']:.0%} of the budget, {CI_LEVEL:.0%} interval "
             f"{ci[0]:.0%}–{ci[1]:.0%}{where}{mc_note}) "
             f"and specialize for the rest (D' = {split['special_tokens']:.4g} per expert); expected loss "
             f"{split['predicted_loss']:.4g}"
             + (f" ({PI_LEVEL:.0%} prediction interval {pi[0]:.4g}–{pi[1]:.4g})" if pi else "")
             + f", against {split['full_pretrain_loss']:.4g} for pretraining only"
             + (f" ({fi[0]:.4g}–{fi[1]:.4g})" if fi else "")
             + f" ({split['gain_vs_full_pretrain']:.2%} better), {split['baseline_loss']:.4g} for the mixture "
             f"baseline at the same D, and {split['recipe_80_20_loss']:.4g} for the 80/20 recipe; {valid}.")
    if m.get("best_fraction") is not None:
        doc.para(_agreement_paragraph(m, law))


def _own_measured_paragraph(o: dict, axis: str) -> str:
    text = (f"Measured (no fit), at the requested N = {o['n_params']:.4g}, {axis} = {o['budget']:.4g} (runs grouped by "
            f"{axis}; the split search's measured comparison did not find them, see {TRUST}): the best measured split "
            f"is D/{axis} = {o['best_fraction']:.2f}"
            + (" (pretraining only, D' = 0)" if o["best_is_pretrain_only"] else
               f" (D = {o['best_pretrain_tokens']:.4g})")
            + f" with own-domain loss {o['best_loss']:.4g} (mean over domains)")
    if not o["best_is_pretrain_only"]:
        text += (f"; pretraining only measured {o['pretrain_only_loss']:.4g}: {o['gain_vs_pretrain_only']:.2%} better "
                 "than pretraining only" if o["pretrain_only_loss"] is not None else
                 "; pretraining only (D' = 0) was not measured at this scale")
        b = o["baseline_same_fraction"]
        text += (f"; the mixture baseline at the same fraction measured {b:.4g}: "
                 f"{o['gain_vs_baseline_same_fraction']:.2%} better than it" if b is not None else
                 "; the mixture baseline was not measured at the same fraction (no measured gain over it)")
    return text + ". The fit is not compared with these measurements here."


def _measured_paragraph(m: dict, axis: str) -> str:
    sc = m["scale"]
    at = ("at the requested scale" if sc["exact"] else "at the nearest measured scale") + f" ({sc['where']})"
    best = m["best_fraction"]
    text = (f"Measured (no fit), {at}: the best measured split is D/{axis} = {best:.2f} "
            + ("(pretraining only, D' = 0)" if best >= 1 - 1e-9 else
               f"(D = {m['best_pretrain_tokens']:.4g}, D' = {m['best_special_tokens']:.4g})")
            + f" with own-domain loss {m['best_loss']:.4g} (weighted mean over domains)")
    pre = m.get("pretrain_only_loss")
    if pre is not None and best < 1 - 1e-9:
        text += f"; pretraining only measured {pre:.4g}: {m['gain_vs_pretrain_only']:.2%} better than pretraining only"
    elif pre is None:
        text += "; pretraining only (D' = 0) was not measured at this scale"
    if best < 1 - 1e-9:
        b = m.get("baseline_loss_at_best")
        text += (f"; the mixture baseline at the same fraction measured {b:.4g}: "
                 f"{m['gain_vs_baseline_same_fraction']:.2%} better than it" if b is not None else
                 "; the mixture baseline was not measured at the same fraction (no measured gain over it)")
    return text + "."


def _agreement_paragraph(m: dict, law: str) -> str:
    parts = []
    pl, ppi = m.get("predicted_loss_at_best"), m.get("predicted_loss_at_best_pi")
    if pl is not None:
        parts.append(f"at the measured best point {law} predicts loss {pl:.4g}"
                     + (f" ({PI_LEVEL:.0%} prediction interval {ppi[0]:.4g}–{ppi[1]:.4g}, "
                        f"measured {m['best_loss']:.4g})"
                        if ppi else f" (measured {m['best_loss']:.4g})"))
    for name, what, gain_key in (("pretrain_only", "pretraining only", "gain_vs_pretrain_only"),
                                 ("baseline_same_fraction", "the mixture baseline at the same fraction",
                                  "gain_vs_baseline_same_fraction")):
        if f"predicted_gain_vs_{name}" not in m or m["best_fraction"] >= 1 - 1e-9:
            continue  # the measured best point is pretraining only: no gain to compare
        ci, pi = m.get(f"predicted_gain_vs_{name}_ci"), m.get(f"predicted_gain_vs_{name}_pi")
        agree, noise = m.get(f"agrees_{name}"), m.get(f"agrees_{name}_within_noise")
        s = f"gain over {what}: {m[f'predicted_gain_vs_{name}']:.2%} fitted against {m[gain_key]:.2%} measured"
        if agree is None:
            s += " (no bootstrap interval, agreement not judged)"
        elif agree:
            s += f": the fit agrees within its {CI_LEVEL:.0%} bootstrap interval ({ci[0]:.2%} to {ci[1]:.2%})"
        else:
            s += (f": the fit does NOT agree within its {CI_LEVEL:.0%} bootstrap interval ({ci[0]:.2%} to {ci[1]:.2%})"
                  + ("" if noise is None else
                     f", and the measurement is {'inside' if noise else 'outside'} its {PI_LEVEL:.0%} prediction "
                     f"interval ({pi[0]:.2%} to {pi[1]:.2%}), "
                     + ("so within the noise of one run" if noise else "so beyond the noise of one run")))
        parts.append(s)
    fs = m.get("fitted_at_scale")
    if fs and not m["scale"]["exact"]:
        parts.append(f"at that scale the fitted optimum is D/budget = {fs['pretrain_fraction']:.2f} (loss "
                     f"{fs['predicted_loss']:.4g})")
    return ("Measured against fitted: " + "; ".join(parts) + ".") if parts else \
        "Measured against fitted: the law could not be compared with the measured best point."


def _data(doc: Doc, table: pd.DataFrame, rows: pd.DataFrame, selection: str, sweep: dict, left_out=None):
    doc.section("Data")
    doc.para(f"Source: {table.attrs.get('source')}. {len(table)} rows with status ok "
             f"({table.attrs.get('dropped_status', 0)} dropped for status), {table['run_id'].nunique()} trained "
             f"models. The laws are fitted on {len(rows)} rows, selection '{selection}': {SELECTIONS[selection]}. "
             + (f"Left out: {left_out.sentence()}. " if left_out is not None else "")
             + f"Accounting: {sweep['source']}."
             + (" Standard errors of the losses (eval_loss_se) are drawn as error bars."
                if plots.has_se(table) else " The rows carry no standard error of the loss (eval_loss_se): "
                                             "measured points have no error bars."))
    acct = sweep["measured"] or sweep["accounting"]
    budget = accounting_budget(rows, acct, sweep["k"])
    label = "D + D' (budget T)" if acct == "per-path" else "C = D + K·D' (budget)"
    doc.table(["quantity", "distinct values", "range"], [
        ["N (n_params)", rows["n_params"].nunique(), f"{rows['n_params'].min():.4g} – {rows['n_params'].max():.4g}"],
        [label, budget.round(6).nunique(), f"{budget.min():.4g} – {budget.max():.4g}"],
        ["D/(D+D')", rows["pretrain_fraction"].round(6).nunique(),
         f"{rows['pretrain_fraction'].min():.3g} – {rows['pretrain_fraction'].max():.3g}"],
        ["eval domains", rows["eval_domain"].nunique(), ", ".join(sorted(rows["eval_domain"].unique()))],
    ])
    if plots.has_se(table):
        rel = pd.to_numeric(rows["eval_loss_se"], errors="coerce") / rows["eval_loss"]
        by = rel.groupby(rows["eval_domain"]).agg(["median", "max"]).dropna()
        if len(by):
            doc.para("Held-out precision: standard error of each loss over documents, relative to the loss, "
                     "by domain (median / largest): " + "; ".join(f"{d} {pct(r['median'])} / {pct(r['max'])}"
                                                                 for d, r in by.iterrows())
                     + ". Every model is evaluated on the same documents, so most of this error is shared by all "
                       "of a domain's rows (it moves the domain's E, not the comparisons); the fit weights each "
                       "row by its precision.")
    if "cooldown_tokens" in table.columns:
        annealed = table[(table["special_tokens"] == 0) & (pd.to_numeric(table["cooldown_tokens"], errors="coerce") > 0)]
        if len(annealed):
            share = (annealed["cooldown_tokens"] / annealed["pretrain_tokens"]).median()
            doc.para(f"Pretraining-only rows (D' = 0, {annealed['run_id'].nunique()} models) are finished runs: each "
                     f"left the constant-LR seed trajectory {share:.0%} of D early and decayed on the mixture.")


def _key(v) -> np.ndarray:
    return np.array([float(f"{x:.9g}") for x in np.ravel(np.asarray(v, float))])


def measured_best(table: pd.DataFrame, sweep: dict) -> list:
    """Per measured (N, budget) in the sweep's accounting (T = D + D', or C = D + K·D'): the fraction of lowest
    own-domain loss (mean over domains; pretraining only, D' = 0, is fraction 1), pretraining only, and the
    mixture baseline at the SAME fraction (same N, budget and seed D: the seed continued on the mixture), never a
    mean over fractions. One dict per scale, with the measured fractions."""
    acct = sweep["measured"] or sweep["accounting"]
    t = table[table["eval_domain"] != MIXTURE].copy()
    if len(t) == 0:
        return []
    t["_b"] = _key(accounting_budget(t, acct, sweep["k"]))
    t["_d"] = _key(t["pretrain_tokens"])
    t["_n"] = _key(t["n_params"])
    roles = role(t)
    own = t[roles == OWN]
    base = t[roles == BASELINE]
    has_recall = "recall_accuracy" in t.columns and t["recall_accuracy"].notna().any()
    out = []
    for (n, b), g in own.groupby(["_n", "_b"]):
        doms = sorted(g["eval_domain"].unique())
        bg = base[(base["_n"] == n) & (base["_b"] == b) & base["eval_domain"].isin(doms)]
        pre_rows = pd.concat([bg[bg["special_tokens"] == 0], g[g["special_tokens"] == 0]])
        pre_by_dom = pre_rows.groupby("eval_domain")["eval_loss"].mean()
        pre = float(pre_by_dom.mean()) if set(pre_by_dom.index) >= set(doms) else None
        cand = {}
        for d, h in g[g["special_tokens"] > 0].groupby("_d"):
            if set(h["eval_domain"]) >= set(doms):
                cand[float(d)] = float(h.groupby("eval_domain")["eval_loss"].mean().mean())
        if pre is not None:
            cand[float(b)] = pre
        if not cand:
            continue
        d_best = min(cand, key=cand.get)
        is_pre = d_best == float(b)
        same = pre if is_pre else None
        if not is_pre:
            sb = bg[(bg["_d"] == d_best) & (bg["special_tokens"] > 0)].groupby("eval_domain")["eval_loss"].mean()
            same = float(sb.mean()) if set(sb.index) >= set(doms) else None
        recall = None
        if has_recall:
            rc = g.assign(_f=(g["_d"] / b).round(6)).groupby("_f")["recall_accuracy"].mean()
            if rc.notna().any():
                recall = (float(rc.idxmax()), float(rc.max()))
        gain = lambda ref: None if ref is None or is_pre else (ref - cand[d_best]) / ref
        out.append({"n_params": float(n), "budget": float(b), "fractions": sorted(d / b for d in cand),
                    "best_fraction": d_best / b, "best_pretrain_tokens": d_best, "best_is_pretrain_only": is_pre,
                    "best_loss": cand[d_best], "pretrain_only_loss": pre, "baseline_same_fraction": same,
                    "gain_vs_pretrain_only": gain(pre), "gain_vs_baseline_same_fraction": gain(same),
                    "best_recall": recall})
    return out


def measured_best_table(table: pd.DataFrame, sweep: dict) -> list:
    """The rows of the report's table of measured_best."""
    out = []
    for m in measured_best(table, sweep):
        same = ("= pretraining only" if m["best_is_pretrain_only"] else
                fmt(m["baseline_same_fraction"]) if m["baseline_same_fraction"] is not None else "not measured")
        r = m["best_recall"]
        out.append([fmt(m["n_params"]), fmt(m["budget"]), f"{m['best_fraction']:.2f}"
                    + (" (pretraining only)" if m["best_is_pretrain_only"] else ""), fmt(m["best_loss"]),
                    fmt(m["pretrain_only_loss"]), same, pct(m["gain_vs_pretrain_only"]),
                    pct(m["gain_vs_baseline_same_fraction"]), f"{r[0]:.2f} ({r[1]:.3f})" if r else "—"])
    return out


def _measured(doc: Doc, table: pd.DataFrame, sweep: dict):
    doc.section("Measured split curves (no fit)")
    acct = sweep["measured"] or sweep["accounting"]
    frac_label, budget_label = ("D/(D+D')", "D+D'") if acct == "per-path" else ("D/C", "C")
    doc.para(f"Each expert on its own domain (solid) against the mixture baseline on the same domain (dashed), "
             f"by pretrain fraction {frac_label}, for each (N, {budget_label}) in the sweep's {acct} accounting"
             + ("" if acct == "per-path" else " (C = D + K·D' for the experts; the baseline is one model of C)")
             + (". Error bars: eval_loss_se." if plots.has_se(table) else ". No error bars: the rows carry no "
                                                                          "eval_loss_se.")
             + " No law is involved.")
    budget = accounting_budget(table, acct, sweep["k"])
    plot_df = table.assign(budget_tokens=_key(budget), pretrain_fraction=table["pretrain_tokens"] / budget)
    doc.figure("measured_loss.png", plots.measured_split_curves(plot_df, "eval_loss", frac_label, budget_label),
               "eval_loss by pretrain fraction")
    if "recall_accuracy" in table.columns and table["recall_accuracy"].notna().any():
        doc.figure("measured_recall.png", plots.measured_split_curves(plot_df, "recall_accuracy", frac_label,
                                                                      budget_label),
                   "recall_accuracy by pretrain fraction")
    rows = measured_best_table(table, sweep)
    if rows:
        doc.para(f"Measured best split per (N, {budget_label}): the pretrain fraction of lowest own-domain loss "
                 "(mean over domains; pretraining only counts as fraction 1), pretraining only (D' = 0), the "
                 "mixture baseline at the same fraction (the same seed continued on the mixture), the measured "
                 "gains over both, and the fraction of best recall where measured.")
        doc.table(["N", budget_label, f"best {frac_label}", "expert loss there", "pretraining only (D'=0)",
                   "mixture baseline at the same fraction", "gain vs pretraining only",
                   "gain vs baseline (same fraction)", "best recall fraction (accuracy)"], rows)


def _downstream_rows(results, downstream) -> pd.DataFrame:
    """lm-eval rows (splitsweep/downstream.py): `downstream` if given, else downstream.jsonl beside the results."""
    if downstream is None and isinstance(results, (str, Path)):
        base = Path(results)
        candidate = SweepLayout(base if base.is_dir() else base.parent).downstream
        downstream = candidate if candidate.exists() else None
    if downstream is None:
        return pd.DataFrame()
    if isinstance(downstream, pd.DataFrame):
        df = downstream
    else:  # a line that is no row (torn by a job killed or still appending, foreign) is skipped; the file must exist
        df = pd.DataFrame(read_jsonl(downstream, missing_ok=False))
    if df.empty:
        return df
    df = df[df.get("status", "ok") == "ok"] if "status" in df else df
    # A model evaluated again (a task added to the sweep) has rows of both evaluations: the newest counts.
    same = [c for c in ("run_id", "task", "metric", "num_fewshot") if c in df]
    if "run_id" in same:
        df = df.drop_duplicates(subset=same, keep="last")
    # One metric per task: accuracy where there is one, and the tasks themselves (groups are aggregates).
    if "is_group" in df:
        df = df[~df["is_group"].fillna(False).astype(bool)]
    keep = []
    for task, g in df.groupby("task"):
        for metric in ("acc", "acc_norm", "exact_match"):
            if (g["metric"] == metric).any():
                keep.append(g[g["metric"] == metric])
                break
    if not keep:
        return pd.DataFrame()
    df = pd.concat(keep)
    total = (df["pretrain_tokens"] + df["special_tokens"]).astype(float)
    return df.assign(pretrain_fraction=np.where(total > 0, df["pretrain_tokens"] / total.where(total > 0, 1), 1.0))


def _downstream(doc: Doc, results, downstream):
    doc.section("Downstream accuracy")
    df = _downstream_rows(results, downstream)
    if df.empty:
        doc.para("No lm-eval results (downstream.jsonl) beside these records: run the sweep with an `eval` config "
                 "(e.g. eval=phonebook_mc) to measure benchmark accuracy. The law is fitted on loss only.")
        return
    doc.para("Zero-shot accuracy measured by lm-evaluation-harness for every expert and the mixture baseline, "
             "against the pretrain fraction and against training compute; bars are lm-eval's standard errors. "
             "These are measurements, not predictions: the law is fitted on loss.")
    doc.figure("downstream.png", plots.downstream_curves(df), "accuracy by pretrain fraction and by compute")
    rows = []
    for (task, n, frac), g in df.groupby(["task", "n_params", "pretrain_fraction"]):
        roles = role(g)
        base = g[roles == BASELINE]
        experts = g[roles != BASELINE]
        best = experts.loc[experts["value"].idxmax()] if len(experts) else None
        rows.append([task, fmt(n), f"{frac:.2f}",
                     f"{best['value']:.3f} ± {float(best['stderr'] or 0):.3f} ({best['expert_domain']})"
                     if best is not None else "—",
                     f"{base['value'].iloc[0]:.3f} ± {float(base['stderr'].iloc[0] or 0):.3f}" if len(base) else "—"])
    doc.table(["task", "N", "D/(D+D')", "best expert (domain)", "mixture baseline"], rows)


def _laws(doc: Doc, analysis: Analysis):
    doc.section("Laws and held-out validation")
    for name, law in LAWS.items():
        doc.para(f"{name}: {law.formula}. {law.why}")
    head = ["law", "free params", "Huber sum", "largest N held out", "largest budget held out",
            "k-fold (interpolation)", "score", "identified by the grid"]
    rows = []
    for name in LAWS:
        if name in analysis.failures:
            rows.append([name, "—", "not fitted", analysis.failures[name], "", "", "—", "—"])
            continue
        if name not in analysis.fits:
            continue
        f, ch = analysis.fits[name], analysis.checks.get(name, {})
        diag = f.diagnostics
        rows.append([name, f.layout.size, fmt(f.objective), _check_text(ch.get("largest_N")),
                     _check_text(ch.get("largest_T")), _check_text(ch.get("runs_kfold")),
                     "—" if analysis.scores.get(name) is None else rel_error(analysis.scores[name], 3),
                     "yes" if diag["identified"] else f"no: {short(diag)}"])
    doc.table(head, rows)
    doc.para(analysis.why)


def _params(doc: Doc, analysis: Analysis):
    doc.section("Fitted parameters")
    fit = analysis.fit
    p, se, ci = fit.params(), fit.stderr(), fit.intervals()
    rows = []
    for k, v in p.items():
        lo_hi = ci.get(k)
        why = "folded into E" if k in fit.layout.spec.folded else (
            "fixed" if k in fit.layout.spec.fixed else "")
        rows.append([k, fmt(v), fmt(se.get(k)), f"[{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]" if lo_hi else "—", why])
    doc.para(f"Law {fit.law.name}: {fit.law.formula}. Fitted on {fit.n_points} rows ({fit.n_distinct} distinct "
             f"points) from {fit.n_starts} starts; Huber sum {fit.objective:.6g}. Intervals: 95% bootstrap over "
             "trained models.")
    doc.table(["parameter", "value", "std. error", "95% interval", ""], rows)


def _avg_predictor(fit, weights, mix_w):
    def predict(n, d, dp_grid):
        out = np.zeros(len(dp_grid))
        for j, dom in enumerate(fit.domains):
            x = LawInputs.expert_path(n, np.full(len(dp_grid), d), 0.0, mix_w.get(dom, 1.0), j, fit.domains)
            x.special = np.asarray(dp_grid, float)
            out += weights[dom] * fit.predict(x)
        return out
    return predict


def _predicted(doc: Doc, analysis: Analysis, rows: pd.DataFrame, mix_w: dict, weighting):
    doc.section("Measured vs predicted")
    preds = {}
    for name, f in analysis.fits.items():
        preds[name] = f.predict(LawInputs.from_table(rows, f.domains))
    doc.figure("measured_vs_predicted.png", plots.measured_vs_predicted(rows, preds),
               "every fitted row: measured against predicted loss, each law"
               + (" (bars: eval_loss_se)" if plots.has_se(rows) else ""))
    doc.section("Loss against D'")
    fit = analysis.fit
    own_w = {d: 1.0 / len(fit.domains) for d in fit.domains}
    doc.figure("loss_vs_special.png", plots.loss_vs_special(rows, fit, _avg_predictor(fit, own_w, mix_w)),
               "own-domain loss (mean over domains) against D' for each (N, D), with the fitted curves; D' = 0 "
               "(the seed itself: pretraining only) is drawn at 0 as an open square on a symlog axis")

    def table_of(keys):
        out = []
        for name in analysis.fits:
            ch = analysis.checks.get(name, {})
            for key in keys:
                if key in ch:
                    c = ch[key]
                    out.append([name, {**EXTRAPOLATION_CHECKS, **KFOLD_CHECK}[key], c.get("held_out", "—"),
                                c.get("n_test", "—"), _check_text(c)])
        return out

    head = ["law", "check", "held out", "rows predicted", "relative error"]
    doc.section("Held-out extrapolation")
    ext = table_of(EXTRAPOLATION_CHECKS)
    ran = [r for r in ext if "mean" in r[-1]]
    if ran:
        doc.para("Real held-out checks only: each law refitted without every run of the largest model size, or "
                 "without every run of the largest budget (D + D', or C under a shared seed; in a ladder whose "
                 "budgets are stated per parameter, the largest of each N), then asked to predict them.")
        doc.table(head, ext)
        doc.figure("heldout.png", plots.heldout_plot(analysis.heldout_rows, list(EXTRAPOLATION_CHECKS)),
                   "held-out runs (largest N, largest budget): measured against predicted by a fit that never saw them")
    else:
        reasons = sorted({r[-1] for r in ext}) or ["no law was fitted"]
        doc.para("No held-out extrapolation check could run (" + "; ".join(reasons) + "): nothing here says how "
                 "well the laws predict larger models or budgets. The k-fold check below is interpolation.")
    doc.section("Held-out interpolation (k-fold)")
    kf = table_of(KFOLD_CHECK)
    if kf:
        doc.para("Interpolation, not extrapolation: trained models split into folds, each fold predicted by a fit "
                 "on the others (only run when the data have one model size and one budget).")
        doc.table(head, kf)
        doc.figure("heldout_kfold.png", plots.heldout_plot(analysis.heldout_rows, list(KFOLD_CHECK)),
                   "k-fold held-out runs (interpolation): measured against predicted by a fit that never saw them")
    else:
        doc.para("Not run: the data have more than one model size or budget, so the laws were checked by holding "
                 "out the largest N and the largest budget (Held-out extrapolation).")


def _optimal(doc: Doc, analysis: Analysis, rows, n_q, t_q, accounting, mix_w, weighting, split):
    fit = analysis.split_fit
    axis = "T" if accounting == "per-path" else "C"
    doc.section("Optimal split")
    budget = Budget(n_q, t_q, accounting, len(fit.domains))
    curves = {name + ("" if LAWS[name].split_aware else " (split-blind)"):
              path_loss(f, Budget(n_q, t_q, accounting, len(f.domains)), GRID, split_weights(f, mix_w, weighting),
                        mix_w)
              for name, f in analysis.fits.items()}
    m = split.get("measured") or {}
    measured = None
    if m.get("curve") and m["scale"]["exact"] and accounting == "per-path":
        measured = [(c["pretrain_fraction"], c["expert_loss"], None) for c in m["curve"]
                    if c["expert_loss"] is not None]
    search = None if split["search"].get("measured_fractions") is None else split["search"]["measured_fractions"]
    doc.figure("split_curve.png", plots.split_curve_plot(GRID, curves, f"N={n_q:.3g}, {axis}={t_q:.3g} ({accounting})",
                                                         measured=measured, search=search,
                                                         fraction_label=f"D/{axis}"),
               "predicted loss against the pretrain fraction, each law (dot: its minimum; shaded: the measured "
               "fractions; crosses: measured at this scale)")
    rows_t = []
    mb = m.get("best_fraction")
    if mb is not None:
        rows_t.append(["measured best (no fit)", f"{mb:.3f}", fmt(m["best_pretrain_tokens"]),
                       fmt(m["best_special_tokens"]), f"{fmt(m['best_loss'])} (measured)"])
        if m.get("pretrain_only_loss") is not None:
            rows_t.append(["pretraining only (measured)", "1.000", fmt(m["scale"]["path_tokens"]), "0",
                           f"{fmt(m['pretrain_only_loss'])} (measured)"])
        if m.get("baseline_loss_at_best") is not None and mb < 1 - 1e-9:
            rows_t.append(["mixture baseline at the same fraction (measured)", f"{mb:.3f}",
                           fmt(m["best_pretrain_tokens"]), "—", f"{fmt(m['baseline_loss_at_best'])} (measured)"])
    pi = split.get("predicted_loss_interval")
    rows_t += [
        ["optimal split (fitted)", f"{split['pretrain_fraction']:.3f} [{split['pretrain_fraction_ci'][0]:.3f}, "
                                   f"{split['pretrain_fraction_ci'][1]:.3f}]", fmt(split["pretrain_tokens"]),
         fmt(split["special_tokens"]), fmt(split["predicted_loss"])
         + (f" [{fmt(pi[0])}, {fmt(pi[1])}]" if pi else "")],
        ["pretraining only (fitted)", "1.000", fmt(t_q), "0", fmt(split["full_pretrain_loss"])],
        ["mixture baseline at the same D (fitted)", f"{split['pretrain_fraction']:.3f}", fmt(split["pretrain_tokens"]),
         fmt(split["special_tokens"] * (split["k_experts"] if accounting == "shared-seed" else 1)) + " (mixture)",
         fmt(split["baseline_loss"])],
        ["80/20 recipe (fitted)", "0.800", *[fmt(v) for v in budget.tokens_of(0.8)], fmt(split["recipe_80_20_loss"])],
    ]
    if mb is not None and not m["scale"]["exact"]:
        doc.para(f"The measured rows are at the nearest measured scale ({m['scale']['where']}), not at the requested "
                 f"N = {n_q:.4g}, {axis} = {t_q:.4g}.")
    doc.table(["", f"D/{axis}", "D", "D'", f"loss ({PI_LEVEL:.0%} prediction interval)"], rows_t)
    t_lo, t_hi = rows["budget_tokens"].min(), rows["budget_tokens"].max()
    budgets = np.geomspace(max(t_lo / 4, 1.0), t_hi * 16, 9)
    by_t = fraction_curve(fit, n_q, budgets, accounting=accounting, mixture_weights=mix_w, weighting=weighting)
    doc.figure("fraction_vs_budget.png",
               plots.fraction_plot(budgets, by_t, f"budget {axis} (tokens)", f"N = {n_q:.3g}"),
               "optimal pretrain fraction and predicted gain against the budget (the law over all fractions [0, 1], "
               "also beyond the measured ones)")
    if "A" in fit.layout.spec.folded:
        doc.para("One model size in the data: the optimal split against N cannot be predicted.")
    else:
        n_lo, n_hi = rows["n_params"].min(), rows["n_params"].max()
        ns = np.geomspace(n_lo / 2, n_hi * 16, 9)
        by_n = fraction_curve(fit, ns, np.full(len(ns), t_q), accounting=accounting, mixture_weights=mix_w,
                              weighting=weighting)
        doc.figure("fraction_vs_n.png", plots.fraction_plot(ns, by_n, "N (parameters)", f"{axis} = {t_q:.3g}"),
                   "optimal pretrain fraction and predicted gain against model size (the law over all fractions)")
    doc.section("Predicted gain over pretraining only")
    rows_t = [[fmt(t), f"{c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}]", f"{c[3]:.2%}"] for t, c in zip(budgets, by_t)]
    doc.para(f"Law {fit.law.name}, N = {n_q:.4g}, {accounting} accounting: optimal fraction (95% bootstrap) and "
             "predicted relative loss reduction against pretraining only, by budget. These are the law's answers "
             "over all fractions [0, 1] and beyond the fitted budgets: predictions, not measurements (the measured "
             "ones are in the Recommendation and the measured split curves).")
    doc.table([f"budget {axis}", f"optimal D/{axis}", "gain vs pretraining only"], rows_t)
