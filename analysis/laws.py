"""The registry of candidate laws L(N, D, D').

Every law has the shape  L = E + sum_k C_k * S_k^(-x_k)  (a constant plus power-law terms), where each
term's "size" S_k is a token count or the model size, possibly built with extra parameters (eta, k, ...).
We fit in log space like Hoffmann et al. (2022) and Epoch (Besiroglu et al. 2024):

    log L = logsumexp(e, c_1 - x_1 log S_1, c_2 - x_2 log S_2, ...),   e = log E, c_k = log C_k

which keeps every coefficient positive, makes the residual log L_obs - log L scale-free, and gives
an analytic Jacobian (softmax weights times each term's derivative) that the fitter uses.

A term whose size is the same for every fitted row (one model size, or one budget for the split-blind
law) cannot be told apart from E: it is folded into E and its parameters are not fitted (`specialize`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product
from typing import Callable

import numpy as np

from .inputs import LawInputs


@dataclass(frozen=True)
class Param:
    name: str              # natural name (fit.json uses it): E, A, alpha, ...
    log: bool              # fitted as log(value): positive coefficients
    bounds: tuple          # in fitted space (log for coefficients)
    grid: tuple            # start values in fitted space
    per_domain: bool = False  # a coefficient that may get one value per domain (see Layout)

    @property
    def fitted_name(self) -> str:
        return f"log_{self.name}" if self.log else self.name


@dataclass(frozen=True)
class Term:
    """C * S^(-x): `size` returns log S (rows) and d(log S)/d(extra param) for its extra params."""
    coef: str
    expo: str
    size: Callable  # (vals: dict name -> array, x: LawInputs) -> (log_size, {param: dlog_size})
    extra: tuple = ()  # parameters other than coef/expo the size depends on
    label: str = ""


def log_sum_exp(parts: list) -> tuple[np.ndarray, np.ndarray]:
    """log(sum_k exp(parts[k])) (broadcast), and each part's share of the sum (its softmax weight)."""
    shape = np.broadcast_shapes(*(np.shape(p) for p in parts))
    stack = np.stack([np.broadcast_to(p, shape) for p in parts])
    top = stack.max(axis=0)
    w = np.exp(stack - top)
    total = w.sum(axis=0)
    return top + np.log(total), w / total


@dataclass
class Law:
    name: str
    formula: str
    why: str
    params: list
    terms: list
    split_aware: bool = True  # False: the law cannot distinguish D from D' (no optimal split)
    fixed_when_single_n: dict = field(default_factory=dict)  # params absorbed elsewhere when N is constant

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    @property
    def names(self) -> list:
        return [p.name for p in self.params]

    def log_loss(self, vals: dict, x: LawInputs, active: tuple | None = None, grad: bool = True):
        """log L per (start, row), and d log L / d(fitted param) per (start, row) if grad.

        vals: fitted-space value of each parameter, arrays broadcastable to (starts, rows).
        active: indices of the terms kept (the others are folded into E).
        """
        terms = [t for i, t in enumerate(self.terms) if active is None or i in active]
        e = vals["E"]
        parts, derivs = [e], []
        for t in terms:
            log_s, dlog_s = t.size(vals, x)
            parts.append(vals[t.coef] - vals[t.expo] * log_s)
            derivs.append((t, log_s, dlog_s))
        log_l, w = log_sum_exp(parts)
        if not grad:
            return log_l, None
        grads = {"E": w[0]}
        for k, (t, log_s, dlog_s) in enumerate(derivs, start=1):
            grads[t.coef] = grads.get(t.coef, 0) + w[k]
            grads[t.expo] = grads.get(t.expo, 0) - w[k] * log_s
            for q, d in dlog_s.items():
                grads[q] = grads.get(q, 0) - w[k] * vals[t.expo] * d
        return log_l, grads

    def start_grid(self, names: list) -> np.ndarray:
        """Cartesian product of the grids of `names` (fitted space), shape (starts, len(names))."""
        return np.array(list(product(*(self.param(n).grid for n in names))), dtype=float)


