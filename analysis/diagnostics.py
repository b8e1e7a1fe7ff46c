"""Is a fit identified by this grid? Checks at the optimum, and on the bootstrap when there is one.

A fitted law answers the split question only if the measured grid of (N, D, D') pins its parameters.
Four symptoms say it does not (each is one warning that names the parameter and its value):

  on a bound      a free parameter sits on its bound: the data push it out of its range (a coefficient
                  at its lower bound is a term that vanished, an exponent at 0 a term that is constant)
  E about 0       E < 1e-3 of the smallest measured loss (or at its lower bound): nothing in the grid
                  shows where the loss levels off, so the irreducible loss is not measured
  wide interval   (bootstrap only) the 95% interval of a coefficient spans more than a decade
                  (exp(hi)/exp(lo) > 10 in its log), of an exponent a factor > 10 or includes 0
  rank            the Jacobian of the log residuals at the optimum is rank-deficient (singular values
                  below 1e-8 of the largest): moving along its null direction leaves every prediction
                  unchanged; the components of that right singular vector of at least 0.1 of its largest
                  (up to 4) name the parameters

`diagnose` returns a JSON-ready dict; FitResult.diagnostics computes it (fit.py), fit.json carries it,
and `--law auto` prefers a law without warnings (validate.pick_law).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # fit.py imports this module: no runtime import back
    from .fit import FitResult, Problem

BOUND_TOL = 1e-4   # a parameter within this fraction of its range from a bound is on it
E_ZERO = 1e-3      # E below this fraction of the smallest measured loss is about 0
WIDE = 10.0        # an interval wider than this factor (a decade) does not pin the parameter
RANK_TOL = 1e-8    # singular values below RANK_TOL * the largest: an unidentified direction
LEVEL = 0.95       # bootstrap interval checked


def _g(v: float) -> str:
    return f"{v:.2g}" if abs(v) >= 1e-2 or v == 0 else f"{v:.1e}"


def _columns(fit: "FitResult") -> list:
    """(parameter name, domain index or None) of every free column."""
    out = [None] * fit.layout.size
    for name, col in fit.layout.columns.items():
        if np.ndim(col) == 0:
            out[int(col)] = (name, None)
        else:
            for d, c in enumerate(col):
                out[int(c)] = (name, d)
    return out


def _role(law, name: str):
    """('coef' | 'expo' | 'extra' | 'E', the term) of a law parameter."""
    if name == "E":
        return "E", None
    for t in law.terms:
        if t.coef == name:
            return "coef", t
        if t.expo == name:
            return "expo", t
        if name in t.extra:
            return "extra", t
    return "extra", None


def _bound_consequence(law, name: str, side: str) -> str:
    role, term = _role(law, name)
    size = (term.label or "its size") if term is not None else "its size"
    if role == "coef" and side == "lower":
        return f"its term {name}·{size}^-{term.expo} vanishes, so the grid does not show this term"
    if role == "expo" and side == "lower":
        return f"the term {term.coef}·{size}^-{name} no longer falls with {size}, it acts as a constant"
    return "the data push it out of its range, so the grid does not pin it"


def diagnose(fit: "FitResult", problem: "Problem | None" = None, level: float = LEVEL) -> dict:
    """Identifiability of `fit` on the data of `problem` (default fit.problem); see the module docstring.

    Returns {"identified", "warnings", "reasons" (short phrases), "on_bounds", "e_at_zero",
    "wide_intervals", "unidentified_directions", "jacobian_rank", "n_params", "bootstrap_checked"}.
    Without a problem the E and Jacobian checks are skipped (jacobian_rank None); without a bootstrap
    (fewer than 2 resamples) the interval check is.
    """
    problem = problem if problem is not None else getattr(fit, "problem", None)
    layout, law = fit.layout, fit.law
    theta = np.asarray(fit.theta, float)
    labels = list(layout.labels)
    cols = _columns(fit)
    is_log = np.asarray(layout.natural_log, bool)
    lo_b, hi_b = layout.bounds[:, 0], layout.bounds[:, 1]
    warnings_, reasons = [], []
    on_bounds, e_zero, wide, directions = [], [], [], []

    def natural(j, v):
        return float(math.exp(min(v, 700.0))) if is_log[j] else float(v)

    # -- parameters on their bounds ------------------------------------------------------------
    for j, lab in enumerate(labels):
        tol = BOUND_TOL * (hi_b[j] - lo_b[j])
        side = "lower" if theta[j] - lo_b[j] <= tol else "upper" if hi_b[j] - theta[j] <= tol else None
        if side is None:
            continue
        bound = lo_b[j] if side == "lower" else hi_b[j]
        name = cols[j][0]
        on_bounds.append({"param": lab, "value": natural(j, theta[j]), "bound": natural(j, bound), "side": side})
        if name == "E" and side == "lower" and problem is not None:
            continue  # E at 0: said once, below
        warnings_.append(f"{lab} = {_g(natural(j, theta[j]))} is at its {side} bound {_g(natural(j, bound))}; "
                         + _bound_consequence(law, name, side))
        reasons.append((("bound", name, side), lab, None, lambda who, v, side=side: f"{who} at its {side} bound"))

    # -- E about 0 ------------------------------------------------------------------------------
    if problem is not None:
        loss = np.exp(problem.log_y)
        dom = problem.x.domain
        for j, lab in enumerate(labels):
            name, d = cols[j]
            if name != "E":
                continue
            rows = loss if d is None else loss[dom == d]
            floor = float(rows.min()) if len(rows) else float(loss.min())
            e = natural(j, theta[j])
            at_bound = theta[j] - lo_b[j] <= BOUND_TOL * (hi_b[j] - lo_b[j])
            if e < E_ZERO * floor or at_bound:
                e_zero.append({"param": lab, "value": e, "smallest_loss": floor, "at_bound": bool(at_bound)})
                warnings_.append(f"{lab} = {_g(e)} is at about 0 (smallest measured loss {floor:.3g}): the grid "
                                 "does not pin the irreducible loss")
                reasons.append((("zero", name), lab, None, lambda who, v: f"{who} at 0"))

    # -- bootstrap intervals --------------------------------------------------------------------
    boot = fit.boot_theta
    boot_checked = boot is not None and len(boot) >= 2
    if boot_checked:
        q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
        lo_q, hi_q = np.percentile(np.asarray(boot, float), q, axis=0)
        for j, lab in enumerate(labels):
            if not (np.isfinite(lo_q[j]) and np.isfinite(hi_q[j])):
                continue
            a, b = natural(j, lo_q[j]), natural(j, hi_q[j])
            entry = {"param": lab, "interval": [a, b], "level": level}
            if is_log[j]:
                decades = (hi_q[j] - lo_q[j]) / math.log(10.0)
                if decades <= math.log10(WIDE):
                    continue
                entry["decades"] = float(decades)
                span = f"{decades:.0f} decades" if decades >= 1.5 else f"{decades:.1f} decades"
                warnings_.append(f"{lab}'s {level:.0%} bootstrap interval [{_g(a)}, {_g(b)}] spans {span}: "
                                 f"the grid does not pin {lab}")
                reasons.append((("decades", cols[j][0]), lab, float(decades),
                                lambda who, v: f"{who}'s interval spans {v:.0f} decades" if v >= 1.5 else
                                f"{who}'s interval spans {v:.1f} decades"))
            else:
                if a <= 0.0 <= b:
                    entry["includes_zero"] = True
                    warnings_.append(f"{lab}'s {level:.0%} bootstrap interval [{_g(a)}, {_g(b)}] includes 0: "
                                     f"the grid does not tell whether {lab} matters")
                    reasons.append((("zero_in", cols[j][0]), lab, None, lambda who, v: f"{who}'s interval includes 0"))
                else:
                    factor = max(abs(a), abs(b)) / min(abs(a), abs(b))
                    if factor <= WIDE:
                        continue
                    entry["factor"] = float(factor)
                    warnings_.append(f"{lab}'s {level:.0%} bootstrap interval [{_g(a)}, {_g(b)}] spans a factor "
                                     f"{factor:.3g}: the grid does not pin {lab}")
                    reasons.append((("factor", cols[j][0]), lab, float(factor),
                                    lambda who, v: f"{who}'s interval spans a factor {v:.3g}"))
            wide.append(entry)

    # -- Jacobian rank --------------------------------------------------------------------------
    rank = None
    if problem is not None:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            _, jac = problem.residuals_jac(theta[None])
        jac = np.asarray(jac[0], float)
        if np.all(np.isfinite(jac)) and jac.size:
            # thin SVD (U never needed); every right singular vector is kept when rows < params
            _, s, vt = np.linalg.svd(jac, full_matrices=jac.shape[0] < jac.shape[1])
            s_full = np.zeros(len(labels))
            s_full[:len(s)] = s
            top = s_full.max()
            null = s_full <= RANK_TOL * top if top > 0 else np.ones(len(labels), bool)
            rank = int((~null).sum())
            fitted = [f"log {lab}" if is_log[j] else lab for j, lab in enumerate(labels)]
            parts = []
            for i in np.flatnonzero(null):
                v = vt[i]
                big = [k for k in np.argsort(-np.abs(v), kind="stable") if abs(v[k]) >= 0.1 * np.abs(v).max()][:4]
                combo = " ".join(f"{'-' if v[k] < 0 else '+'}{abs(v[k]):.2f}·{fitted[k]}" for k in big).lstrip("+")
                directions.append({"singular_value": float(s_full[i] / top) if top > 0 else 0.0,
                                   "components": {labels[k]: float(v[k]) for k in big}})
                parts.append(f"{labels[big[0]]} does not change any prediction" if len(big) == 1 else
                             f"moving along {combo} leaves every prediction unchanged "
                             f"({', '.join(labels[k] for k in big)} are not told apart)")
            if parts:
                warnings_.append(f"the Jacobian at the optimum has rank {rank} of {len(labels)}: "
                                 + "; ".join(parts) + ", so the grid does not pin "
                                 + ("it" if len(directions) == 1 and len(directions[0]["components"]) == 1 else "them"))
            if rank < len(labels):
                involved = dict.fromkeys(lab for d in directions for lab in d["components"])
                text = f"Jacobian rank {rank} of {len(labels)} ({', '.join(involved)})"
                reasons.append((("rank",), text, None, lambda who, v: who))
        else:
            warnings_.append("the Jacobian at the optimum is not finite: the fit is not usable")
            reasons.append((("jac",), "non-finite Jacobian", None, lambda who, v: who))

    return {
        "identified": not warnings_,
        "warnings": warnings_,
        "reasons": _group(reasons),
        "on_bounds": on_bounds,
        "e_at_zero": e_zero,
        "wide_intervals": wide,
        "unidentified_directions": directions,
        "jacobian_rank": rank,
        "n_params": int(len(labels)),
        "bootstrap_checked": bool(boot_checked),
    }


def _group(reasons: list) -> list:
    """One short phrase per (symptom, parameter): the domains of a per-domain coefficient together,
    'C[d0, d1, d3]'s interval spans 36 decades' (the widest), not one phrase per domain."""
    groups = {}
    for key, label, value, fmt in reasons:
        groups.setdefault(key, []).append((label, value, fmt))
    out = []
    for key, items in groups.items():
        labels = [lab for lab, _, _ in items]
        values = [v for _, v, _ in items if v is not None]
        fmt = items[0][2]
        if len(key) < 2:
            out.extend(fmt(lab, v) for lab, v, _ in items)
            continue
        if len(items) == 1:
            out.append(fmt(labels[0], values[0] if values else None))
            continue
        base = key[1]
        doms = [lab[len(base) + 1:-1] if lab.startswith(base + "[") else lab for lab in labels]
        out.append(fmt(f"{base}[{', '.join(doms)}]", max(values) if values else None))
    return out


def short(diag: dict | None, limit: int = 3) -> str:
    """The reasons a law is not identified, for one sentence: 'E at 0, B's interval spans 20 decades'."""
    if not diag:
        return ""
    reasons = list(diag.get("reasons") or diag.get("warnings") or [])
    more = len(reasons) - limit
    return ", ".join(reasons[:limit]) + (f" and {more} more" if more > 0 else "")
