"""`python -m analysis next`: the runs that most shrink the interval of the split decision, per FLOP.

The decision is D*/T (or D*/C) at the user's target (N, budget); its interval comes from the bootstrap of the
current fit (split.choose_split), searched over all fractions [0, 1] (the proposed runs are meant to measure
beyond the fractions measured so far, so the interval is not cut at their edge). What one more run would do to it is estimated by linearizing the law around
the fit (Epoch's and OLMo's ladders fit by least squares, so the same local picture holds):

  - the fit's parameter covariance is Sigma = s2 (J'J)^-1, J the Jacobian of the log loss of the fitted rows
    with respect to the free parameters (weighted like the fit), s2 the variance of the weighted residuals;
  - the decision's sensitivity g = d(D*/T)/d theta, by central differences of the split optimum (on an edge of
    [0, 1], where the argmin does not move, of the optimum smoothed over the fractions the fit cannot tell from
    it at its noise level, see `decision`);
  - a run adds its rows (an expert: its own domain; the mixture baseline and pretraining only: every domain)
    to J, and the variance g' Sigma g falls by g' Sigma Jc' (s2 I + Jc Sigma Jc')^-1 Jc Sigma g (Woodbury).

Candidates are grid points of the harness (model sizes of the ladder when the records came from it, else the
measured sizes and doublings up to the target; budgets at the measured tokens per parameter and the target's;
pretrain fractions in eighths and the measured ones; each domain's expert and the baseline). A run's cost is
the training it needs beyond what the records show exists: a seed already trained at (N, D) costs nothing,
a longer seed only the tokens past the longest one of its size, the expert phase always. Runs are chosen
greedily by variance reduction per FLOP, each pick making its seed free for the next, until the compute budget
or the number of runs is spent. The expected interval after them keeps the current interval's centre and
shrinks each side by sqrt(variance after / variance now).

Read-only: it reads records and writes only DIR/next.json and DIR/sweeps/<name>_next.yaml.
"""
from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import AnalysisError
from .fit import FitResult, Problem
from .inputs import LawInputs
from .io import budget_of
from .roles import BASELINE, MIXTURE, role
from .io import domain_weights as mixture_weights_of
from .split import GRID, Budget, FULL_RANGE, choose_split, domain_weights, optimal_fraction, path_loss

MAX_TARGET_FACTOR = 100.0  # a target beyond 100x the largest fitted N is no prediction of this grid
FRACTIONS = tuple(np.arange(1, 9) / 8)  # eighths, 1/8 .. 1 (1 = pretraining only)
FD_STEP = 1e-3


@dataclass(frozen=True)
class Candidate:
    """One run to train: a model of `n_params` (the ladder's `model` when known), a seed of `pretrain_tokens`
    and `special_tokens` of `expert_domain` (the mixture baseline when 'mixture'; pretraining only when it
    is the baseline at fraction 1)."""
    n_params: float
    pretrain_tokens: float
    special_tokens: float
    expert_domain: str
    budget_tokens: float
    pretrain_fraction: float
    model: str | None = None

    @property
    def pretrain_only(self) -> bool:
        return self.expert_domain == MIXTURE and self.pretrain_fraction >= 1.0


# ---- what the records already have ------------------------------------------------------------------------

def trained_seeds(table: pd.DataFrame) -> dict:
    """{N: sorted seed token counts the records show trained}: every expert's and baseline's D, and the stable
    phase (D minus its decay) of each pretraining-only model."""
    d = table["pretrain_tokens"].to_numpy(float)
    if "cooldown_tokens" in table.columns:
        only = (table["special_tokens"].to_numpy(float) == 0)
        d = d - np.where(only, pd.to_numeric(table["cooldown_tokens"], errors="coerce").fillna(0).to_numpy(float), 0)
    out = {}
    for n, v in pd.Series(d).groupby(table["n_params"].to_numpy(float)):
        out[float(n)] = sorted({float(x) for x in v})
    return out


def seed_cost_tokens(seeds: dict, n: float, d: float) -> float:
    """Tokens to train a seed of D at size N: from the longest trained seed at or below D (its checkpoint)."""
    below = [v for v in seeds.get(float(n), []) if v <= d + 0.5]
    return max(0.0, d - (max(below) if below else 0.0))