@dataclass
class LawSpec:
    """A law specialized to a data set: which terms are identifiable, which params are fixed."""
    active: tuple
    fixed: dict          # name -> fitted-space value, not fitted
    folded: list         # names of params whose term was folded into E
    notes: list


def specialize(law: Law, x: LawInputs) -> LawSpec:
    if isinstance(law, InteractionLaw):
        return _specialize_interaction(law, x)
    if isinstance(law, LogBilinearLaw):
        return _specialize_log_bilinear(law, x)
    rng_vals = [{p.name: np.float64(np.mean(p.bounds) if np.all(np.isfinite(p.bounds)) else p.grid[0])
                 for p in law.params},
                {p.name: np.float64(p.grid[-1]) for p in law.params}]
    fixed, notes, active = {}, [], []
    single_n = np.ptp(np.log(x.n_params)) < 1e-12
    if single_n:
        for name, value in law.fixed_when_single_n.items():
            fixed[name] = value
            notes.append(f"{law.name}: one model size N in the data, so {name} is fixed at {value} "
                         f"(its effect is absorbed by the other coefficients)")
    for i, t in enumerate(law.terms):
        sizes = []
        for v in rng_vals:
            v = {**v, **{k: np.float64(val) for k, val in fixed.items()}}
            sizes.append(np.ravel(t.size(v, x)[0]))
        if all(np.ptp(s) < 1e-9 for s in sizes):
            notes.append(f"{law.name}: {t.label or t.coef} is the same for every fitted row (one value of its "
                         f"size), so {t.coef}·(...)^-{t.expo} is folded into E: {t.coef} and {t.expo} not fitted")
        else:
            active.append(i)
    used = {"E"}
    for i in active:
        t = law.terms[i]
        used |= {t.coef, t.expo, *t.extra}
    folded = [p.name for p in law.params if p.name not in used and p.name not in fixed]
    for name in folded:
        fixed[name] = law.param(name).grid[0]  # any value: the parameter no longer enters the law
    return LawSpec(active=tuple(active), fixed=fixed, folded=folded, notes=notes)


def _specialize_interaction(law: Law, x: LawInputs) -> LawSpec:
    """Nothing folds in the interaction law: N and T_gen must both vary, or it is not identified."""
    from .errors import AnalysisError
    for label, size in (("model size N", x.n_params), ("budget", x.total_tokens)):
        if np.ptp(np.log(size)) < 1e-12:
            raise AnalysisError(f"law {law.name!r} needs more than one {label} in the data (size and tokens "
                                "interact in it, so neither can be folded into E)")
    return LawSpec(active=tuple(range(len(law.terms))), fixed={}, folded=[], notes=[])


def _specialize_log_bilinear(law: Law, x: LawInputs) -> LawSpec:
    """Nothing folds (there is no E to fold into): the tokens must vary; one N fixes alpha, kappa and mu at 0."""
    from .errors import AnalysisError
    if np.ptp(np.log(np.maximum(x.total_tokens, 1.0))) < 1e-12:
        raise AnalysisError(f"law {law.name!r} needs more than one budget D + D' in the data")
    fixed, notes = {}, []
    if np.ptp(np.log(x.n_params)) < 1e-12:
        fixed = dict(law.fixed_when_single_n)
        notes.append(f"{law.name}: one model size N in the data, so alpha, kappa and mu are fixed at 0 (A absorbs N)")
    return LawSpec(active=tuple(range(len(law.terms))), fixed=fixed, folded=[], notes=notes)


# ---- sizes --------------------------------------------------------------------------------------

def _size_n(vals, x):
    return np.log(x.n_params), {}


def _size_total(vals, x):
    return np.log(x.total_tokens), {}


def _size_domain(vals, x):
    return np.log(x.domain_tokens), {}


