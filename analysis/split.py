"""The optimal split: the D that minimizes the law's predicted loss for a model size and a budget.

Accounting of a budget T:
  per-path     every expert path costs D + D' = T tokens (the seed is counted in full for each expert)
  shared-seed  one seed shared by K experts: D + K·D' = T (T is then the total over all experts)
With N free, a compute budget C buys T = C / (6N) tokens in that accounting.
The objective is the loss of each domain's expert on its own domain, averaged over domains with weights.

Honesty rules of choose_split (given the measured rows):
  - D*/T is searched only inside the pretrain fractions measured at (or nearest to) the requested scale,
    [min, max] of D/T (per-path) or D/C (shared-seed) over the expert paths measured there (pretraining only,
    D' = 0, is fraction 1). An optimum of the law outside that range is reported at the range's edge, with a
    warning saying so and which fractions to run; extrapolate=True searches all of [0, 1] and warns when
    D*/T lies outside the measured range (its bootstrap interval is then over [0, 1] too).
  - the measured runs are grouped by their budget in the accounting (io.budget_of): T = D + D' per path;
    C = D + K·D' for an expert path and C = D + D' for the mixture baseline (one model of C) with a
    shared seed, whose D + D' changes with the fraction at a fixed C.
  - the best point of the *measured* curve is reported beside the fitted one: each expert on its own domain
    and the mixture baseline at the same (N, budget, D) (per path its D' is the expert's, with a shared seed
    K times the expert's), averaged over domains with the fit's weights, and the
    measured gains against pretraining only and against the baseline at the same fraction, next to the
    predicted gains and their bootstrap intervals.
  - a target N or T beyond the fitted range says by what factor, and every predicted loss carries a
    prediction interval (bootstrap parameter sets plus resampled residuals, see intervals.py).
  - the compute of each side (the split, pretraining only, the mixture baseline) is stated in tokens and
    FLOPs (6·N·tokens) in the accounting used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from .errors import AnalysisError
from .fit import FitResult
from .inputs import LawInputs
from .io import budget_of
from .roles import BASELINE, CROSS, OWN, role

ACCOUNTINGS = ("per-path", "shared-seed")
GRID = np.linspace(0.0, 1.0, 1001)  # fixed grid of pretrain fractions, then a bounded 1-D refinement
FULL_RANGE = (0.0, 1.0)
PI_LEVEL = 0.8       # level of the prediction intervals of losses
CI_LEVEL = 0.95      # level of the bootstrap intervals of D*/T and of gains
MC_REDRAWS = 400     # re-draws for the Monte Carlo error of an interval's ends (percentile_mc_error)


@dataclass
class Budget:
    n_params: float
    tokens: float
    accounting: str = "per-path"
    k_experts: int = 1

    def tokens_of(self, fraction):
        """(D, D') for pretrain fraction D/T of the budget."""
        d = np.asarray(fraction, float) * self.tokens
        rest = self.tokens - d
        return d, rest / (self.k_experts if self.accounting == "shared-seed" else 1)


def accounting_tokens(d, dp, accounting: str, k: int):
    """Tokens of one expert path in the accounting: D + D' (per-path) or D + K·D' (shared-seed)."""
    return np.asarray(d, float) + np.asarray(dp, float) * (k if accounting == "shared-seed" else 1)


def accounting_fraction(d, dp, accounting: str, k: int):
    """The pretrain fraction of an expert path in the accounting: D/T (per-path) or D/C (shared-seed)."""
    total = accounting_tokens(d, dp, accounting, k)
    return np.where(total > 0, np.asarray(d, float) / np.where(total > 0, total, 1.0), 1.0)


def domain_weights(fit: FitResult, table_weights: dict, weighting="equal") -> dict:
    """Weights of the domains in the averaged loss: 'equal', 'mixture' (their share) or {domain: w}."""
    doms = [d for d in fit.domains]
    if isinstance(weighting, dict):
        unknown = set(weighting) - set(doms)
        if unknown:
            raise AnalysisError(f"domain weights name unknown domain(s) {sorted(unknown)}; the fit has {doms}")
        w = {d: float(weighting.get(d, 0.0)) for d in doms}
    elif weighting == "mixture":
        w = {d: float(table_weights.get(d, 1.0)) for d in doms}
    elif weighting == "equal":
        w = {d: 1.0 for d in doms}
    else:
        raise AnalysisError(f"unknown domain weighting {weighting!r}: use equal, mixture or d=w,...")
    total = sum(w.values())
    if total <= 0:
        raise AnalysisError("domain weights sum to zero")
    return {d: v / total for d, v in w.items()}


def path_loss(fit: FitResult, budget: Budget, fractions, weights: dict, mixture_weights: dict,
              theta=None) -> np.ndarray:
    """Weighted mean over domains of the own-domain loss of each expert, for each pretrain fraction."""
    d, dp = budget.tokens_of(fractions)
    out = np.zeros(np.shape(d))
    for j, dom in enumerate(fit.domains):
        if weights.get(dom, 0.0) == 0.0:
            continue
        x = LawInputs.expert_path(budget.n_params, d, dp, mixture_weights.get(dom, 1.0), j, fit.domains)
        out = out + weights[dom] * fit.predict(x, theta)
    return out


def optimal_fraction(fit: FitResult, budget: Budget, weights: dict, mixture_weights: dict, theta=None,
                     bounds=FULL_RANGE):
    """(D*/T, predicted loss at D*, flat?) with D*/T searched in `bounds` (default all of [0, 1]).

    flat means the law predicts the same loss for every split (checked over [0, 1]); D*/T is then the
    largest fraction allowed (1, pretraining only, when allowed).
    """
    lo, hi = float(bounds[0]), float(bounds[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise AnalysisError(f"pretrain fraction bounds must satisfy 0 <= lo <= hi <= 1, got {bounds!r}")
    full = (lo, hi) == FULL_RANGE
    whole = path_loss(fit, budget, GRID, weights, mixture_weights, theta)
    if np.ptp(whole) <= 1e-12 * np.abs(whole).max():
        at = float(path_loss(fit, budget, np.array([hi]), weights, mixture_weights, theta)[0])
        return hi, at, True
    if hi - lo <= 1e-12:
        return lo, float(path_loss(fit, budget, np.array([lo]), weights, mixture_weights, theta)[0]), False
    grid = GRID if full else np.linspace(lo, hi, len(GRID))
    curve = whole if full else path_loss(fit, budget, grid, weights, mixture_weights, theta)
    i = int(np.argmin(curve))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    if b > a:
        def at(f):
            return float(path_loss(fit, budget, np.array([f]), weights, mixture_weights, theta)[0])
        res = minimize_scalar(at, bounds=(a, b), method="bounded", options={"xatol": 1e-7})
        if res.fun < curve[i]:
            return float(res.x), float(res.fun), False
    return float(grid[i]), float(curve[i]), False


def check_budget(tokens: float, batch_tokens: int | None, accounting: str, k: int) -> None:
    if not np.isfinite(tokens) or tokens <= 0:
        raise AnalysisError(f"budget must be a positive number of tokens, got {tokens!r}")
    if accounting not in ACCOUNTINGS:
        raise AnalysisError(f"unknown accounting {accounting!r}; choose {' or '.join(ACCOUNTINGS)}")
    if batch_tokens:
        # The smallest trainable unit is one optimizer step; with a shared seed each expert needs one too.
        need = batch_tokens * (k if accounting == "shared-seed" else 1)
        if tokens < need:
            raise AnalysisError(f"budget of {tokens:.4g} tokens is smaller than one batch ({batch_tokens} tokens"
                                + (f" for each of {k} experts" if accounting == "shared-seed" else "") + ")")


# ---- the measured rows ----------------------------------------------------------------------------------

def _key(v) -> np.ndarray:
    """Token counts and sizes rounded to 10 significant digits, to group runs of one grid point."""
    v = np.asarray(v, float)
    return np.array([float(f"{x:.10g}") for x in np.ravel(v)]).reshape(np.shape(v))


def path_rows(rows: pd.DataFrame, domains: list, accounting: str = "per-path", k: int | None = None) -> pd.DataFrame:
    """The measured rows that speak to the split, of the fit's domains: each expert on its own domain
    (role 'own') and the mixture baseline on each domain (role 'baseline'), with rounded keys; t is the
    run's budget in the accounting (io.budget_of: T = D + D', or C = D + K·D' for an expert and D + D' for
    the baseline)."""
    r = rows[rows["eval_domain"].isin(domains)]
    # With only whole-mixture evals (io.select_rows' fallback) the baseline on the mixture is the measured path.
    roles = role(r, baseline_on_mixture=OWN)
    keep = (roles != CROSS).to_numpy()
    r, roles = r[keep], roles[keep]
    if len(r) == 0:
        return pd.DataFrame(columns=["n", "d", "dp", "t", "domain", "role", "loss"])
    return pd.DataFrame({
        "n": _key(r["n_params"]), "d": _key(r["pretrain_tokens"]), "dp": _key(r["special_tokens"]),
        "t": _key(budget_of(r, accounting, k).to_numpy(float)),
        "domain": r["eval_domain"].astype(str).to_numpy(),
        "role": roles.to_numpy(),
        "loss": r["eval_loss"].to_numpy(float)})


def measured_scales(paths: pd.DataFrame, accounting: str, k: int) -> list:
    """One entry per measured (N, budget) (path_rows' t: T, or C with a shared seed): the pretrain fractions
    of its expert paths (D/T or D/C; a run with D' = 0, pretraining only, is fraction 1) and the range of
    their accounting tokens (path_tokens is the budget itself)."""
    out = []
    for (n, t), g in paths.groupby(["n", "t"], sort=True):
        expert = g[(g["role"] == "own") | (g["dp"] == 0)]
        if len(expert) == 0:
            continue  # only mixture baselines continued past a seed: no expert path measured here
        fr = np.unique(np.round(accounting_fraction(expert["d"], expert["dp"], accounting, k), 12))
        tok = accounting_tokens(expert["d"], expert["dp"], accounting, k)
        out.append({"n_params": float(n), "path_tokens": float(t), "fractions": [float(f) for f in fr],
                    "tokens_range": [float(tok.min()), float(tok.max())]})
    return out


def nearest_scale(scales: list, n_params: float, tokens: float, accounting: str) -> dict:
    """The measured scale nearest to (N, T) in log N and log T (T in the accounting; a scale's runs cover a
    range of T in shared-seed accounting, and a T inside it is at distance 0); with `exact` and a sentence."""
    if not scales:
        raise AnalysisError("no expert path in the measured rows: the split cannot be compared with measurements")

    def dist(s):
        lo, hi = s["tokens_range"]
        dt = 0.0 if lo * (1 - 1e-9) <= tokens <= hi * (1 + 1e-9) else min(abs(np.log(tokens / lo)),
                                                                          abs(np.log(tokens / hi)))
        return float(np.hypot(np.log(n_params / s["n_params"]), dt)), dt

    best = min(scales, key=lambda s: (dist(s)[0], -s["n_params"], -s["path_tokens"]))
    d, dt = dist(best)
    exact = d < 1e-9
    out = dict(best, exact=bool(exact), where=None)
    unit = "T" if accounting == "per-path" else "C"
    if accounting == "shared-seed":
        where = f"N = {best['n_params']:.4g}, C = D + K·D' = {best['path_tokens']:.4g}"
    else:
        where = f"N = {best['n_params']:.4g}, D + D' = {best['path_tokens']:.4g}"
    out["where"] = where
    out["statement"] = (f"measured at the requested scale: {where}" if exact else
                        f"nearest measured scale to the requested N = {n_params:.4g}, {unit} = {tokens:.4g}: {where}")
    return out


def _weighted(losses: dict, weights: dict):
    """Weighted mean over domains of {domain: loss}; None (and the missing domains) if a weighted one is missing."""
    missing = [d for d, w in weights.items() if w > 0 and d not in losses]
    if missing:
        return None, missing
    return float(sum(w * losses[d] for d, w in weights.items() if w > 0)), []


def _domain_means(g: pd.DataFrame) -> dict:
    return {str(d): float(v) for d, v in g.groupby("domain")["loss"].mean().items()}


def _gain(reference, loss):
    return None if reference is None or loss is None else float((reference - loss) / reference)


# ---- predictions at measured points --------------------------------------------------------------------

def _point_inputs(fit: FitResult, n, d, dp, weights: dict, mixture_weights: dict, baseline: bool) -> tuple:
    """LawInputs with one row per weighted domain at (N, D, D') (expert on its domain, or the baseline)."""
    from .intervals import concat_inputs
    parts, w = [], []
    for j, dom in enumerate(fit.domains):
        if weights.get(dom, 0.0) == 0.0:
            continue
        parts.append(LawInputs.expert_path(n, d, dp, mixture_weights.get(dom, 1.0), j, fit.domains, baseline=baseline))
        w.append(weights[dom])
    return concat_inputs(parts), np.array(w)


class _Predictor:
    """Weighted predicted losses of points (N, D, D', baseline?) under the fit, its bootstrap sets, and
    prediction draws (one parameter set per draw shared by all points, independent residuals)."""

    def __init__(self, fit, weights, mixture_weights, residuals=None, n_resample=4000, seed=0):
        self.fit, self.weights, self.mix = fit, weights, mixture_weights
        self.residuals, self.n_resample, self.seed = residuals, n_resample, seed
        self.boot = fit.boot_theta if fit.boot_theta is not None and len(fit.boot_theta) >= 2 else None

    def _inputs(self, points):
        from .intervals import concat_inputs
        xs, ws = zip(*(_point_inputs(self.fit, n, d, dp, self.weights, self.mix, b) for n, d, dp, b in points))
        return concat_inputs(list(xs)), ws

    def _reduce(self, values, ws):
        out, i = [], 0
        for w in ws:
            out.append(values[..., i:i + len(w)] @ w)
            i += len(w)
        return np.stack(out, axis=-1)

    def point(self, points) -> np.ndarray:
        x, ws = self._inputs(points)
        return self._reduce(self.fit.predict(x), ws)

    def bootstrap(self, points):
        """(resamples, points) weighted losses under each bootstrap parameter set, or None."""
        if self.boot is None:
            return None
        x, ws = self._inputs(points)
        return self._reduce(np.atleast_2d(self.fit.predict(x, self.boot)), ws)

    def draws(self, points, distance=None):
        """(n_resample, points) draws of the weighted measured loss, or None without residuals; `distance`:
        how far the points lie outside the fitted rows along ln N and ln tokens per parameter (one pair for
        every point: intervals.box_distance), which widens the residuals."""
        if self.residuals is None:
            return None
        from .intervals import prediction_draws
        x, ws = self._inputs(points)
        return self._reduce(prediction_draws(self.fit, x, self.n_resample, residuals=self.residuals,
                                             seed=self.seed, distance=distance), ws)


def _interval(values, level):
    if values is None:
        return None
    lo, hi = np.percentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return [float(lo), float(hi)]


def _inside(value, interval):
    return None if value is None or interval is None else bool(interval[0] <= value <= interval[1])


def measured_split(paths: pd.DataFrame, scale: dict, weights: dict, accounting: str, k: int,
                   predictor: "_Predictor", level: float = PI_LEVEL) -> dict:
    """The measured curve at `scale` and its best point, with the measured and predicted gains."""
    n, t = scale["n_params"], scale["path_tokens"]
    g = paths[(paths["n"] == n) & (paths["t"] == t)]
    own = {key: _domain_means(h) for key, h in g[g["role"] == "own"].groupby(["d", "dp"])}
    # The baseline at the same (N, budget, D): its D' is the expert's per path, K times it with a shared seed.
    base = {d: _domain_means(h) for d, h in g[(g["role"] == "baseline") & (g["dp"] > 0)].groupby("d")}
    pre_rows = g[g["dp"] == 0]
    pre_src = pre_rows[pre_rows["role"] == "baseline"]
    pre_domains = _domain_means(pre_src)
    for dom, v in _domain_means(pre_rows[pre_rows["role"] == "own"]).items():
        pre_domains.setdefault(dom, v)  # the seed itself (an expert with D' = 0) where no baseline was evaluated
    pre_loss, pre_missing = _weighted(pre_domains, weights) if pre_domains else (None, [d for d in weights])
    curve = []
    keys = sorted({key for key in own if key[1] > 0} | ({(t, 0.0)} if pre_domains else set()),
                  key=lambda kd: accounting_fraction(kd[0], kd[1], accounting, k))
    for d, dp in keys:
        if dp == 0:
            expert, missing = pre_loss, pre_missing
            baseline, b_missing = pre_loss, pre_missing
        else:
            expert, missing = _weighted(own[(d, dp)], weights)
            baseline, b_missing = _weighted(base[d], weights) if d in base else (None, None)
        tok = float(accounting_tokens(d, dp, accounting, k))  # = t, the baseline's budget too
        curve.append({"pretrain_fraction": float(accounting_fraction(d, dp, accounting, k)),
                      "path_fraction": float(d / (d + dp)), "pretrain_tokens": float(d), "special_tokens": float(dp),
                      "compute_tokens": tok, "compute_flops": 6.0 * n * tok,
                      "baseline_special_tokens": float(dp * (k if accounting == "shared-seed" else 1)),
                      "baseline_compute_tokens": tok, "baseline_compute_flops": 6.0 * n * tok,
                      "expert_loss": expert, "baseline_loss": baseline,
                      "gain_vs_baseline": _gain(baseline, expert),
                      **({"missing_domains": missing} if missing else {}),
                      **({"baseline_missing_domains": b_missing} if b_missing else {})})
    out = {"scale": scale, "accounting": accounting, "domain_weights": weights, "curve": curve,
           "pretrain_only_loss": pre_loss, "notes": []}
    done = [c for c in curve if c["expert_loss"] is not None]
    if not done:
        out["notes"].append("no measured fraction has every weighted domain: no measured best point")
        out.update(best_fraction=None, best_loss=None)
        return out
    best = min(done, key=lambda c: c["expert_loss"])
    out.update(best_fraction=best["pretrain_fraction"], best_path_fraction=best["path_fraction"],
               best_loss=best["expert_loss"], best_pretrain_tokens=best["pretrain_tokens"],
               best_special_tokens=best["special_tokens"], best_compute_tokens=best["compute_tokens"],
               best_compute_flops=best["compute_flops"],
               best_is_edge=bool(len(done) > 1 and best in (done[0], done[-1])),
               gain_vs_pretrain_only=_gain(pre_loss, best["expert_loss"]),
               baseline_loss_at_best=best["baseline_loss"],
               gain_vs_baseline_same_fraction=_gain(best["baseline_loss"], best["expert_loss"]))
    if pre_loss is None:
        out["notes"].append("pretraining only (D' = 0) was not measured at this scale: no measured gain over it")
    if best["baseline_loss"] is None:
        out["notes"].append(f"the mixture baseline was not measured at the best fraction "
                            f"({best['pretrain_fraction']:.2f}): no measured gain over it at the same fraction")
    if out["best_is_edge"]:
        out["notes"].append(f"the measured best fraction {best['pretrain_fraction']:.2f} is the "
                            f"{'lowest' if best is done[0] else 'highest'} measured one: the measured optimum may "
                            "lie beyond it")

    # The law at the same points: its gains, their bootstrap intervals, and whether the measurement agrees.
    split_pt = (n, best["pretrain_tokens"], best["special_tokens"], False)
    points = [split_pt, (n, t, 0.0, True)]
    has_base = best["baseline_loss"] is not None and best["special_tokens"] > 0
    if has_base:
        points.append((n, best["pretrain_tokens"], best["baseline_special_tokens"], True))
    pred = predictor.point(points)
    boot = predictor.bootstrap(points)
    draws = predictor.draws(points)
    out["predicted_loss_at_best"] = float(pred[0])
    out["predicted_loss_at_best_pi"] = _interval(None if draws is None else draws[:, 0], level)
    comparisons = [("pretrain_only", 1)] if pre_loss is not None else []
    if has_base:
        comparisons.append(("baseline_same_fraction", 2))
    for name, j in comparisons:
        measured = out["gain_vs_pretrain_only" if name == "pretrain_only" else "gain_vs_baseline_same_fraction"]
        g_pred = float(1 - pred[0] / pred[j])
        ci = _interval(None if boot is None else 1 - boot[:, 0] / boot[:, j], CI_LEVEL)
        pi = _interval(None if draws is None else 1 - draws[:, 0] / draws[:, j], level)
        out[f"predicted_gain_vs_{name}"] = g_pred
        out[f"predicted_gain_vs_{name}_ci"] = ci
        out[f"predicted_gain_vs_{name}_pi"] = pi
        out[f"agrees_{name}"] = _inside(measured, ci)
        out[f"agrees_{name}_within_noise"] = _inside(measured, pi)
    out["agrees"] = out.get("agrees_pretrain_only")
    if boot is None and pre_loss is not None:
        out["notes"].append("no bootstrap resamples: the predicted gain has no interval, so agreement is not judged")
    out["statement"] = _measured_statement(out)
    return out


def _measured_statement(m: dict) -> str:
    s = (f"measured best split at {m['scale']['where']}"
         + ("" if m['scale']['exact'] else " (the nearest measured scale)")
         + f": D/{'T' if m['accounting'] == 'per-path' else 'C'} = {m['best_fraction']:.2f}, loss {m['best_loss']:.4g}")
    if m.get("gain_vs_pretrain_only") is not None:
        s += f", {m['gain_vs_pretrain_only']:.2%} better than pretraining only (measured)"
        if "predicted_gain_vs_pretrain_only" in m:
            ci = m["predicted_gain_vs_pretrain_only_ci"]
            s += f" against {m['predicted_gain_vs_pretrain_only']:.2%} predicted"
            if ci is not None:
                s += (f" ({CI_LEVEL:.0%} bootstrap interval {ci[0]:.2%} to {ci[1]:.2%}: "
                      + ("agrees" if m["agrees_pretrain_only"] else "disagrees") + ")")
    if m.get("gain_vs_baseline_same_fraction") is not None:
        s += f"; {m['gain_vs_baseline_same_fraction']:.2%} better than the mixture baseline at the same fraction"
    return s


# ---- extrapolation in N and T, compute ---------------------------------------------------------------------

def _factor(target: float, lo: float, hi: float) -> dict:
    """Where `target` lies against the fitted [lo, hi]: factor above the max, below the min, or inside."""
    out = {"target": float(target), "fitted": [float(lo), float(hi)], "factor_vs_max": float(target / hi)}
    if target > hi * (1 + 1e-9):
        out.update(side="above", factor=float(target / hi))
    elif target < lo * (1 - 1e-9):
        out.update(side="below", factor=float(lo / target), factor_below_min=float(lo / target))
    else:
        out.update(side="inside", factor=1.0)
    return out


def extrapolation(rows: pd.DataFrame, fit: FitResult, n_params: float, tokens: float, accounting: str, k: int,
                  d: float, dp: float) -> dict:
    """How far (N, T) and the recommended path lie outside the fitted ranges."""
    r = rows[rows["eval_domain"].isin(fit.domains)]
    nn = r["n_params"].to_numpy(float)
    rd, rdp = r["pretrain_tokens"].to_numpy(float), r["special_tokens"].to_numpy(float)
    base = (role(r) == BASELINE).to_numpy()
    path = rd + rdp
    acct = np.where(base, path, accounting_tokens(rd, rdp, accounting, k))  # a baseline is one model
    out = {"n": _factor(n_params, nn.min(), nn.max()),
           "budget": _factor(tokens, acct.min(), acct.max()),
           "path_tokens": _factor(d + dp, path.min(), path.max())}
    out["n_factor"] = out["n"]["factor_vs_max"]
    out["t_factor"] = out["budget"]["factor_vs_max"]
    out["n_factor_below_min"] = out["n"].get("factor_below_min")
    out["t_factor_below_min"] = out["budget"].get("factor_below_min")
    names = {"n": "N", "budget": "T" if accounting == "per-path" else "C",
             "path_tokens": "the recommended path's D + D'"}
    parts = []
    for key in ("n", "budget") + (("path_tokens",) if accounting == "shared-seed" else ()):
        e = out[key]
        what = names[key]
        if e["side"] == "above":
            parts.append(f"{what} = {e['target']:.4g} is {e['factor']:.3g}x the largest fitted "
                         f"({e['fitted'][1]:.4g})")
        elif e["side"] == "below":
            parts.append(f"{what} = {e['target']:.4g} is {e['factor']:.3g}x below the smallest fitted "
                         f"({e['fitted'][0]:.4g})")
    out["beyond"] = bool(parts)
    out["statement"] = ("; ".join(parts) + ": the predicted loss is an extrapolation of the law") if parts else \
        "N and T are inside the fitted ranges (interpolation)"
    return out


def compute_accounting(n_params: float, tokens: float, accounting: str, k: int, d: float, dp: float) -> dict:
    """Training compute of the recommended split, pretraining only and the mixture baseline, in the accounting."""
    fl = lambda tok: 6.0 * n_params * float(tok)
    shared_total = d + k * dp
    if accounting == "per-path":
        split = {"models": k, "tokens_per_model": float(tokens), "seed_tokens": float(d), "expert_tokens": float(dp),
                 "tokens": float(k * tokens), "flops": fl(k * tokens),
                 "tokens_if_seed_trained_once": float(shared_total), "flops_if_seed_trained_once": fl(shared_total)}
        statement = (f"per-path accounting: each of the K = {k} experts trains T = D + D' = {tokens:.4g} tokens "
                     f"(seed D = {d:.4g} counted in every path, D' = {dp:.4g} on its domain): K·T = {k * tokens:.4g} "
                     f"tokens, {fl(k * tokens):.3g} FLOPs in all ({shared_total:.4g} tokens, {fl(shared_total):.3g} "
                     f"FLOPs if the seed is trained once and shared); pretraining only trains one model of "
                     f"T = {tokens:.4g} tokens ({fl(tokens):.3g} FLOPs), and so does the mixture baseline (the seed "
                     f"continued on the mixture for D'). The comparison is per path: the same T for every model, "
                     f"K = {k} times the total compute of pretraining only")
        baseline_what = "the seed continued on the mixture for D' tokens: one model of T tokens"
    else:
        split = {"models": k, "tokens_per_model": float(d + dp), "seed_tokens": float(d), "expert_tokens": float(dp),
                 "tokens": float(shared_total), "flops": fl(shared_total)}
        statement = (f"shared-seed accounting: seed D = {d:.4g} + K = {k} experts × D' = {dp:.4g} = C = "
                     f"{shared_total:.4g} tokens ({fl(shared_total):.3g} FLOPs); pretraining only: one model of "
                     f"C = {tokens:.4g} tokens ({fl(tokens):.3g} FLOPs); the mixture baseline: the seed continued on "
                     f"the mixture for K·D' = {k * dp:.4g} tokens, C = {tokens:.4g} in all. Both sides use the same "
                     f"total compute")
        baseline_what = "the seed continued on the mixture for K·D' tokens: one model of C tokens"
    return {"accounting": accounting, "k_experts": k, "flops_per_token": 6.0 * n_params,
            "flops_formula": "6 · N · tokens", "statement": statement, "split": split,
            "pretrain_only": {"models": 1, "tokens": float(tokens), "flops": fl(tokens)},
            "baseline": {"models": 1, "tokens": float(tokens), "flops": fl(tokens), "what": baseline_what}}


# ---- the recommendation --------------------------------------------------------------------------------------

def _search_warnings(frac, f_free, lo, hi, extrapolate, flat, measured_known, axis="T"):
    """(warnings, at_edge, outside) of the search in [lo, hi] against the law's optimum f_free over [0, 1]."""
    tol = 1e-6
    if flat or not measured_known:
        return [], None, False
    outside = f_free < lo - tol or f_free > hi + tol
    if extrapolate:
        if frac < lo - tol or frac > hi + tol:
            return [f"D*/{axis} = {frac:.2f} is outside the measured fractions {lo:.2f}–{hi:.2f}: extrapolated "
                    "(the interval is over all fractions [0, 1])"], None, True
        return [], None, False
    if outside:
        side = "lower" if f_free < lo else "upper"
        edge = lo if side == "lower" else hi
        return [f"D*/{axis} = {frac:.2f} is at the {side} edge of the measured fractions {lo:.2f}–{hi:.2f}: the "
                f"law's optimum over all fractions is at {f_free:.2f}, outside the measured range, so the true optimum "
                f"may lie beyond it: run fractions {'below' if side == 'lower' else 'above'} {edge:.2f} to bracket it "
                "(or pass extrapolate to search all fractions)"], side, True
    return [], None, False


def percentile_mc_error(values, q, n: int = MC_REDRAWS, seed: int = 0) -> list:
    """Monte Carlo standard error of np.percentile(values, q): the spread of the same percentiles over re-draws
    of the values with replacement. An interval's endpoints are percentiles of a finite number of bootstrap
    resamples; when the resampled D* pile up at an edge with a thin tail, 50 of them place the 2.5th percentile
    anywhere in that tail (benchmarks/README.md §9: the next loop's widths moved by up to 0.26 between 400 and
    1,000 resamples of the same fits)."""
    v = np.asarray(values, float)
    draws = np.random.default_rng(seed).choice(v, size=(n, len(v)), replace=True)
    return [float(x) for x in np.percentile(draws, q, axis=1).std(axis=1)]


def choose_split(fit: FitResult, n_params: float, budget_tokens: float, *, accounting: str = "per-path",
                 mixture_weights: dict, weighting="equal", batch_tokens: int | None = None,
                 rows: pd.DataFrame | None = None, extrapolate: bool = False, level: float = PI_LEVEL,
                 n_resample: int = 4000, seed: int = 0, prediction_intervals: bool = True) -> dict:
    """The split.json content: D*/T with a bootstrap interval, its loss, and the reference recipes.

    rows: the rows the law was fitted on. With them, D*/T is searched only within the measured fractions at the
    nearest measured scale (unless extrapolate), and the measured best point, the extrapolation factors and the
    prediction intervals are reported. Without them (older callers) the search is over [0, 1] with a warning.
    prediction_intervals=False leaves out the loss intervals (their rollout refits), e.g. when only D* is needed.
    """
    k = len(fit.domains)
    check_budget(budget_tokens, batch_tokens, accounting, k)
    if not np.isfinite(n_params) or n_params <= 0:
        raise AnalysisError(f"n_params must be positive, got {n_params!r}")
    weights = domain_weights(fit, mixture_weights, weighting)
    budget = Budget(float(n_params), float(budget_tokens), accounting, k)
    axis = "T" if accounting == "per-path" else "C"
    notes, warnings_ = [], []

    paths = path_rows(rows, fit.domains, accounting, k) if rows is not None else None
    scale = None
    if paths is not None and len(paths):
        scales = measured_scales(paths, accounting, k)
        if scales:
            scale = nearest_scale(scales, float(n_params), float(budget_tokens), accounting)
    measured_range = (scale["fractions"][0], scale["fractions"][-1]) if scale else None
    search = FULL_RANGE if (extrapolate or measured_range is None) else measured_range

    f_free, loss_free, flat = optimal_fraction(fit, budget, weights, mixture_weights)
    if search == FULL_RANGE:
        frac, loss = f_free, loss_free
    else:
        frac, loss, _ = optimal_fraction(fit, budget, weights, mixture_weights, bounds=search)
    full = float(path_loss(fit, budget, np.array([1.0]), weights, mixture_weights)[0])
    recipe = float(path_loss(fit, budget, np.array([0.8]), weights, mixture_weights)[0])
    thetas = fit.boot_theta if fit.boot_theta is not None else []
    boot = [optimal_fraction(fit, budget, weights, mixture_weights, th, bounds=search)[0] for th in thetas]
    q = [(1 - CI_LEVEL) / 2 * 100, (1 + CI_LEVEL) / 2 * 100]
    ci = [float(v) for v in np.percentile(boot, q)] if len(boot) >= 2 else [frac, frac]
    ci_mc = percentile_mc_error(boot, q) if len(boot) >= 2 else None
    d, dp = (float(v) for v in budget.tokens_of(frac))
    gain = (full - loss) / full
    if len(boot) >= 2:
        b_split = np.array([path_loss(fit, budget, np.array([frac]), weights, mixture_weights, th)[0] for th in thetas])
        b_full = np.array([path_loss(fit, budget, np.array([1.0]), weights, mixture_weights, th)[0] for th in thetas])
        gain_ci = [float(v) for v in np.percentile(1 - b_split / b_full, q)]
    else:
        gain_ci = None

    if flat:
        notes.append(f"law {fit.law.name} predicts the same loss for every split of this budget (it is "
                     "split-blind): " + ("pretraining only is reported" if frac == 1.0 else
                                         f"the highest measured fraction ({frac:.2f}) is reported")
                     + ", and any split is as good")
    if len(boot) < 2:
        notes.append("no bootstrap resamples: the interval is the point estimate")
    if measured_range is None:
        warnings_.append("no measured rows were given (or none is an expert path of the fit's domains): D*/"
                         f"{axis} was searched over all fractions [0, 1], and whether it was measured is unknown")
    w, at_edge, outside = _search_warnings(frac, f_free, *(measured_range or FULL_RANGE), extrapolate, flat,
                                           measured_range is not None, axis)
    warnings_ += w
    if at_edge and len(boot) >= 2:
        notes.append(f"the {CI_LEVEL:.0%} interval of D*/{axis} is truncated at the edge of the measured fractions")

    out = {
        "law": fit.law.name,
        "n_params": float(n_params),
        "budget_tokens": float(budget_tokens),
        "accounting": accounting,
        "k_experts": k,
        "domain_weights": weights,
        "pretrain_fraction": frac,
        "pretrain_fraction_ci": ci,
        "pretrain_fraction_ci_mc_error": ci_mc,
        "pretrain_tokens": d,
        "special_tokens": dp,
        "predicted_loss": loss,
        "full_pretrain_loss": full,
        "recipe_80_20_loss": recipe,
        "gain_vs_full_pretrain": gain,
        "gain_vs_full_pretrain_ci": gain_ci,
        "split_blind": flat,
        "n_bootstrap": len(boot),
        "search": {
            "extrapolate": bool(extrapolate),
            "range": [float(search[0]), float(search[1])],
            "measured_fractions": None if measured_range is None else [float(v) for v in measured_range],
            "measured_at": scale,
            "unconstrained_fraction": f_free,
            "unconstrained_loss": loss_free,
            "at_edge": at_edge,
            "outside_measured": bool(outside),
        },
        "compute": compute_accounting(float(n_params), float(budget_tokens), accounting, k, d, dp),
        "warnings": warnings_,
        "notes": notes,
    }
    baseline_dp = dp * (k if accounting == "shared-seed" else 1)  # the baseline continues the seed on the mixture
    out["baseline_loss"] = float(sum(
        weights[dom] * fit.predict(LawInputs.expert_path(n_params, d, baseline_dp, mixture_weights.get(dom, 1.0), j,
                                                         fit.domains, baseline=True))[0]
        for j, dom in enumerate(fit.domains) if weights.get(dom, 0.0) > 0))

    pool = None
    if rows is not None and prediction_intervals:
        from .intervals import residual_pool
        try:
            pool = residual_pool(fit, rows)
        except AnalysisError as e:
            notes.append(f"no prediction intervals: {e}")
    predictor = _Predictor(fit, weights, mixture_weights, pool, n_resample, seed)
    # Pretraining only is one model of T (per-path) or C (shared-seed) tokens: budget_tokens either way.
    distance = np.zeros((1, 2)) if pool is None else pool.distance(float(n_params), float(budget_tokens))
    draws = predictor.draws([(n_params, d, dp, False), (n_params, float(budget_tokens), 0.0, True)], distance)
    out["predicted_loss_interval"] = _interval(None if draws is None else draws[:, 0], level)
    out["full_pretrain_loss_interval"] = _interval(None if draws is None else draws[:, 1], level)
    out["prediction_interval_level"] = level
    out["prediction_interval_method"] = (
        f"bootstrap parameter sets over trained models times exp(a resampled log residual: "
        f"{None if pool is None else pool.source}), one residual per domain's expert"
        + (", with a random sign, widened for a target {:.2f} (ln N) and {:.2f} (ln tokens per parameter) outside "
           "the fitted rows".format(*distance[0]) if distance.any() else ", with a random sign")
        + "; quantiles of the weighted mean over domains"
        + ("" if predictor.boot is not None else " (no bootstrap: residuals only)"))

    if rows is not None and rows["eval_domain"].isin(fit.domains).any():
        ex = extrapolation(rows, fit, float(n_params), float(budget_tokens), accounting, k, d, dp)
        pi = out["predicted_loss_interval"]
        ex["prediction_interval"] = pi
        ex["prediction_interval_level"] = level
        out["extrapolation"] = ex
        if ex["beyond"]:
            warnings_.append(ex["statement"] + (f"; {level:.0%} prediction interval of the loss "
                                                f"{pi[0]:.4g}–{pi[1]:.4g}" if pi else ""))
    else:
        out["extrapolation"] = None

    if scale is not None:
        out["measured"] = measured_split(paths, scale, weights, accounting, k, predictor, level)
        # The fitted optimum at the measured scale, beside the measured best point there.
        if out["measured"].get("best_fraction") is not None:
            t_scale = scale["path_tokens"] if accounting == "per-path" else out["measured"]["best_compute_tokens"]
            b_scale = Budget(scale["n_params"], t_scale, accounting, k)
            f_s, l_s, _ = optimal_fraction(fit, b_scale, weights, mixture_weights,
                                           bounds=FULL_RANGE if extrapolate else measured_range)
            out["measured"]["fitted_at_scale"] = {"budget_tokens": float(t_scale), "pretrain_fraction": f_s,
                                                  "predicted_loss": l_s}
        notes += out["measured"]["notes"]
    else:
        out["measured"] = None
    out["notes"] = warnings_ + notes  # report.py renders the notes: the warnings first, loud
    return out


def _search_scales(fit: FitResult, rows, accounting: str, k: int, extrapolate: bool):
    """The measured scales whose fractions bound a search, or None (no rows, or extrapolating)."""
    if rows is None or extrapolate:
        return None
    paths = path_rows(rows, fit.domains, accounting, k)
    return measured_scales(paths, accounting, k) if len(paths) else None


def _search_bounds(scales, n: float, tokens: float, accounting: str) -> tuple:
    """The measured fractions of the scale nearest (n, tokens), or all of [0, 1] without scales."""
    if not scales:
        return FULL_RANGE
    s = nearest_scale(scales, n, tokens, accounting)
    return s["fractions"][0], s["fractions"][-1]


def choose_model_size(fit: FitResult, compute_flops: float, n_range, *, accounting="per-path",
                      mixture_weights: dict, weighting="equal", batch_tokens=None, points: int = 121,
                      rows: pd.DataFrame | None = None, extrapolate: bool = False) -> dict:
    """With N free: T = C/(6N) for each N on a log grid; the N (and its split) of lowest predicted loss.

    With rows, each N's split is searched within the measured fractions of the nearest measured scale
    (unless extrapolate), as in choose_split.
    """
    if "A" in fit.layout.spec.folded:
        raise AnalysisError("N cannot be chosen: the data have a single model size, so the law's N term was "
                            "folded into E")
    if not np.isfinite(compute_flops) or compute_flops <= 0:
        raise AnalysisError(f"compute budget must be positive FLOPs, got {compute_flops!r}")
    weights = domain_weights(fit, mixture_weights, weighting)
    k = len(fit.domains)
    scales = _search_scales(fit, rows, accounting, k, extrapolate)
    best = None
    for n in np.geomspace(n_range[0], n_range[1], points):
        tokens = compute_flops / (6.0 * n)
        if batch_tokens and tokens < batch_tokens * (k if accounting == "shared-seed" else 1):
            continue
        bounds = _search_bounds(scales, n, tokens, accounting)
        frac, loss, _ = optimal_fraction(fit, Budget(n, tokens, accounting, k), weights, mixture_weights,
                                         bounds=bounds)
        if best is None or loss < best[2]:
            best = (n, tokens, loss)
    if best is None:
        raise AnalysisError(f"compute budget of {compute_flops:.3g} FLOPs is smaller than one batch for every "
                            f"model size in [{n_range[0]:.3g}, {n_range[1]:.3g}]")
    out = choose_split(fit, best[0], best[1], accounting=accounting, mixture_weights=mixture_weights,
                       weighting=weighting, batch_tokens=batch_tokens, rows=rows, extrapolate=extrapolate)
    out["compute_flops"] = float(compute_flops)
    return out


def fraction_curve(fit: FitResult, n_params, budgets, *, accounting, mixture_weights, weighting="equal",
                   rows: pd.DataFrame | None = None, extrapolate: bool = True):
    """(D*/T, bootstrap 2.5%, 97.5%, predicted gain over pretraining only) for each (N, T) pair.

    By default (and always without rows) the search is over [0, 1]: the curve shows what the law says, also
    beyond the data. With rows and extrapolate=False, each point is searched within the measured fractions
    of the nearest measured scale, as choose_split does.
    """
    weights = domain_weights(fit, mixture_weights, weighting)
    k = len(fit.domains)
    scales = _search_scales(fit, rows, accounting, k, extrapolate)
    rows_out = []
    for n, t in zip(np.broadcast_to(n_params, np.shape(budgets)), budgets):
        b = Budget(float(n), float(t), accounting, k)
        bounds = _search_bounds(scales, float(n), float(t), accounting)
        frac, loss, _ = optimal_fraction(fit, b, weights, mixture_weights, bounds=bounds)
        full = float(path_loss(fit, b, np.array([1.0]), weights, mixture_weights)[0])
        boot = [optimal_fraction(fit, b, weights, mixture_weights, th, bounds=bounds)[0]
                for th in (fit.boot_theta if fit.boot_theta is not None else [])]
        lo, hi = (np.percentile(boot, [2.5, 97.5]) if len(boot) >= 2 else (frac, frac))
        rows_out.append((frac, float(lo), float(hi), (full - loss) / full))
    return np.array(rows_out)
