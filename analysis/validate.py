"""Held-out checks: fit on part of the runs, predict the rest, and pick the law that predicts best.

Checks, in order of preference (extrapolation is what the law is for):
  largest_N   hold out every run of the largest model size
  largest_T   hold out every run of the largest budget: T = D + D' per path, C with a shared seed (C = D + K·D'
              for an expert, D + D' for the mixture baseline: io.budget_of); in a ladder whose budgets differ by
              N (tokens per parameter), the largest budget of every N
  runs_kfold  only when neither exists (one N and one budget, e.g. the phonebook): 5-fold cross-validation
              over trained models, an interpolation check, said so in the report

`--law auto` (pick_law) takes the lowest held-out error among the laws the grid identifies
(diagnostics.diagnose: no parameter on a bound, E not at 0, no decade-wide bootstrap interval, a
full-rank Jacobian); an unidentified law only when none is identified, and the reason says which.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import AnalysisError
from .diagnostics import short
from .fit import FitResult, Screened, fit_law, log_progress, resolve_per_domain, screen_starts
from .inputs import LawInputs
from .io import budget_label, budget_of
from .laws import Law

KFOLD = 5


def _rel_errors(fit: FitResult, test: pd.DataFrame) -> np.ndarray:
    x = LawInputs.from_table(test, fit.domains)
    pred = fit.predict(x)
    return np.abs(pred - test["eval_loss"].to_numpy()) / test["eval_loss"].to_numpy()


def _one_split(df, train_mask, law, per_domain, domains, label, held, screened=None, unscored=None):
    train, test = df[train_mask], df[~train_mask]
    if unscored is not None:
        test = test[~unscored(test)]  # rows some candidate law cannot describe (law_domain): not compared
    out = {"held_out": held, "n_train": int(len(train)), "n_test": int(len(test))}
    if len(test) == 0:  # nothing to score: no refit
        out["error"] = "every held-out row is outside another candidate law's domain"
        return out, None
    try:
        train = train.reset_index(drop=True)
        train.attrs.update(df.attrs)
        fit = fit_law(train, law, per_domain=per_domain, domains=domains, screened=screened)
    except AnalysisError as e:
        out["error"] = str(e)
        return out, None
    err = _rel_errors(fit, test)
    out.update(mean_rel_error=float(err.mean()), max_rel_error=float(err.max()))
    return out, (test.assign(predicted_loss=fit.predict(LawInputs.from_table(test, fit.domains)), check=label))


def heldout(df: pd.DataFrame, law: Law, per_domain: bool | None = None, progress: bool = False,
            screened: Screened | None = None, unscored=None):
    """{check: {...errors...}} and a table of the held-out rows with their predictions.

    per_domain None: the layout of the full-data fit (fit.resolve_per_domain on all of df), so every
    held-out refit has the same free parameters as the fit it checks.
    screened: the extrapolation refits start from these (shared_screening: screened on rows none of them
    holds out); the k-fold refits always screen their own grid.
    unscored: a function of a table of held-out rows -> mask of the rows left out of the errors (law_domain:
    the rows another candidate law cannot describe, so every law is scored on the same rows); they still
    train the refits that hold them in."""
    domains = sorted(df["eval_domain"].unique())
    per_domain, _ = resolve_per_domain(df, law, per_domain, domains)
    results, tables = {}, []
    log_progress(f"{law.name}: held-out checks", progress)
    checks, folds = applicable_splits(df, results)
    for check, train_mask, held in checks:
        res, tab = _one_split(df, train_mask, law, per_domain, domains, check, held, screened, unscored)
        results[check] = res
        tables.append(tab)
    if folds is not None:
        runs = df["run_id"].unique()
        errs, n_test, problems = [], 0, []
        for k, train_mask in enumerate(folds):
            res, tab = _one_split(df, train_mask, law, per_domain, domains, "runs_kfold", f"fold {k}",
                                  unscored=unscored)
            if tab is None:
                problems.append(res.get("error", "?"))
                continue
            tables.append(tab)
            errs.append(np.abs(tab["predicted_loss"] - tab["eval_loss"]) / tab["eval_loss"])
            n_test += len(tab)
        if errs:
            e = np.concatenate([np.asarray(v) for v in errs])
            results["runs_kfold"] = {"held_out": f"{KFOLD}-fold over {len(runs)} trained models (interpolation)",
                                     "n_test": int(n_test), "mean_rel_error": float(e.mean()),
                                     "max_rel_error": float(e.max())}
        else:
            results["runs_kfold"] = {"error": problems[0] if problems else "no fold could be fitted"}
    table = pd.concat([t for t in tables if t is not None], ignore_index=True) if any(
        t is not None for t in tables) else pd.DataFrame()
    return results, table


def shared_screening(df: pd.DataFrame, law: Law, per_domain: bool) -> Screened | None:
    """One screening of the law's start grid (fit.screen_starts) for its fit on all of df and for every
    extrapolation refit of `heldout`: on the rows that every one of them trains on (held out by no check), so
    no held-out row has a say in which starts a refit converges. None when there is no such check (the k-fold
    case holds out every row once) or those rows miss a domain."""
    extrapolation, _ = heldout_splits(df)
    masks = [mask for _, mask, _ in extrapolation if mask is not None]
    if not masks:
        return None
    core = np.logical_and.reduce(masks)
    domains = sorted(df["eval_domain"].unique())
    if sorted(df.loc[core, "eval_domain"].unique()) != domains:
        return None
    rows = df[core].reset_index(drop=True)
    rows.attrs.update(df.attrs)
    return screen_starts(rows, law, per_domain=per_domain, domains=domains)


def applicable_splits(df: pd.DataFrame, out: dict):
    """heldout_splits of df as (the extrapolation checks that apply, the k-fold training masks or None). The
    checks come lazily as (check, training mask, what is held out); each skipped one is recorded in `out` as
    {"skipped": why} in its turn, so `out` keeps heldout_splits' order of the checks."""
    extrapolation, folds = heldout_splits(df)

    def applicable():
        for check, train_mask, held in extrapolation:
            if train_mask is None:
                out[check] = {"skipped": held}
            else:
                yield check, train_mask, held
    return applicable(), folds