def _size_general(vals, x):
    """T_gen = D + eta*D' for an expert (a specialization token is worth eta of a mixture token), D + D' baseline."""
    eta = vals["eta"]
    expert_special = np.where(x.is_baseline, 0.0, x.special)
    raw = x.pretrain + np.where(x.is_baseline, x.special, 0.0) + eta * expert_special
    t_gen = np.maximum(raw, 1.0)
    return np.log(t_gen), {"eta": np.where(raw >= 1.0, expert_special / t_gen, 0.0)}


def _size_effective(vals, x):
    """D_eff = T_dom + D_T, D_T = exp(k) * G^rho * N^nu: domain data transferred from G mixture tokens."""
    g = x.mixture_tokens
    has_g = g > 0
    log_g = np.log(np.where(has_g, g, 1.0))
    log_dt = vals["k"] + vals["rho"] * log_g + vals["nu"] * np.log(x.n_params)
    log_dt = np.where(has_g, log_dt, -np.inf)
    log_dom = np.log(x.domain_tokens)
    log_eff = np.logaddexp(log_dom, log_dt)
    share = np.exp(log_dt - log_eff)  # d log D_eff / d log D_T
    return log_eff, {"k": share, "rho": share * log_g, "nu": share * np.log(x.n_params)}


# ---- the registry -------------------------------------------------------------------------------

_COEF = (-30.0, 60.0)   # log-coefficient bounds: wide enough for Hoffmann's grid (0..25) and Chinchilla-scale fits
_EXPO = (0.0, 4.0)
_E = (-10.0, 4.0)       # E = exp(e) <= 55 nats

CHINCHILLA = Law(
    name="chinchilla",
    formula="L = E + A·N^-alpha + B·(D + D')^-beta",
    why="Hoffmann et al. (2022): loss falls as a power law in model size and in tokens. Split-blind: it "
        "cannot tell a mixture token from a specialization token, so every split of a budget predicts the "
        "same loss. It is the null model the split-aware laws must beat.",
    params=[
        Param("E", True, _E, tuple(np.arange(-1, 1.5, 0.5)), per_domain=True),
        Param("A", True, _COEF, tuple(np.arange(0, 30, 5.0)), per_domain=True),
        Param("B", True, _COEF, tuple(np.arange(0, 30, 5.0)), per_domain=True),
        Param("alpha", False, _EXPO, tuple(np.arange(0, 2.5, 0.5))),
        Param("beta", False, _EXPO, tuple(np.arange(0, 2.5, 0.5))),
    ],
    terms=[Term("A", "alpha", _size_n, label="N"), Term("B", "beta", _size_total, label="D + D'")],
    split_aware=False,
)

TWO_SOURCE = Law(
    name="two_source",
    formula="L = E + A·N^-alpha + B·T_gen^-beta + C·T_dom^-gamma;  T_gen = D + eta·D' (expert) or D + D' "
            "(baseline), T_dom = p·D + D' (own expert), p·(D + D') (baseline), p·D (other expert)",
    why="General and in-domain tokens contribute separately: mixture tokens buy general skill, the evaluated "
        "domain's tokens buy domain skill, and a specialization token counts only eta of a mixture token "
        "toward general skill. Experts and the baseline share one law, and for a fixed budget it has an "
        "interior optimal split.",
    params=[
        Param("E", True, _E, (-1.0, 0.0, 1.0), per_domain=True),
        Param("A", True, _COEF, (0.0, 8.0, 16.0), per_domain=True),
        Param("alpha", False, _EXPO, (0.25, 0.75)),
        Param("B", True, _COEF, (0.0, 8.0, 16.0), per_domain=True),
        Param("beta", False, _EXPO, (0.25, 0.75)),
        Param("C", True, _COEF, (0.0, 8.0, 16.0), per_domain=True),
        Param("gamma", False, _EXPO, (0.25, 0.75)),
        Param("eta", False, (0.0, 1.0), (0.2, 0.8)),
    ],
    terms=[Term("A", "alpha", _size_n, label="N"),
           Term("B", "beta", _size_general, extra=("eta",), label="T_gen"),
           Term("C", "gamma", _size_domain, label="T_dom")],
)

