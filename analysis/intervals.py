"""Prediction intervals of the fitted law, and how often they cover runs the fit never saw.

A *prediction interval* is about a future measurement (one more trained model), not about the mean curve:
it combines
  1. parameter uncertainty: the law's bootstrap parameter sets over trained models (FitResult.boot_theta,
     see fit.bootstrap), one set per draw, and
  2. the error of one new run: a log residual log L_obs - log L_hat, resampled with replacement and added to
     the draw's log prediction.
This is the recipe of OLMo-core's model ladder (ChinchillaParametricBootstrappedFit.predict_loss_
distribution: bootstrap fits times exp(resampled log residuals)), with one change in where the residuals come
from. The residuals of a fit on its own rows measure the noise around the curve it chose, not what it gets wrong
about a run it never saw: on the real-text ladder they were a third of the held-out errors, and 80% intervals
built from them covered 37% of the held-out runs. So, given the rows (rows=), the residuals are those of one-step *rollouts*
(`rollout_residuals`): each model size after the first ROLLOUT_MIN_SIZES predicted by the same law fitted on the
smaller sizes only, and the largest budget of each size by a fit without it, the same kind of step as the
held-out checks. They carry a seed trajectory's own noise (one trajectory per N), the law's misfit and the
parameters' drift with the data. Two more choices, both measured on the real-text ladder (benchmarks/README.md
§5):
  - each resampled residual gets a random sign: rollouts in N missed one way (the law fitted on the smaller
    sizes over-predicted the larger ones by 1-3% on average), held-out budgets the other way or not at all, so
    the pool's magnitude carries over to a new prediction and its sign does not. With the signs kept the
    intervals were shifted off the held-out runs (40% coverage of the largest budget);
  - a point farther outside the fitted rows than a rollout was, along the same axis (ln N, or ln tokens per
    parameter), gets that rollout's residuals scaled by the ratio of the distances (ResidualPool.sample): a
    target at 10x the largest N is not as safe as the next rung.
With too few sizes or budgets for any rollout, the fit's own residuals are used, scaled up by sqrt(n / (n - p))
(p free parameters: a fit is closer to its own rows than to a new run by about that factor), never widened.
`residual_pool` also says which pool an interval used.

Without rows= the data a FitResult carries (its `problem`, where fit_law stores one) give its own residuals;
residuals= passes a pool explicitly.

`heldout_coverage` runs the held-out splits of validate.heldout (largest N, largest budget: T = D + D', or C
with a shared seed; or k-fold over trained models when neither exists), fits each training part with a bootstrap, and counts the held-out
rows whose measured loss falls inside the 80% prediction interval: a calibrated interval covers about 80%.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import AnalysisError
from .fit import FitResult, fit_law, log_progress
from .inputs import LawInputs
from .io import budget_of
from .laws import Law

LEVEL = 0.8
N_BOOTSTRAP = 50  # resamples of trained models: the one default of every verb and of the end-of-sweep report
N_RESAMPLE = 4000


def fitted_rows(fit: FitResult, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of `rows` the fit can predict: those of its evaluated domains."""
    keep = rows[rows["eval_domain"].isin(fit.domains)]
    if len(keep) == 0:
        raise AnalysisError(f"none of the rows is of the fit's domains {fit.domains}")
    return keep


def fit_residuals(fit: FitResult, rows: pd.DataFrame, inflate: bool = True) -> np.ndarray:
    """Log residuals log L_obs - log L_hat of `fit` on its rows, scaled by sqrt(n / (n - p)) if inflate."""
    rows = fitted_rows(fit, rows)
    pred = fit.predict(LawInputs.from_table(rows, fit.domains))
    r = np.log(rows["eval_loss"].to_numpy(float)) - np.log(pred)
    return _inflate(r, fit.layout.size) if inflate else r


def _inflate(r: np.ndarray, p: int) -> np.ndarray:
    n = len(r)
    return r * np.sqrt(n / (n - p)) if n > p else r


def problem_residuals(fit: FitResult) -> np.ndarray | None:
    """The log residuals log L_obs - log L_hat on the data the fit carries (FitResult.problem), if it does."""
    problem = getattr(fit, "problem", None)
    if problem is None:
        return None
    # Unweighted: the noise of a new observation is on the loss itself, not in units of the fit's weights.
    return _inflate(-np.asarray(problem.residuals(np.atleast_2d(fit.theta))[0] / problem.scale, float),
                    fit.layout.size)


ROLLOUT_MIN_SIZES = 3  # a rollout step fits on at least this many model sizes
# A rollout residual measured at extrapolation distance d_i is scaled by d / d_i for a point d away along the same
# axis; below this distance (ln units: 1.22x) a residual is mostly a run's own noise, and dividing by a tiny d_i
# would blow it up.
DISTANCE_FLOOR = 0.2