def run_cost_tokens(c: Candidate, seeds: dict, cooldown: float) -> float:
    """Training tokens of a candidate beyond what exists (evaluation is not counted)."""
    if c.pretrain_only:
        # one annealed model of the whole budget: its stable phase from the trajectory, then the decay
        return seed_cost_tokens(seeds, c.n_params, c.budget_tokens * (1 - cooldown)) + c.budget_tokens * cooldown
    return seed_cost_tokens(seeds, c.n_params, c.pretrain_tokens) + c.special_tokens


def seed_of(c: Candidate, cooldown: float) -> float:
    """The seed token count a candidate trains (and leaves in the store)."""
    return c.budget_tokens * (1 - cooldown) if c.pretrain_only else c.pretrain_tokens


# ---- the candidate grid ---------------------------------------------------------------------------------

def ladder_sizes(table: pd.DataFrame, target_n: float) -> list:
    """[(N, model name or None)]: the harness's ladder models of the records' depth up to the target when the
    records name their models, else the measured sizes and doublings of the largest up to the target."""
    measured = sorted({float(v) for v in table["n_params"]})
    models = {}
    if "model" in table.columns and table["model"].notna().all():
        for name, n in table.groupby("model")["n_params"].first().items():
            models[float(n)] = str(name)
        models.update(_conf_models(set(models.values())))
        return sorted((n, m) for n, m in models.items() if measured[0] <= n <= target_n * 1.001)
    sizes = set(measured)
    n = measured[-1]
    while n * 2 <= target_n * 1.001:
        n *= 2
        sizes.add(n)
    sizes.add(float(target_n))
    return sorted((n, None) for n in sizes if n <= target_n * 1.001)


def _conf_models(names: set) -> dict:
    """{N: name} of conf/model entries with the depth of the named models (the ladder's family)."""
    conf = Path(__file__).resolve().parents[1] / "conf" / "model"
    if not conf.is_dir():
        return {}
    from omegaconf import OmegaConf
    from splitsweep.model import ModelSpec  # pure arithmetic on the config; torch comes with the module
    specs = {p.stem: OmegaConf.load(p) for p in conf.glob("*.yaml")}
    depths = {int(specs[n].n_layers) for n in names if n in specs}
    return {float(ModelSpec.from_config(c).non_embedding_params()): name for name, c in specs.items()
            if int(c.n_layers) in depths}


def _round(v: float, step: float) -> float:
    return max(step, round(v / step) * step) if step else v


def _clusters(values, ratio: float = 1.15) -> list:
    """Values within `ratio` of their neighbour are one value (their median): budgets rounded to whole steps
    state one tokens-per-parameter a little differently at each N."""
    out, group = [], []
    for v in sorted(float(x) for x in values if x > 0):
        if group and v > group[-1] * ratio:
            out.append(float(np.median(group)))
            group = []
        group.append(v)
    return out + ([float(np.median(group))] if group else [])


def candidates(table: pd.DataFrame, domains: list, target_n: float, target_budget: float, accounting: str,
               k: int, batch_tokens: int | None) -> list:
    """Every candidate grid point that the records do not already hold. An expert's special_tokens is its own
    D'; the baseline's the whole continuation on the mixture (K·D' under shared-seed), as the records store."""
    n_col = table["n_params"].to_numpy(float)
    d_col = table["pretrain_tokens"].to_numpy(float)
    budget = budget_of(table, accounting, k).to_numpy(float)
    per_expert = k if accounting == "shared-seed" else 1
    tpp = _clusters(list(budget / n_col) + [target_budget / target_n])
    fractions = sorted(set(FRACTIONS) | {round(float(f), 4) for f in d_col / budget})
    done = {(n, e, round(f, 3), round(b / n, 1))
            for n, e, f, b in zip(n_col, table["expert_domain"], d_col / budget, budget)}
    step = float(batch_tokens or 0)
    out = []
    measured = {float(n): set(b) for n, b in pd.Series(budget).groupby(n_col)}
    for n, model in ladder_sizes(table, target_n):
        # a measured size keeps its own budgets (they are on its step grid); a new size takes the measured
        # tokens per parameter
        budgets = measured.get(n) or {_round(t * n, step * per_expert) for t in tpp}
        budgets = {float(b) for b in budgets}
        if abs(n - target_n) <= 1e-3 * target_n:
            budgets.add(float(target_budget))
        for c in sorted(budgets):
            for f in fractions:
                d = _round(f * c, step) if f < 1 else c
                for dom in list(domains) + [MIXTURE]:
                    if f >= 1 and dom != MIXTURE:
                        continue
                    dp = 0.0 if f >= 1 else (c - d) / (per_expert if dom != MIXTURE else 1)
                    if f < 1 and dp < max(step, 1.0):
                        continue
                    if (n, dom, round(f, 3), round(c / n, 1)) in done:
                        continue
                    out.append(Candidate(n, d, dp, dom, c, float(f), model))
    return out