def heldout_splits(df: pd.DataFrame) -> tuple[list, list | None]:
    """The held-out checks, defined once for the fits (`heldout`) and for interval coverage.

    Returns ([(check, training mask or None when skipped, what is held out or why it is skipped)], and the
    k-fold training masks over trained models when the data have one model size and one budget, else None).
    """
    n_vals = np.unique(df["n_params"])
    budget, b_label = budget_of(df), budget_label(df)  # T = D + D', or C with a shared seed
    t_vals = np.unique(budget)
    extrapolation = []
    if len(n_vals) < 2:
        extrapolation.append(("largest_N", None, "one model size in the data"))
    else:
        extrapolation.append(("largest_N", (df["n_params"] < n_vals[-1]).to_numpy(), f"N = {n_vals[-1]:.4g}"))
    # The largest budget of each model size: a ladder states its budgets per parameter, so the largest budget
    # overall would be one model's alone. Only when every size keeps two budgets to fit on (with one, tokens and
    # size are collinear); else, and when every size shares one set of budgets, the largest budget overall.
    top = budget.groupby(df["n_params"]).transform("max")
    per_n = budget.groupby(df["n_params"]).nunique()
    if len(t_vals) < 2:
        extrapolation.append(("largest_T", None, f"one budget {b_label} in the data"))
    elif (per_n >= 3).all() and top.nunique() > 1:
        ratio = (top / df["n_params"]).groupby(df["n_params"]).first()
        extrapolation.append(("largest_T", (budget < top).to_numpy(),
                              f"the largest {b_label} of each N ({ratio.min():.3g}–{ratio.max():.3g} tokens per "
                              f"parameter)"))
    else:
        extrapolation.append(("largest_T", (budget < t_vals[-1]).to_numpy(), f"{b_label} = {t_vals[-1]:.4g}"))
    if len(n_vals) >= 2 or len(t_vals) >= 2:
        return extrapolation, None
    runs = np.array(sorted(df["run_id"].unique()))
    fold_of_run = {r: i % KFOLD for i, r in enumerate(runs)}
    folds = df["run_id"].map(fold_of_run).to_numpy()
    return extrapolation, [folds != k for k in range(min(KFOLD, len(runs)))]