def box_of(n_params, budget) -> np.ndarray:
    """[[ln N lo, hi], [ln tokens-per-parameter lo, hi]] of rows with these N and budgets (budget_of)."""
    n, b = np.asarray(n_params, float), np.asarray(budget, float)
    return np.array([[v.min(), v.max()] for v in (np.log(n), np.log(b / n))])


def box_distance(box: np.ndarray, n_params, budget) -> np.ndarray:
    """(points, 2): how far each (N, budget) lies outside `box` along ln N and along ln(budget / N), the
    distance to the nearer edge, 0 inside. ln 2 is one doubling of N (or of tokens per parameter) beyond what
    was fitted."""
    n, b = np.broadcast_arrays(np.atleast_1d(np.asarray(n_params, float)), np.atleast_1d(np.asarray(budget, float)))
    v = np.stack([np.log(n), np.log(b / n)], axis=-1)
    return np.maximum(v - box[:, 1], 0.0) + np.maximum(box[:, 0] - v, 0.0)


@dataclass(frozen=True)
class ResidualPool:
    """Log residuals log L_obs - log L_hat to resample for a new run, each with the extrapolation distance
    (box_distance, along each axis) it was measured at, 0 for a run inside its fit's range; `box` is the
    range of the rows the fit in use saw, which a new point's distance is measured from (None: not known)."""
    values: np.ndarray
    distances: np.ndarray  # (residuals, 2)
    source: str
    box: np.ndarray | None = None

    def distance(self, n_params, budget) -> np.ndarray:
        """(points, 2) distances of points from the fitted rows; zeros when the pool has no box."""
        if self.box is None:
            return np.zeros((np.broadcast(np.atleast_1d(n_params), np.atleast_1d(budget)).size, 2))
        return box_distance(self.box, n_params, budget)

    def sample(self, rng, shape: tuple, distance=None) -> np.ndarray:
        """Residuals of `shape` (draws, points), each with a random sign: the pool says how far a prediction
        misses, and its sign along one axis (rollouts in N) need not hold along another. With `distance`
        (points, 2), a residual measured d_i away from its fit along an axis is scaled by
        max(1, d / max(d_i, DISTANCE_FLOOR)) for a point d away along the same axis (the larger factor over
        the axes it was measured on): an extrapolation twice as far misses by about twice as much. In-range
        residuals (d_i = 0) are noise and are never scaled."""
        idx = rng.integers(len(self.values), size=shape)
        r = self.values[idx] * rng.choice((-1.0, 1.0), size=shape)
        if distance is None:
            return r
        d = np.broadcast_to(np.asarray(distance, float).reshape(-1, 2), (shape[-1], 2))
        di = self.distances[idx]  # (draws, points, 2)
        ratio = np.where(di > 0, d / np.maximum(di, DISTANCE_FLOOR), 1.0)
        return r * np.maximum(ratio.max(axis=-1), 1.0)


def rollout_steps(rows: pd.DataFrame, min_sizes: int = ROLLOUT_MIN_SIZES) -> list:
    """[(what is predicted, training mask, predicted mask)]: each model size after the first `min_sizes` from
    the smaller sizes (one step: the next size only), and the largest budget of each size from the smaller
    budgets when every size has at least 3 budgets."""
    n = rows["n_params"].to_numpy(float)
    sizes = np.unique(n)
    steps = [(f"N = {v:.4g} from {k} smaller sizes", n < v, n == v) for k, v in enumerate(sizes) if k >= min_sizes]
    budget = budget_of(rows)
    by_n = budget.groupby(rows["n_params"])
    if len(sizes) >= 2 and (by_n.nunique() >= 3).all():
        below_top = budget.to_numpy(float) < by_n.transform("max").to_numpy(float)
        steps.append(("the largest budget of each N from the smaller ones", below_top, ~below_top))
    return steps