def _size_mixture(vals, x):
    """G = mixture tokens seen: D for an expert, D + D' for the baseline."""
    return np.log(np.maximum(x.mixture_tokens, 1.0)), {}


def _size_domain_late(vals, x):
    """T_dom = p·D + lam·D' for an own expert (a domain token of the expert phase, late and focused, is worth
    lam of one met in the mixture), p·(D + D') for the baseline, p·D for another domain's expert."""
    lam = vals["lam"]
    own = np.where(x.is_own, x.special, 0.0)
    raw = x.weight * x.pretrain + np.where(x.is_baseline, x.weight * x.special, 0.0) + lam * own
    t_dom = np.maximum(raw, 1.0)
    return np.log(t_dom), {"lam": np.where(raw >= 1.0, own / t_dom, 0.0)}


ADDITIVE = Law(
    name="additive",
    formula="L = E + A·N^-alpha + B·G^-beta + C·T_dom^-gamma;  G = mixture tokens seen (D for an expert, D + D' "
            "for the baseline), T_dom = p·D + lam·D' (own expert), p·(D + D') (baseline), p·D (other expert)",
    why="D-CPT-style (Que et al. 2024): separate, additive power laws in the mixture tokens and in the "
        "domain's own tokens, with per-domain coefficients. A domain token of the expert phase counts lam times "
        "one met in the mixture (lam = 1: tokens are tokens). Under a shared seed with natural mixture weights "
        "every split gives an expert the same number of its domain's tokens, so without lam only the mixture "
        "term would decide the split; with lam > 1 the split trades the mixture term against the domain term.",
    params=[
        Param("E", True, _E, (-1.0, 0.0, 1.0), per_domain=True),
        Param("A", True, _COEF, (0.0, 8.0, 16.0), per_domain=True),
        Param("alpha", False, _EXPO, (0.25, 0.75)),
        Param("B", True, _COEF, (0.0, 8.0, 16.0), per_domain=True),
        Param("beta", False, _EXPO, (0.25, 0.75)),
        Param("C", True, _COEF, (0.0, 8.0, 16.0), per_domain=True),
        Param("gamma", False, _EXPO, (0.25, 0.75)),
        Param("lam", False, (0.0, 50.0), (1.0, 4.0)),
    ],
    terms=[Term("A", "alpha", _size_n, label="N"),
           Term("B", "beta", _size_mixture, label="G"),
           Term("C", "gamma", _size_domain_late, extra=("lam",), label="T_dom")],
)

TRANSFER = Law(
    name="transfer",
    formula="L = E + A·N^-alpha + B·D_eff^-beta;  D_eff = T_dom + k·G^rho·N^nu, G = mixture tokens seen "
            "(D for an expert, D + D' for the baseline), T_dom as in two_source",
    why="Hernandez et al. (2021), 'effective data transferred': pretraining on the mixture is worth an "
        "amount D_T = k·G^rho·N^nu of the domain's own data, with diminishing returns (rho < 1) and a "
        "capacity dependence through N^nu: a larger model transfers more (nu > 0), or a small model cannot "
        "hold every domain at once. The optimal split then depends on N: "
        "D*/T grows with N when nu > 0.",
    params=[
        Param("E", True, _E, (-1.0, 0.0, 1.0), per_domain=True),
        Param("A", True, _COEF, (0.0, 8.0, 16.0), per_domain=True),
        Param("alpha", False, _EXPO, (0.25, 0.75)),
        Param("B", True, _COEF, (0.0, 8.0, 16.0), per_domain=True),
        Param("beta", False, _EXPO, (0.25, 0.75)),
        Param("k", True, (-40.0, 40.0), (-8.0, 0.0, 8.0)),
        Param("rho", False, (0.0, 1.5), (0.3, 0.8)),
        Param("nu", False, (-2.0, 2.0), (0.0, 0.5)),
    ],
    terms=[Term("A", "alpha", _size_n, label="N"),
           Term("B", "beta", _size_effective, extra=("k", "rho", "nu"), label="D_eff")],
    fixed_when_single_n={"nu": 0.0},
)