# ---- the linear picture of the fit ------------------------------------------------------------------------

def _jacobian(fit: FitResult, x: LawInputs, scale: np.ndarray) -> np.ndarray:
    problem = Problem(fit.layout, x, np.ones(len(x)), scale=scale)
    return problem.residuals_jac(np.atleast_2d(fit.theta))[1][0]


def information(fit: FitResult) -> tuple[np.ndarray, float, float]:
    """(J of the fitted rows, residual variance s2, the median row weight) of the fit's own data."""
    problem = getattr(fit, "problem", None)
    if problem is None:
        raise AnalysisError("next needs the fit's data (a FitResult from fit_law)")
    r, jac = problem.residuals_jac(np.atleast_2d(fit.theta))
    r, jac = r[0], jac[0]
    dof = max(len(r) - fit.layout.size, 1)
    return jac, float(np.sum(r ** 2) / dof), float(np.median(problem.scale))


def candidate_rows(fit: FitResult, c: Candidate, mixture_weights: dict) -> LawInputs:
    """The rows a candidate adds to the fit: an expert on its own domain, the baseline on every domain."""
    doms = list(fit.domains)
    if c.expert_domain != MIXTURE:
        return LawInputs.expert_path(c.n_params, c.pretrain_tokens, c.special_tokens,
                                     mixture_weights.get(c.expert_domain, 1.0), doms.index(c.expert_domain), doms)
    from .intervals import concat_inputs
    return concat_inputs([LawInputs.expert_path(c.n_params, c.pretrain_tokens, c.special_tokens,
                                                mixture_weights.get(dom, 1.0), j, doms, baseline=True)
                          for j, dom in enumerate(doms)])


def decision(fit: FitResult, budget: Budget, weights: dict, mixture_weights: dict, objective: str,
             tau: float | None = None):
    """theta -> the decision's value: D*/T (objective 'fraction') or log of the loss at D* ('loss').

    With tau, D*/T is smoothed: the mean of the fractions weighted by exp(-(log L(f) - log L(D*)) / tau), tau the
    fit's noise in log loss, so the fractions the fit cannot tell from the optimum share the weight. Used when
    D* sits on an edge of [0, 1], where the argmin itself does not move with the parameters."""
    def g(theta):
        if objective == "loss":
            return math.log(optimal_fraction(fit, budget, weights, mixture_weights, theta=theta,
                                             bounds=FULL_RANGE)[1])
        if tau is None:
            return optimal_fraction(fit, budget, weights, mixture_weights, theta=theta, bounds=FULL_RANGE)[0]
        log_l = np.log(path_loss(fit, budget, GRID, weights, mixture_weights, theta))
        w = np.exp(-(log_l - log_l.min()) / tau)
        return float(np.sum(GRID * w) / np.sum(w))
    return g


def sensitivity(g, theta: np.ndarray) -> np.ndarray:
    grad = np.zeros(len(theta))
    for i in range(len(theta)):
        h = FD_STEP * max(1.0, abs(theta[i]))
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (g(up) - g(down)) / (2 * h)
    return grad


def _reduction(sigma: np.ndarray, sg: np.ndarray, jc: np.ndarray, s2: float) -> float:
    """The fall of g' Sigma g when rows jc are added (sg = Sigma g)."""
    a = jc @ sg
    if len(jc) == 1:
        return float(a[0] ** 2 / (s2 + jc[0] @ sigma @ jc[0]))
    m = s2 * np.eye(len(jc)) + jc @ sigma @ jc.T
    return float(a @ np.linalg.solve(m, a))


def _update(sigma: np.ndarray, jc: np.ndarray, s2: float) -> np.ndarray:
    sj = sigma @ jc.T
    m = s2 * np.eye(len(jc)) + jc @ sj
    return sigma - sj @ np.linalg.solve(m, sj.T)


