"""The optimal split: the D that minimizes the law's predicted loss for a model size and a budget.

Accounting of a budget T:
  per-path     every expert path costs D + D' = T tokens (the seed is counted in full for each expert)
  shared-seed  one seed shared by K experts: D + K·D' = T (T is then the total over all experts)
With N free, a compute budget C buys T = C / (6N) tokens in that accounting.
The objective is the loss of each domain's expert on its own domain, averaged over domains with weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from .errors import AnalysisError
from .fit import FitResult
from .inputs import LawInputs

ACCOUNTINGS = ("per-path", "shared-seed")
GRID = np.linspace(0.0, 1.0, 1001)  # fixed grid of pretrain fractions, then a bounded 1-D refinement


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


def optimal_fraction(fit: FitResult, budget: Budget, weights: dict, mixture_weights: dict, theta=None):
    """(D*/T, predicted loss at D*, flat?) — flat means the law predicts the same loss for every split."""
    curve = path_loss(fit, budget, GRID, weights, mixture_weights, theta)
    if np.ptp(curve) <= 1e-12 * np.abs(curve).max():
        return 1.0, float(curve[-1]), True
    i = int(np.argmin(curve))
    lo, hi = GRID[max(i - 1, 0)], GRID[min(i + 1, len(GRID) - 1)]
    if hi > lo:
        res = minimize_scalar(lambda f: float(path_loss(fit, budget, np.array([f]), weights, mixture_weights, theta)[0]),
                              bounds=(lo, hi), method="bounded", options={"xatol": 1e-7})
        if res.fun < curve[i]:
            return float(res.x), float(res.fun), False
    return float(GRID[i]), float(curve[i]), False


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


def choose_split(fit: FitResult, n_params: float, budget_tokens: float, *, accounting: str = "per-path",
                 mixture_weights: dict, weighting="equal", batch_tokens: int | None = None) -> dict:
    """The split.json content: D*/T with a bootstrap interval, its loss, and the two reference recipes."""
    k = len(fit.domains)
    check_budget(budget_tokens, batch_tokens, accounting, k)
    if not np.isfinite(n_params) or n_params <= 0:
        raise AnalysisError(f"n_params must be positive, got {n_params!r}")
    weights = domain_weights(fit, mixture_weights, weighting)
    budget = Budget(float(n_params), float(budget_tokens), accounting, k)
    frac, loss, flat = optimal_fraction(fit, budget, weights, mixture_weights)
    full = float(path_loss(fit, budget, np.array([1.0]), weights, mixture_weights)[0])
    recipe = float(path_loss(fit, budget, np.array([0.8]), weights, mixture_weights)[0])
    boot = [optimal_fraction(fit, budget, weights, mixture_weights, th)[0] for th in (fit.boot_theta if fit.boot_theta is not None else [])]
    ci = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if len(boot) >= 2 else [frac, frac]
    d, dp = budget.tokens_of(frac)
    notes = []
    if flat:
        notes.append(f"law {fit.law.name} predicts the same loss for every split of this budget (it is "
                     "split-blind): pretraining only is reported, and any split is as good")
    if len(boot) < 2:
        notes.append("no bootstrap resamples: the interval is the point estimate")
    return {
        "law": fit.law.name,
        "n_params": float(n_params),
        "budget_tokens": float(budget_tokens),
        "accounting": accounting,
        "k_experts": k,
        "domain_weights": weights,
        "pretrain_fraction": frac,
        "pretrain_fraction_ci": ci,
        "pretrain_tokens": float(d),
        "special_tokens": float(dp),
        "predicted_loss": loss,
        "full_pretrain_loss": full,
        "recipe_80_20_loss": recipe,
        "gain_vs_full_pretrain": (full - loss) / full,
        "split_blind": flat,
        "n_bootstrap": len(boot),
        "notes": notes,
    }


def choose_model_size(fit: FitResult, compute_flops: float, n_range, *, accounting="per-path",
                      mixture_weights: dict, weighting="equal", batch_tokens=None, points: int = 121) -> dict:
    """With N free: T = C/(6N) for each N on a log grid; the N (and its split) of lowest predicted loss."""
    if "A" in fit.layout.spec.folded:
        raise AnalysisError("N cannot be chosen: the data have a single model size, so the law's N term was "
                            "folded into E")
    if not np.isfinite(compute_flops) or compute_flops <= 0:
        raise AnalysisError(f"compute budget must be positive FLOPs, got {compute_flops!r}")
    weights = domain_weights(fit, mixture_weights, weighting)
    k = len(fit.domains)
    best = None
    for n in np.geomspace(n_range[0], n_range[1], points):
        tokens = compute_flops / (6.0 * n)
        if batch_tokens and tokens < batch_tokens * (k if accounting == "shared-seed" else 1):
            continue
        frac, loss, _ = optimal_fraction(fit, Budget(n, tokens, accounting, k), weights, mixture_weights)
        if best is None or loss < best[2]:
            best = (n, tokens, loss)
    if best is None:
        raise AnalysisError(f"compute budget of {compute_flops:.3g} FLOPs is smaller than one batch for every "
                            f"model size in [{n_range[0]:.3g}, {n_range[1]:.3g}]")
    out = choose_split(fit, best[0], best[1], accounting=accounting, mixture_weights=mixture_weights,
                       weighting=weighting, batch_tokens=batch_tokens)
    out["compute_flops"] = float(compute_flops)
    return out


def fraction_curve(fit: FitResult, n_params, budgets, *, accounting, mixture_weights, weighting="equal"):
    """(D*/T, bootstrap 2.5%, 97.5%, predicted gain over pretraining only) for each (N, T) pair."""
    weights = domain_weights(fit, mixture_weights, weighting)
    k = len(fit.domains)
    rows = []
    for n, t in zip(np.broadcast_to(n_params, np.shape(budgets)), budgets):
        b = Budget(float(n), float(t), accounting, k)
        frac, loss, _ = optimal_fraction(fit, b, weights, mixture_weights)
        full = float(path_loss(fit, b, np.array([1.0]), weights, mixture_weights)[0])
        boot = [optimal_fraction(fit, b, weights, mixture_weights, th)[0]
                for th in (fit.boot_theta if fit.boot_theta is not None else [])]
        lo, hi = (np.percentile(boot, [2.5, 97.5]) if len(boot) >= 2 else (frac, frac))
        rows.append((frac, float(lo), float(hi), (full - loss) / full))
    return np.array(rows)