@dataclass
class InteractionLaw(Law):
    """L = E + (A·N^-(alpha/beta) + B·T_gen^-1)^beta + C·T_dom^-gamma (Kaplan et al. 2020's L(N, D), plus a
    domain term): model size and general tokens interact, so a larger model gains more from the same tokens.
    Its log loss is not a sum of separate power laws, so it has its own log_loss; `terms` only tell specialize
    which sizes must vary (N and T_gen: a grid with one N or one budget does not identify it)."""

    def log_loss(self, vals: dict, x: LawInputs, active: tuple | None = None, grad: bool = True):
        log_n = np.log(x.n_params)
        log_t, dlog_t = _size_general(vals, x)
        log_d = np.log(x.domain_tokens)
        alpha, beta = vals["alpha"], vals["beta"]
        p1 = vals["A"] - alpha / beta * log_n          # log of A·N^-(alpha/beta)
        p2 = vals["B"] - log_t                          # log of B/T_gen
        log_u = np.logaddexp(p1, p2)
        log_l, (s0, s1, s2) = log_sum_exp([vals["E"], beta * log_u, vals["C"] - vals["gamma"] * log_d])
        if not grad:
            return log_l, None
        w1 = np.exp(p1 - log_u)                         # share of the N part inside the bracket
        w2 = 1.0 - w1
        return log_l, {
            "E": s0, "C": s2, "gamma": -s2 * log_d,
            "A": s1 * beta * w1, "B": s1 * beta * w2,
            "alpha": -s1 * w1 * log_n,
            "beta": s1 * (log_u + w1 * alpha / beta * log_n),
            "eta": -s1 * beta * w2 * dlog_t["eta"],
        }


INTERACTION = InteractionLaw(
    name="interaction",
    formula="L = E + (A·N^-(alpha/beta) + B·T_gen^-1)^beta + C·T_dom^-gamma;  T_gen, T_dom as in two_source",
    why="Kaplan et al. (2020)'s L(N, D) = ((N_c/N)^(alpha_N/alpha_D) + D_c/D)^alpha_D, with the irreducible loss "
        "and two_source's domain term: size and data interact (a larger model gains more from each token, as "
        "small models early in training do), where the other laws add separate terms.",
    params=[
        Param("E", True, _E, (-1.0, 0.0, 1.0), per_domain=True),
        Param("A", True, _COEF, (0.0, 8.0, 16.0), per_domain=True),
        Param("alpha", False, _EXPO, (0.25, 0.75)),
        Param("B", True, _COEF, (5.0, 10.0, 15.0), per_domain=True),
        Param("beta", False, (0.01, 4.0), (0.25, 0.75)),
        Param("C", True, _COEF, (0.0, 8.0, 16.0), per_domain=True),
        Param("gamma", False, _EXPO, (0.25, 0.75)),
        Param("eta", False, (0.0, 1.0), (0.2, 0.8)),
    ],
    terms=[Term("A", "alpha", _size_n, label="N"),
           Term("B", "beta", _size_general, extra=("eta",), label="T_gen"),
           Term("C", "gamma", _size_domain, label="T_dom")],
)

# Reference scales of log_bilinear: they only condition the fit (its cross term multiplies two logs, which are
# near-collinear with the single logs far from 0); the law is the same function for any choice.
N_REF, G_REF = 1e5, 1e6