def rollout_residuals(fit: FitResult, rows: pd.DataFrame, min_sizes: int = ROLLOUT_MIN_SIZES) -> ResidualPool | None:
    """The residuals of the rollout steps of `rows` (the rows `fit` was fitted on), each step refitting fit's
    law with fit's layout on its training rows and predicting the rest, with each residual's distance from
    its step's training rows. None when no step applies or fits."""
    budget = budget_of(rows).to_numpy(float)
    n = rows["n_params"].to_numpy(float)
    values, distances = [], []
    steps = rollout_steps(rows, min_sizes)
    for _, mask, predicted in steps:
        train = rows[mask].reset_index(drop=True)
        train.attrs.update(rows.attrs)
        try:
            part = fit_law(train, fit.law, per_domain=fit.layout.per_domain, domains=list(fit.domains))
        except AnalysisError:
            continue
        test = predicted & rows["eval_domain"].isin(part.domains).to_numpy()
        values.append(fit_residuals(part, rows[test], inflate=False))
        distances.append(box_distance(box_of(n[mask], budget[mask]), n[test], budget[test]))
    values = np.concatenate(values) if values else np.empty(0)
    distances = np.concatenate(distances) if distances else np.empty((0, 2))
    keep = np.isfinite(values)
    if not keep.any():
        return None
    return ResidualPool(values[keep], distances[keep], f"rollouts ({len(steps)} steps, {int(keep.sum())} residuals)",
                        box_of(n, budget))


def residual_pool(fit: FitResult, rows: pd.DataFrame | None = None, residuals=None) -> ResidualPool:
    """The residuals to resample: explicit residuals= (a ResidualPool or an array), else rollouts over rows,
    else the fit's own residuals on rows (or on the data it carries), inflated."""
    if isinstance(residuals, ResidualPool):
        return residuals
    if residuals is None and rows is not None:
        pool = rollout_residuals(fit, rows)
        if pool is not None:
            return pool
    source = "explicit residuals" if residuals is not None else "the fit's own residuals, scaled by sqrt(n/(n-p))"
    values = _residual_values(fit, rows, residuals)
    return ResidualPool(values, np.zeros((len(values), 2)), source)


def _residual_values(fit, rows, resid) -> np.ndarray:
    if resid is not None:
        pool = np.asarray(resid, float).ravel()
    elif rows is not None:
        pool = fit_residuals(fit, rows)
    else:
        pool = problem_residuals(fit)
        if pool is None:
            raise AnalysisError("a prediction interval needs the fit's residuals: pass rows= (the rows the law "
                                "was fitted on) or residuals=")
    pool = pool[np.isfinite(pool)]
    if len(pool) == 0:
        raise AnalysisError("no finite residual to resample")
    return pool


def concat_inputs(parts: list) -> LawInputs:
    """One LawInputs of the rows of several (same domains)."""
    first = parts[0]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])
    return LawInputs(cat("n_params"), cat("pretrain"), cat("special"), cat("weight"), cat("is_own"),
                     cat("is_baseline"), cat("domain"), list(first.domains))


def parameter_sets(fit: FitResult) -> np.ndarray:
    """The bootstrap parameter sets, or the point estimate alone when there is no bootstrap."""
    if fit.boot_theta is not None and len(fit.boot_theta) >= 1:
        return np.atleast_2d(fit.boot_theta)
    return np.atleast_2d(fit.theta)


def prediction_draws(fit: FitResult, inputs: LawInputs, n_resample: int = N_RESAMPLE, *, rows=None,
                     residuals=None, seed: int = 0, noise: bool = True, distance=None) -> np.ndarray:
    """(n_resample, rows) draws of a measured loss: one bootstrap parameter set per draw (the same for every
    row of a draw, so differences between rows keep their parameter correlation) times exp(an independent
    resampled log residual per row and draw, scaled by the row's extrapolation `distance` from the fitted
    rows: ResidualPool.sample). noise=False leaves the residuals out (a confidence band)."""
    rng = np.random.default_rng(seed)
    thetas = parameter_sets(fit)
    pred = np.atleast_2d(fit.predict(inputs, thetas))  # (sets, rows)
    idx = np.arange(n_resample) % len(thetas)
    rng.shuffle(idx)
    draws = pred[idx]
    if noise:
        draws = draws * np.exp(residual_pool(fit, rows, residuals).sample(rng, draws.shape, distance))
    return draws


def quantiles(draws: np.ndarray, level: float = LEVEL, axis: int = 0):
    if not 0 < level < 1:
        raise AnalysisError(f"interval level must be in (0, 1), got {level!r}")
    lo, hi = np.percentile(draws, [(1 - level) / 2 * 100, (1 + level) / 2 * 100], axis=axis)
    return lo, hi


def prediction_interval(fit: FitResult, inputs: LawInputs, level: float = LEVEL, n_resample: int = N_RESAMPLE, *,
                        rows=None, residuals=None, seed: int = 0, distance=None):
    """(lo, hi), arrays over the rows of `inputs`: the central `level` prediction interval of a new run's loss."""
    return quantiles(prediction_draws(fit, inputs, n_resample, rows=rows, residuals=residuals, seed=seed,
                                      distance=distance), level)


