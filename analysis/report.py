"""The splitting report: report.md, one self-contained report.html (PNG plots embedded), the PNGs,
fit.json and split.json, all written whole or not at all (every figure and text is built in memory
first; each file then goes through a temp file and os.replace).

A report written where an earlier one is leaves none of the earlier one's files behind (a "no law could
be fitted" report beside a stale fit.json would contradict itself): report.md is removed first, then the
REPORT_FILES the new report does not write, then the new files are written and report.md last, so a
report.md in the directory is always a complete report of its own files. Files not in REPORT_FILES
(the user's, W&B's run directory) are never touched.

Python API for the end-of-sweep Hydra callback:
    build_report(results, out_dir, budget_tokens=None, law="auto", n_bootstrap=20, accounting="per-path")
"""
from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import atomic, plots
from .fit import log_progress
from .inputs import LawInputs
from .io import DEFAULT_SELECTION, MIXTURE, SELECTIONS, batch_tokens_of, domain_weights, load_results, select_rows
from .laws import LAWS
from .pipeline import Analysis, analyze
from .split import GRID, Budget, choose_split, fraction_curve, path_loss
from .split import domain_weights as split_weights

SECTIONS = (
    "Recommendation", "Data", "Measured split curves (no fit)", "Laws and held-out validation",
    "Fitted parameters", "Measured vs predicted", "Loss against D'", "Held-out extrapolation",
    "Optimal split", "Predicted gain over pretraining only", "Downstream accuracy", "Notes",
)

# Every file build_report writes (figures by their Doc.figure names). Only these are ever removed.
REPORT_FILES = (
    "report.md", "report.html", "fit.json", "split.json", "measured_loss.png", "measured_recall.png",
    "measured_vs_predicted.png", "loss_vs_special.png", "heldout.png", "split_curve.png",
    "fraction_vs_budget.png", "fraction_vs_n.png", "downstream.png",
)


class Doc:
    """Sections of paragraphs, tables and figures, rendered to Markdown and to self-contained HTML."""

    def __init__(self, title: str):
        self.title, self.sections, self.figures = title, [], {}

    def section(self, title: str):
        self.sections.append((title, []))

    def para(self, text: str):
        self.sections[-1][1].append(("p", text))

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
        out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(self.title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
               "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}"
               "img{max-width:100%}</style></head><body>", f"<h1>{e(self.title)}</h1>"]
        for title, blocks in self.sections:
            out.append(f"<h2>{e(title)}</h2>")
            for b in blocks:
                if b[0] == "p":
                    out.append(f"<p>{e(b[1])}</p>")
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


def build_report(results, out_dir, budget_tokens: float | None = None, law: str = "auto", n_bootstrap: int = 20,
                 accounting: str = "per-path", *, n_params: float | None = None, selection: str = DEFAULT_SELECTION,
                 per_domain: bool = False, weighting="equal", batch_tokens: int | None = None, seed: int = 0,
                 progress: bool = True, downstream=None) -> Path:
    """Fit, validate, choose the split and write the report into out_dir; returns the path of report.md.

    results: a sweep directory (its results.jsonl), a results file, or a DataFrame.
    budget_tokens / n_params: the question asked; default the largest budget D + D' and largest N measured.
    n_bootstrap: resamples of trained models for the intervals (keep it small in the end-of-sweep callback).
    """
    t0 = time.perf_counter()
    table = load_results(results)
    rows = select_rows(table, selection)
    batch = batch_tokens_of(table, batch_tokens)
    n_q = float(n_params) if n_params is not None else float(rows["n_params"].max())
    t_q = float(budget_tokens) if budget_tokens is not None else float(rows["budget_tokens"].max())
    mix_w = domain_weights(rows)
    # Bad questions fail before any fitting.
    from .split import check_budget
    check_budget(t_q, batch, accounting, max(1, len([d for d in mix_w if d != MIXTURE])))

    analysis = analyze(rows, law, per_domain=per_domain, n_bootstrap=n_bootstrap, seed=seed, progress=progress)
    doc = Doc("Splitting report")
    files = {}
    split = None
    notes = []
    if analysis.chosen is not None:
        split = choose_split(analysis.split_fit, n_q, t_q, accounting=accounting, mixture_weights=mix_w,
                             weighting=weighting, batch_tokens=batch)
        split["law_chosen_because"] = analysis.split_why or analysis.why
        files["fit.json"] = analysis.fit_json()
        files["fit.json"]["all_laws"] = {k: analysis.fit_json(k) for k in analysis.fits}
        files["fit.json"]["not_fitted"] = analysis.failures
        files["split.json"] = split

    _recommendation(doc, analysis, split, rows)
    _data(doc, table, rows, selection)
    _measured(doc, table)
    _laws(doc, analysis)
    if analysis.chosen is not None:
        _params(doc, analysis)
        _predicted(doc, analysis, rows, mix_w, weighting)
        _optimal(doc, analysis, rows, n_q, t_q, accounting, mix_w, weighting, split)
    else:
        for title in SECTIONS[4:10]:
            doc.section(title)
            doc.para("No law could be fitted, so there is nothing to show here (see Laws and held-out validation).")
    _downstream(doc, results, downstream)
    doc.section("Notes")
    for f in analysis.fits.values():
        notes += f.notes
    notes += [f"{k} not fitted: {v}" for k, v in analysis.failures.items()]
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