def heldout_score(checks: dict) -> float | None:
    """Mean over the checks that ran of their mean relative error (lower is better)."""
    vals = [c["mean_rel_error"] for c in checks.values() if "mean_rel_error" in c]
    return float(np.mean(vals)) if vals else None


HUGE_ERROR = 10.0  # a relative error above 1,000% is a law that diverged off its data: its digits mean nothing


def rel_error(v: float, digits: int = 2) -> str:
    """A relative error as a percentage; above 1,000%, just that."""
    return "> 1,000%" if v > HUGE_ERROR else f"{v:.{digits}%}"


TIE = 0.05  # held-out errors within 5% (relative) of the best are a tie: noise cannot separate them


def _is_identified(diag) -> bool:
    """A law's diagnostics (diagnostics.diagnose dict, or a bool); unknown counts as identified."""
    if diag is None:
        return True
    if isinstance(diag, (bool, np.bool_)):
        return bool(diag)
    return bool(diag.get("identified", True))


def pick_law(scores: dict, n_params: dict | None = None,
             diagnostics: dict | None = None) -> tuple[str | None, str]:
    """The law with the lowest held-out score, and a sentence saying why.

    A law that nests another (two_source with eta = 1 and no domain term is chinchilla) predicts
    held-out runs about as well as the simpler law on the simpler law's data; among laws tied with the
    best, the one with the fewest free parameters wins (Occam).
    diagnostics: law -> diagnostics.diagnose dict (or bool identified). A law the grid does not identify
    is chosen only when no validated law is identified; the sentence names what was passed over and why.
    """
    scored = {k: v for k, v in scores.items() if v is not None}
    if not scored:
        return None, "no law could be validated on held-out runs"
    diagnostics = diagnostics or {}
    identified = {k: v for k, v in scored.items() if _is_identified(diagnostics.get(k))}
    pool = identified or scored
    lowest = min(pool.values())
    tied = [k for k, v in pool.items() if v <= lowest * (1 + TIE)]
    best = min(tied, key=lambda k: ((n_params or {}).get(k, 0), scored[k]))
    among = " among the laws identified by this grid" if identified and len(identified) < len(scored) else ""
    why = f"lowest mean held-out relative error{among}" if scored[best] == lowest else (
        f"fewest parameters among the laws within {TIE:.0%} of the lowest held-out error{among}")

    def reason(k):
        text = short(diagnostics.get(k)) if isinstance(diagnostics.get(k), dict) else ""
        return f" ({text})" if text else ""

    passed = [k for k in sorted(scored, key=scored.get) if k not in pool and scored[k] < scored[best]]
    skip = "".join(f"; {k} has {'the lowest' if scored[k] == min(scored.values()) else 'a lower'} held-out "
                   f"error ({rel_error(scored[k], 3)}) but is not identified by this grid{reason(k)}" for k in passed)
    none = "" if identified else (f"; no law is identified by this grid, so {best} is used anyway"
                                  f"{reason(best)}")
    others = ", ".join(f"{k} {rel_error(v, 3)}" + ("" if k in identified or not identified else " (not identified)")
                       for k, v in sorted(scored.items(), key=lambda kv: kv[1]) if k != best and k not in passed)
    return best, (f"--law auto picked {best}: {why} ({rel_error(scored[best], 3)})" + skip + none
                  + (f"; others: {others}" if others else ""))