def coverage(fit_on_train: FitResult, heldout_rows: pd.DataFrame, level: float = LEVEL, *, train_rows=None,
             residuals=None, n_resample: int = N_RESAMPLE, seed: int = 0) -> float:
    """Fraction of `heldout_rows` whose measured loss lies inside the fit's `level` prediction interval.

    The residuals are those of the fit on its training rows (train_rows=), never of the held-out rows; each
    held-out row's interval widens with its distance from them (ResidualPool.sample).
    """
    k, n, _ = _covered(fit_on_train, train_rows, heldout_rows, level, n_resample, seed, residuals)
    return k / n


def _covered(fit, train, test, level, n_resample, seed, residuals=None):
    test = fitted_rows(fit, test)
    pool = residual_pool(fit, train, residuals)
    distance = pool.distance(test["n_params"].to_numpy(float), budget_of(test).to_numpy(float))
    lo, hi = prediction_interval(fit, LawInputs.from_table(test, fit.domains), level, n_resample, residuals=pool,
                                 seed=seed, distance=distance)
    y = test["eval_loss"].to_numpy(float)
    return int(np.sum((y >= lo) & (y <= hi))), int(len(y)), set(test["run_id"])


def _fit_part(df, mask, law, per_domain, domains, n_bootstrap, seed):
    train = df[mask].reset_index(drop=True)
    train.attrs.update(df.attrs)
    return train, fit_law(train, law, per_domain=per_domain, domains=domains, n_bootstrap=n_bootstrap, seed=seed)


def heldout_coverage(rows: pd.DataFrame, law: Law, *, per_domain: bool = False, level: float = LEVEL,
                     n_bootstrap: int = N_BOOTSTRAP, n_resample: int = N_RESAMPLE, seed: int = 0,
                     progress: bool = False) -> dict:
    """{check: {held_out, level, covered, n_rows, n_runs, coverage}} on the held-out splits of validate.heldout.

    Each training part is refitted with `n_bootstrap` resamples of trained models (its intervals need them);
    a check that cannot be fitted gives {"error": ...}, one that does not apply {"skipped": ...}.
    """
    from .validate import KFOLD, applicable_splits
    domains = sorted(rows["eval_domain"].unique())
    out = {}
    log_progress(f"{law.name}: {level:.0%} prediction-interval coverage of the held-out checks", progress)
    checks, folds = applicable_splits(rows, out)
    for check, mask, held in checks:
        try:
            train, fit = _fit_part(rows, mask, law, per_domain, domains, n_bootstrap, seed)
            k, n, runs = _covered(fit, train, rows[~mask], level, n_resample, seed)
        except AnalysisError as e:
            out[check] = {"held_out": held, "error": str(e)}
            continue
        out[check] = {"held_out": held, "level": level, "covered": k, "n_rows": n, "n_runs": len(runs),
                      "coverage": k / n if n else None}
    if folds is not None:
        runs = rows["run_id"].unique()
        k_all, n_all, run_all, problems = 0, 0, set(), []
        for train_mask in folds:
            try:
                train, fit = _fit_part(rows, train_mask, law, per_domain, domains, n_bootstrap, seed)
                k, n, r = _covered(fit, train, rows[~train_mask], level, n_resample, seed)
            except AnalysisError as e:
                problems.append(str(e))
                continue
            k_all, n_all, run_all = k_all + k, n_all + n, run_all | r
        held = f"{KFOLD}-fold over {len(runs)} trained models (interpolation)"
        if n_all:
            out["runs_kfold"] = {"held_out": held, "level": level, "covered": k_all, "n_rows": n_all,
                                 "n_runs": len(run_all), "coverage": k_all / n_all}
            if problems:
                out["runs_kfold"]["folds_not_fitted"] = problems
        else:
            out["runs_kfold"] = {"held_out": held, "error": problems[0] if problems else "no fold could be fitted"}
    return out


def coverage_sentence(checks: dict, level: float = LEVEL) -> str:
    """'80% prediction intervals covered k of n held-out runs ...' for the checks that ran."""
    parts = [f"{c['covered']} of {c['n_rows']} held-out points ({c['n_runs']} runs) with {c['held_out']}"
             for c in checks.values() if c.get("n_rows")]
    if not parts:
        return f"no held-out check could be run, so the {level:.0%} prediction intervals are not checked"
    k = sum(c["covered"] for c in checks.values() if c.get("n_rows"))
    n = sum(c["n_rows"] for c in checks.values() if c.get("n_rows"))
    return (f"{level:.0%} prediction intervals covered " + "; ".join(parts)
            + (f" ({k} of {n} in all, {k / n:.0%})" if len(parts) > 1 else f" ({k / n:.0%})"))