def _recommendation(doc: Doc, analysis: Analysis, split: dict | None, rows: pd.DataFrame):
    doc.section("Recommendation")
    if split is None:
        doc.para("No law could be fitted to these results, so no split is recommended; the measured split "
                 "curves below are the evidence there is.")
        return
    law = analysis.split_law or analysis.chosen
    score = analysis.scores.get(law)
    checks = analysis.checks.get(law, {})
    worst = max((c["max_rel_error"] for c in checks.values() if "max_rel_error" in c), default=None)
    valid = (f"the {law} fit predicted runs it never saw to within {score:.2%} on average"
             + (f" ({worst:.2%} at worst)" if worst is not None else "")) if score is not None else \
        f"the {law} fit could not be checked on held-out runs"
    if analysis.split_why:
        valid += f" ({analysis.split_why})"
    unit = "tokens per expert path" if split["accounting"] == "per-path" else \
        f"tokens in all (one seed shared by {split['k_experts']} experts)"
    if split["split_blind"]:
        doc.para(f"The selected law ({analysis.chosen}) cannot tell pretraining tokens from specialization tokens, "
                 f"so it predicts the same loss ({split['predicted_loss']:.4g}) for every split of "
                 f"{split['budget_tokens']:.4g} {unit} at N = {split['n_params']:.4g}; {valid}. "
                 "Use the measured split curves below.")
        return
    ci = split["pretrain_fraction_ci"]
    doc.para(f"For a model of size N = {split['n_params']:.4g} and a budget of {split['budget_tokens']:.4g} {unit}, "
             f"pretrain for D* = {split['pretrain_tokens']:.4g} tokens ({split['pretrain_fraction']:.0%} of the "
             f"budget, 95% interval {ci[0]:.0%}–{ci[1]:.0%}) and specialize for the rest "
             f"(D' = {split['special_tokens']:.4g} per expert); expected loss {split['predicted_loss']:.4g}, against "
             f"{split['full_pretrain_loss']:.4g} for pretraining only ({split['gain_vs_full_pretrain']:.2%} better) "
             f"and {split['recipe_80_20_loss']:.4g} for the 80/20 recipe; {valid}.")


def _data(doc: Doc, table: pd.DataFrame, rows: pd.DataFrame, selection: str):
    doc.section("Data")
    doc.para(f"Source: {table.attrs.get('source')}. {len(table)} rows with status ok "
             f"({table.attrs.get('dropped_status', 0)} dropped for status), {table['run_id'].nunique()} trained "
             f"models. The laws are fitted on {len(rows)} rows, selection '{selection}': {SELECTIONS[selection]}.")
    doc.table(["quantity", "distinct values", "range"], [
        ["N (n_params)", rows["n_params"].nunique(), f"{rows['n_params'].min():.4g} – {rows['n_params'].max():.4g}"],
        ["D + D' (budget)", rows["budget_tokens"].nunique(),
         f"{rows['budget_tokens'].min():.4g} – {rows['budget_tokens'].max():.4g}"],
        ["D/(D+D')", rows["pretrain_fraction"].round(6).nunique(),
         f"{rows['pretrain_fraction'].min():.3g} – {rows['pretrain_fraction'].max():.3g}"],
        ["eval domains", rows["eval_domain"].nunique(), ", ".join(sorted(rows["eval_domain"].unique()))],
    ])