@dataclass
class Pick:
    run: Candidate
    cost_tokens: float
    cost_flops: float
    variance_after: float


def choose_runs(sigma, grad, s2, cands, jacs, seeds: dict, cooldown: float, budget_flops=None,
                max_runs=None) -> list:
    """Picks in order: under a compute budget, the candidate of the largest variance reduction per FLOP that
    still fits it; under a number of runs alone, the largest reduction per run. Each pick's seed is trained
    afterwards, so the runs sharing it cost only their own phase.

    Vectorized: the candidates' Jacobians are stacked by their number of rows (an expert: one row, the
    baseline: one per domain), each round scores all of them at once (_reductions), and a pick re-prices only
    the candidates of its own size (the only ones whose seeds it changes). Ties go to the earlier candidate."""
    per_flop = budget_flops is not None
    seeds = {n: list(v) for n, v in seeds.items()}
    n_of = np.array([float(c.n_params) for c in cands])
    costs = np.array([run_cost_tokens(c, seeds, cooldown) for c in cands], float)
    groups = {}
    for i, jc in enumerate(jacs):
        groups.setdefault(len(jc), []).append(i)
    stacks = [(np.array(ix), np.stack([np.asarray(jacs[i], float) for i in ix])) for ix in groups.values()]
    left = np.ones(len(cands), bool)
    picks, spent = [], 0.0
    while left.any() and (max_runs is None or len(picks) < max_runs):
        flops = 6.0 * n_of * costs
        fits = left & (flops > 0)
        if budget_flops is not None:
            fits &= spent + flops <= budget_flops * (1 + 1e-9)
        if not fits.any():
            break
        score = np.full(len(cands), -np.inf)
        red = _reductions(sigma, sigma @ grad, stacks, fits, s2)
        score[fits] = red[fits] / (flops[fits] if per_flop else 1.0)
        i = int(np.argmax(score))
        left[i] = False
        sigma = _update(sigma, jacs[i], s2)
        spent += flops[i]
        n = float(cands[i].n_params)
        seeds.setdefault(n, []).append(seed_of(cands[i], cooldown))
        picks.append(Pick(cands[i], float(costs[i]), float(flops[i]), float(grad @ sigma @ grad)))
        same = np.flatnonzero(left & (n_of == n))
        costs[same] = [run_cost_tokens(cands[j], seeds, cooldown) for j in same]
    return picks


def _reductions(sigma: np.ndarray, sg: np.ndarray, stacks: list, which: np.ndarray, s2: float) -> np.ndarray:
    """_reduction of every candidate marked in `which` (the others are left at 0): stacks are
    (candidate indices, their Jacobians (candidates, rows, params)) of one row count each."""
    out = np.zeros(len(which))
    for ix, jc in stacks:
        sel = which[ix]
        if not sel.any():
            continue
        jc = jc[sel]
        a = jc @ sg                                        # (b, rows)
        m = np.einsum("brp,pq,bsq->brs", jc, sigma, jc, optimize=True)
        if jc.shape[1] == 1:
            out[ix[sel]] = a[:, 0] ** 2 / (s2 + m[:, 0, 0])
        else:
            m = m + s2 * np.eye(jc.shape[1])
            out[ix[sel]] = np.einsum("br,br->b", a, np.linalg.solve(m, a[:, :, None])[:, :, 0])
    return out


# ---- the verb ---------------------------------------------------------------------------------------------