@dataclass
class LogBilinearLaw(Law):
    """log L = a - alpha·n - (beta + kappa·n)·g - (gamma + mu·n + nu·g)·log(1 + lam·r),
    n = log(N/N_REF), g = log(G/G_REF), r = D'/(p·D) for an own expert (0 otherwise).
    Its log loss is linear in its parameters but lam, so it has its own log_loss (and its exact Jacobian)."""

    def log_loss(self, vals: dict, x: LawInputs, active: tuple | None = None, grad: bool = True):
        n = _size_n(vals, x)[0] - np.log(N_REF)
        g = _size_mixture(vals, x)[0] - np.log(G_REF)
        h, dh = _size_expert_phase(vals, x)
        slope = vals["beta"] + vals["kappa"] * n
        gain = vals["gamma"] + vals["mu"] * n + vals["nu"] * g
        log_l = vals["A"] - vals["alpha"] * n - slope * g - gain * h
        if not grad:
            return log_l, None
        zero = 0.0 * log_l
        return log_l, {"A": 1.0 + zero, "alpha": -n + zero, "beta": -g + zero, "kappa": -n * g + zero,
                       "gamma": -h + zero, "mu": -n * h + zero, "nu": -g * h + zero,
                       "lam": -gain * dh["lam"] + zero}


def _size_expert_phase(vals, x):
    """log(1 + lam·r), r = D'/(p·D) for an expert on its own domain (0 otherwise); lam is fitted as log lam."""
    r = np.where(x.is_own, x.special / np.maximum(x.weight * x.pretrain, 1.0), 0.0)
    lam_r = np.exp(vals["lam"]) * r
    return np.log1p(lam_r), {"lam": lam_r / (1.0 + lam_r)}


LOG_BILINEAR = LogBilinearLaw(
    name="log_bilinear",
    formula="L = A·N^-alpha·G^-(beta + kappa·log N)·(1 + lam·r)^-(gamma + mu·log N + nu·log G) (N in units of 1e5, "
            "tokens of 1e6);  G = mixture tokens seen (D for an expert, D + D' for the baseline), r = D'/(p·D) for "
            "an expert on its own domain (its expert-phase domain tokens over those its seed met), 0 otherwise",
    why="Far above the irreducible loss, small models follow a product of power laws better than a sum: log L is "
        "close to bilinear in log N and log tokens (the exponent in tokens grows with N: a larger model gains more "
        "from each token), and domains scale differently (per-domain exponents). Specializing multiplies the loss "
        "by (1 + lam·r)^-gain: r is how many domain tokens the expert phase adds to those the seed met, and the "
        "gain grows with N and with the seed's tokens (a larger, longer-trained seed profits more from the same "
        "specialization), so a split trades mixture tokens (G = D) for domain tokens and has an interior "
        "optimum. It has no constant term: it describes the measured range and says nothing of the loss floor, so "
        "extrapolating it far in N or tokens is not safe (it falls without bound).",
    params=[
        Param("A", True, (-20.0, 20.0), (0.5, 1.5), per_domain=True),
        Param("alpha", False, (-1.0, 4.0), (0.1, 0.3), per_domain=True),
        Param("beta", False, (-1.0, 4.0), (0.05, 0.2), per_domain=True),
        Param("kappa", False, (-1.0, 1.0), (-0.02, 0.02)),
        Param("gamma", False, (-1.0, 4.0), (0.02, 0.1), per_domain=True),
        Param("mu", False, (-1.0, 1.0), (0.0,)),
        Param("nu", False, (-1.0, 1.0), (0.0,)),
        Param("lam", True, (-10.0, 10.0), (-1.0, 1.0)),
    ],
    terms=[Term("A", "alpha", _size_n, label="N"),
           Term("A", "beta", _size_mixture, label="G"),
           Term("A", "gamma", _size_expert_phase, extra=("lam",), label="1 + lam·r")],
    fixed_when_single_n={"alpha": 0.0, "kappa": 0.0, "mu": 0.0},
)


LAWS = {law.name: law for law in (CHINCHILLA, TWO_SOURCE, ADDITIVE, TRANSFER, INTERACTION, LOG_BILINEAR)}


def get_law(name: str) -> Law:
    from .errors import AnalysisError
    if name not in LAWS:
        raise AnalysisError(f"unknown law {name!r}; choose one of {', '.join(LAWS)} or 'auto'")
    return LAWS[name]