def _measured(doc: Doc, table: pd.DataFrame):
    doc.section("Measured split curves (no fit)")
    doc.para("Each expert on its own domain (solid) against the mixture baseline on the same domain (dashed), "
             "by pretrain fraction D/(D+D'), for each (N, D+D'). No law is involved.")
    doc.figure("measured_loss.png", plots.measured_split_curves(table, "eval_loss"), "eval_loss by pretrain fraction")
    if "recall_accuracy" in table.columns and table["recall_accuracy"].notna().any():
        doc.figure("measured_recall.png", plots.measured_split_curves(table, "recall_accuracy"),
                   "recall_accuracy by pretrain fraction")
    own = table[(table["expert_domain"] == table["eval_domain"]) & (table["eval_domain"] != MIXTURE)]
    base = table[(table["expert_domain"] == MIXTURE) & (table["eval_domain"] != MIXTURE)]
    rows = []
    for (n, t), g in own.groupby(["n_params", "budget_tokens"]):
        m = g.groupby("pretrain_fraction")["eval_loss"].mean()
        b = base[(base["n_params"] == n) & (base["budget_tokens"] == t)]["eval_loss"].mean()
        r = ""
        if "recall_accuracy" in g.columns and g["recall_accuracy"].notna().any():
            rc = g.groupby("pretrain_fraction")["recall_accuracy"].mean()
            r = f"{rc.idxmax():.2f} ({rc.max():.3f})"
        rows.append([fmt(n), fmt(t), f"{m.idxmin():.2f}", fmt(m.min()), fmt(b) if len(base) else "—", r or "—"])
    if rows:
        doc.para("Measured best split per (N, D+D'): the pretrain fraction of lowest own-domain loss "
                 "(mean over domains), the mixture baseline's mean loss on the same domains, and the fraction "
                 "of best recall where measured.")
        doc.table(["N", "D+D'", "best D/(D+D')", "expert loss there", "mixture baseline loss",
                   "best recall fraction (accuracy)"], rows)


def _downstream_rows(results, downstream) -> pd.DataFrame:
    """lm-eval rows (splitsweep/downstream.py): `downstream` if given, else downstream.jsonl beside the results."""
    if downstream is None and isinstance(results, (str, Path)):
        base = Path(results)
        candidate = (base if base.is_dir() else base.parent) / "downstream.jsonl"
        downstream = candidate if candidate.exists() else None
    if downstream is None:
        return pd.DataFrame()
    if isinstance(downstream, pd.DataFrame):
        df = downstream
    else:
        import json
        lines = Path(downstream).read_text().splitlines()
        df = pd.DataFrame([json.loads(x) for x in lines if x.strip().startswith("{")])
    if df.empty:
        return df
    df = df[df.get("status", "ok") == "ok"] if "status" in df else df
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
        base = g[g["expert_domain"] == MIXTURE]
        experts = g[g["expert_domain"] != MIXTURE]
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
    head = ["law", "free params", "Huber sum", "largest N held out", "largest D+D' held out", "k-fold (interp.)",
            "score"]
    rows = []

    def cell(c):
        if c is None:
            return "—"
        if "mean_rel_error" in c:
            return f"{c['mean_rel_error']:.2%} mean, {c['max_rel_error']:.2%} max"
        return c.get("skipped") or ("error: " + c.get("error", "?"))

    for name in LAWS:
        if name in analysis.failures:
            rows.append([name, "—", "not fitted", analysis.failures[name], "", "", "—"])
            continue
        if name not in analysis.fits:
            continue
        f, ch = analysis.fits[name], analysis.checks.get(name, {})
        rows.append([name, f.layout.size, fmt(f.objective), cell(ch.get("largest_N")), cell(ch.get("largest_T")),
                     cell(ch.get("runs_kfold")), "—" if analysis.scores.get(name) is None
                     else f"{analysis.scores[name]:.3%}"])
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
               "every fitted row: measured against predicted loss, each law")
    doc.section("Loss against D'")
    fit = analysis.fit
    own_w = {d: 1.0 / len(fit.domains) for d in fit.domains}
    doc.figure("loss_vs_special.png", plots.loss_vs_special(rows, fit, _avg_predictor(fit, own_w, mix_w)),
               "own-domain loss (mean over domains) against D' for each (N, D), with the fitted curves")
    doc.section("Held-out extrapolation")
    doc.figure("heldout.png", plots.heldout_plot(analysis.heldout_rows),
               "held-out runs: measured against predicted by a fit that never saw them")