def check_request(rows: pd.DataFrame, target_n, target_budget, compute_budget=None, max_runs=None,
                  objective: str = "fraction") -> list:
    """Refuse a request before any fit, naming the bad value; returns the warnings of an acceptable one."""
    if objective not in ("fraction", "loss"):
        raise AnalysisError(f"unknown objective {objective!r}: use fraction or loss")
    if compute_budget is None and max_runs is None:
        raise AnalysisError("next needs --compute-budget FLOPS or --max-runs K")
    if compute_budget is not None and not compute_budget > 0:
        raise AnalysisError(f"--compute-budget must be positive, got {compute_budget!r}")
    if max_runs is not None and max_runs < 1:
        raise AnalysisError(f"--max-runs must be at least 1, got {max_runs!r}")
    for name, v in (("--target-n-params", target_n), ("--target-budget-tokens", target_budget)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise AnalysisError(f"{name} must be a positive number, got {v!r}")
    n_max = float(rows["n_params"].max())
    factor = target_n / n_max
    if factor > MAX_TARGET_FACTOR:
        raise AnalysisError(f"--target-n-params {target_n:.4g} is {factor:.0f}x the largest fitted N "
                            f"({n_max:.4g}); beyond {MAX_TARGET_FACTOR:.0f}x no run of this grid is evidence about "
                            f"it: measure larger sizes first (at most {MAX_TARGET_FACTOR * n_max:.4g})")
    warnings_ = []
    if factor > 1:
        warnings_.append(f"the target N = {target_n:.4g} is {factor:.3g}x the largest fitted N ({n_max:.4g}): "
                         "the interval at the target is an extrapolation")
    return warnings_


def propose(fit: FitResult, table: pd.DataFrame, rows: pd.DataFrame, *, target_n: float, target_budget: float,
            accounting: str, batch_tokens: int | None = None, compute_budget: float | None = None,
            max_runs: int | None = None, objective: str = "fraction", weighting="equal", seed: int = 0) -> dict:
    """The next.json content (see the module docstring). `table`: every recorded row (for the seeds that
    exist); `rows`: the rows `fit` was fitted on."""
    warnings_ = check_request(rows, target_n, target_budget, compute_budget, max_runs, objective)
    k = len(fit.domains)
    mix = mixture_weights_of(rows)
    split = choose_split(fit, target_n, target_budget, accounting=accounting, mixture_weights=mix,
                         weighting=weighting, batch_tokens=batch_tokens, rows=rows, seed=seed,
                         prediction_intervals=objective == "loss", extrapolate=True)
    weights = domain_weights(fit, mix, weighting)
    budget = Budget(float(target_n), float(target_budget), accounting, k)
    jac, s2, row_scale = information(fit)
    theta = np.asarray(fit.theta, float).ravel()
    grad = sensitivity(decision(fit, budget, weights, mix, objective), theta)
    smoothed = objective == "fraction" and not np.any(grad)
    if smoothed:  # D* on an edge: the argmin has no gradient, its smoothed value does
        grad = sensitivity(decision(fit, budget, weights, mix, objective, tau=max(math.sqrt(s2), 1e-4)), theta)
    info = jac.T @ jac
    ridge = 1e-9 * max(np.trace(info) / len(theta), 1e-12)
    sigma0 = s2 * np.linalg.pinv(info + ridge * np.eye(len(theta)))
    var0 = float(grad @ sigma0 @ grad)

    cands = candidates(table, list(fit.domains), target_n, target_budget, accounting, k, batch_tokens)
    if not cands:
        raise AnalysisError("no candidate grid point is left that the records do not already hold")
    jacs = []
    for c in cands:
        x = candidate_rows(fit, c, mix)
        jacs.append(_jacobian(fit, x, np.full(len(x), row_scale)))
    seeds = trained_seeds(table)
    cooldown = _cooldown_fraction(table)
    cheapest = min(6.0 * c.n_params * run_cost_tokens(c, seeds, cooldown) for c in cands)
    if compute_budget is not None and compute_budget < cheapest:
        raise AnalysisError(f"--compute-budget {compute_budget:.4g} FLOPs buys no candidate: the cheapest run "
                            f"costs {cheapest:.4g} FLOPs (6·N·tokens beyond the trained seeds)")
    picks = choose_runs(sigma0, grad, s2, cands, jacs, seeds, cooldown, compute_budget, max_runs)
    var1 = picks[-1].variance_after if picks else var0
    ratio = math.sqrt(var1 / var0) if var0 > 0 else 1.0
    if objective == "fraction":
        centre, (lo, hi) = split["pretrain_fraction"], split["pretrain_fraction_ci"]
    else:
        centre = split["predicted_loss"]
        lo, hi = split.get("predicted_loss_interval") or (centre, centre)
    bootstrapped = fit.boot_theta is not None and len(fit.boot_theta) >= 2
    if hi - lo <= 0 and var0 > 0 and not bootstrapped:  # no bootstrap: the linearized interval itself
        half = 1.96 * math.sqrt(var0) * (1 if objective == "fraction" else centre)
        lo, hi = centre - half, centre + half
    # A bootstrap whose every resample puts D* at the same point keeps its zero width: a linearized width in
    # its place would measure rounds of the same study with two rulers (benchmarks/README.md §9).
    if objective == "fraction":
        lo, hi = max(0.0, lo), min(1.0, hi)
    mc = split.get("pretrain_fraction_ci_mc_error") if objective == "fraction" else None
    if mc and max(mc) > max(0.01, 0.1 * (hi - lo)):
        warnings_.append(f"the interval's ends are percentiles of {len(fit.boot_theta)} bootstrap resamples and "
                         f"move by ±{max(mc):.3f} (Monte Carlo standard error) from one set of resamples to the "
                         f"next: compare rounds with --n-bootstrap 1000 or more")
    if bootstrapped and hi - lo <= 0 and var0 > 0:
        warnings_.append(f"every bootstrap resample puts the decision at {centre:.4g}: its interval has zero width "
                         f"here, while the linearized one has a standard deviation of "
                         f"{math.sqrt(var0) * (1 if objective == 'fraction' else centre):.3g}; the runs are "
                         "ranked by the linearized variance")
    expected = [centre - (centre - lo) * ratio, centre + (hi - centre) * ratio]
    if var0 <= 0:
        warnings_.append("the decision does not move with any fitted parameter at the target (D* on an edge of "
                         "[0, 1], or a split-blind law): no run can narrow its interval in the linear picture")
    return {
        "target": {"n_params": float(target_n), "budget_tokens": float(target_budget), "accounting": accounting,
                   "k_experts": k, "objective": objective},
        "law": fit.law.name,
        "current": {"value": centre, "interval": [float(lo), float(hi)],
                    "searched": "all fractions [0, 1]: the runs proposed are meant to reach beyond the measured ones",
                    "pretrain_fraction": split["pretrain_fraction"],
                    "pretrain_fraction_ci": split["pretrain_fraction_ci"],
                    "interval_mc_error": mc},
        "expected_interval": [float(v) for v in expected],
        "width_ratio": ratio,
        "cost_flops": float(sum(p.cost_flops for p in picks)),
        "cost_tokens": float(sum(p.cost_tokens for p in picks)),
        "compute_budget": compute_budget,
        "max_runs": max_runs,
        "n_candidates": len(cands),
        "runs": [dict(asdict(p.run), cost_tokens=p.cost_tokens, cost_flops=p.cost_flops,
                      expected_width_ratio=math.sqrt(p.variance_after / var0) if var0 > 0 else 1.0)
                 for p in picks],
        "cost_model": ("6·N FLOPs per training token beyond what the records show trained: a seed of D costs the "
                       "tokens past the longest trained seed at or below D of its size, the expert phase always "
                       f"(the baseline K·D' under shared-seed), pretraining only its stable phase plus a "
                       f"{cooldown:.0%} decay; evaluation is not counted"),
        "method": ("linearized expected variance reduction (Woodbury) of the decision per FLOP, greedy"
                   + ("; D* is on an edge of [0, 1], so its sensitivity is that of D* smoothed over the fractions "
                      "within the fit's noise of the optimum" if smoothed else "")),
        "warnings": warnings_ + list(split.get("warnings", [])),
    }


def _cooldown_fraction(table: pd.DataFrame) -> float:
    """The decay share of a pretraining-only model, from the rows' cooldown_tokens (0.2 without them)."""
    if "cooldown_tokens" in table.columns:
        pt = table[(role(table) == BASELINE) & (table["special_tokens"] == 0)]
        v = pd.to_numeric(pt.get("cooldown_tokens"), errors="coerce") / pt["pretrain_tokens"]
        v = v[np.isfinite(v) & (v > 0)]
        if len(v):
            return float(np.median(v))
    return 0.2


# ---- the sweep file ---------------------------------------------------------------------------------------

def sweep_file(result: dict, base_sweep: str | None, sweep_name: str | None) -> str:
    """A sweep that runs exactly the proposed points (hydra/sweeper=points) on top of the base sweep, into the
    records' own sweep (`sweep_name`)."""
    lines = ["# @package _global_",
             f"# Proposed by `python -m analysis next` for N = {result['target']['n_params']:.4g}, budget "
             f"{result['target']['budget_tokens']:.4g} ({result['target']['accounting']}):",
             f"# {len(result['runs'])} runs, {result['cost_flops']:.3g} FLOPs; expected interval "
             f"{result['expected_interval'][0]:.3g}–{result['expected_interval'][1]:.3g} "
             f"(now {result['current']['interval'][0]:.3g}–{result['current']['interval'][1]:.3g}).",
             "defaults:"]
    if base_sweep:
        lines.append(f"  - {base_sweep}")
    lines += ["  - override /hydra/sweeper: points", "  - _self_", ""]
    if sweep_name:
        lines.append(f"sweep_name: {sweep_name}   # the new rows join the sweep's table; its seeds are reused")
    lines += ["hydra:", "  sweeper:", "    points:"]
    for run in result["runs"]:
        point = []
        if run.get("model"):
            point.append(f"model={run['model']}")
        point += ["split.tokens_per_param=null", f"split.budget_tokens={int(round(run['budget_tokens']))}",
                  f"split.pretrain_fraction={run['pretrain_fraction']:.10g}", f"split.expert_domain={run['expert_domain']}"]
        lines.append("      - " + json.dumps(point))
    return "\n".join(lines) + "\n"


def command(sweeps_dir: Path, name: str, task_overrides: list) -> str:
    """The shell command that runs the sweep file: its search path, then the first launch's own overrides."""
    parts = ["python", "-m", "splitsweep", "-m", f"sweeps={name}",
             f"hydra.searchpath=[file://{sweeps_dir.resolve().parent}]", *task_overrides]
    return " ".join(shlex.quote(p) for p in parts)


POINT_KEYS = ("model", "split.tokens_per_param", "split.budget_tokens", "split.pretrain_fraction",
              "split.expert_domain", "split.pretrain_tokens", "split.special_tokens")


def base_sweep(results) -> tuple[str | None, list, list]:
    """(the sweeps=<name> config the records' sweep was launched with, that launch's other overrides, the ones
    left out), read from the sweep directory's first launch (launches.jsonl; later ones may be earlier
    proposals' sweep files); (None, [], []) for foreign records.

    The points set the model and the split, so the launch's overrides of those go; so does any other grid axis
    (a sweep over values: the points are single runs), which is said."""
    path = Path(results)
    from splitsweep.status import launches  # the sweep's own reader of its manifest
    from hydra.core.override_parser.overrides_parser import OverridesParser
    parser = OverridesParser.create()
    for launch in launches(path if path.is_dir() else path.parent):
        argv = [a for a in launch.get("argv", [])[1:] if a not in ("-m", "--multirun")]
        if not argv:
            continue
        base, keep, dropped = None, [], []
        for a in argv:
            o = parser.parse_override(a)
            key = o.get_key_element().lstrip("+~")
            if key == "sweeps":
                base = o.value()
            elif key in POINT_KEYS or key.startswith("hydra.searchpath"):
                continue
            elif o.is_sweep_override():
                dropped.append(a)
            else:
                keep.append(a)
        return base, keep, dropped
    return None, [], []


def write_next(fit: FitResult, table: pd.DataFrame, rows: pd.DataFrame, args) -> dict:
    """`python -m analysis next`: next.json and the sweep file in args.out; returns next.json's content."""
    from . import atomic
    from .report import sweep_accounting
    from .io import batch_tokens_of
    sweep = sweep_accounting(table, args.accounting)
    batch = batch_tokens_of(table, args.batch_tokens)
    result = propose(fit, table, rows, target_n=args.target_n_params, target_budget=args.target_budget_tokens,
                     accounting=sweep["accounting"], batch_tokens=batch, compute_budget=args.compute_budget,
                     max_runs=args.max_runs, objective=args.objective, weighting=args.weights, seed=args.seed)
    base, overrides, dropped = base_sweep(args.results)
    if dropped:
        result["warnings"].append(f"the sweep's launch swept {', '.join(dropped)}: the proposed points run at the "
                                  "configured value of each (add it to the command to choose one)")
    recorded = str(table["sweep"].iloc[0]) if "sweep" in table.columns and table["sweep"].nunique() == 1 else None
    name = f"{args.name or recorded or base or 'sweep'}_next"
    sweeps_dir = Path(args.out) / "sweeps"
    path = atomic.write_text(sweeps_dir / f"{name}.yaml", sweep_file(result, base, recorded))
    result["sweep_file"] = str(path)
    result["command"] = command(sweeps_dir, name, overrides)
    result["accounting_source"] = sweep["source"]
    atomic.write_json(Path(args.out) / "next.json", result)
    return result