def _optimal(doc: Doc, analysis: Analysis, rows, n_q, t_q, accounting, mix_w, weighting, split):
    fit = analysis.split_fit
    doc.section("Optimal split")
    budget = Budget(n_q, t_q, accounting, len(fit.domains))
    curves = {name: path_loss(f, Budget(n_q, t_q, accounting, len(f.domains)), GRID,
                              split_weights(f, mix_w, weighting), mix_w) for name, f in analysis.fits.items()}
    doc.figure("split_curve.png", plots.split_curve_plot(GRID, curves, f"N={n_q:.3g}, T={t_q:.3g} ({accounting})"),
               "predicted loss against the pretrain fraction, each law (dot: its minimum)")
    doc.table(["", "D/T", "D", "D'", "predicted loss"], [
        ["optimal split", f"{split['pretrain_fraction']:.3f} [{split['pretrain_fraction_ci'][0]:.3f}, "
                          f"{split['pretrain_fraction_ci'][1]:.3f}]", fmt(split["pretrain_tokens"]),
         fmt(split["special_tokens"]), fmt(split["predicted_loss"])],
        ["pretraining only", "1.000", fmt(t_q), "0", fmt(split["full_pretrain_loss"])],
        ["80/20 recipe", "0.800", *[fmt(v) for v in budget.tokens_of(0.8)], fmt(split["recipe_80_20_loss"])],
    ])
    t_lo, t_hi = rows["budget_tokens"].min(), rows["budget_tokens"].max()
    budgets = np.geomspace(max(t_lo / 4, 1.0), t_hi * 16, 9)
    by_t = fraction_curve(fit, n_q, budgets, accounting=accounting, mixture_weights=mix_w, weighting=weighting)
    doc.figure("fraction_vs_budget.png", plots.fraction_plot(budgets, by_t, "budget T (tokens)", f"N = {n_q:.3g}"),
               "optimal pretrain fraction and predicted gain against the budget")
    if "A" in fit.layout.spec.folded:
        doc.para("One model size in the data: the optimal split against N cannot be predicted.")
        by_n = None
    else:
        n_lo, n_hi = rows["n_params"].min(), rows["n_params"].max()
        ns = np.geomspace(n_lo / 2, n_hi * 16, 9)
        by_n = fraction_curve(fit, ns, np.full(len(ns), t_q), accounting=accounting, mixture_weights=mix_w,
                              weighting=weighting)
        doc.figure("fraction_vs_n.png", plots.fraction_plot(ns, by_n, "N (parameters)", f"T = {t_q:.3g}"),
                   "optimal pretrain fraction and predicted gain against model size")
    doc.section("Predicted gain over pretraining only")
    rows_t = [[fmt(t), f"{c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}]", f"{c[3]:.2%}"] for t, c in zip(budgets, by_t)]
    doc.para(f"Law {fit.law.name}, N = {n_q:.4g}, {accounting} accounting: optimal fraction (95% bootstrap) and "
             "predicted relative loss reduction against pretraining only, by budget.")
    doc.table(["budget T", "optimal D/T", "gain vs pretraining only"], rows_t)
