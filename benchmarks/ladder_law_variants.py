"""Held-out errors of log_bilinear variants (per-domain kappa, mu, nu, lam; a floor F·N^-phi; curvature in log G) on a results file.

    gunzip -k benchmarks/records/realtext_ladder_corpus1.jsonl.gz
    python benchmarks/ladder_law_variants.py benchmarks/records/realtext_ladder_corpus1.jsonl [variant ...] [--tables]
"""
import argparse
import dataclasses
import time

import numpy as np

from analysis.io import load_results, select_rows
from analysis.laws import G_REF, LOG_BILINEAR, LogBilinearLaw, N_REF, Param, log_sum_exp
from analysis import validate


def per_domain(name, names):
    return dataclasses.replace(LOG_BILINEAR, name=name, params=[
        dataclasses.replace(p, per_domain=True) if p.name in names else p for p in LOG_BILINEAR.params])


@dataclasses.dataclass
class FloorLaw(LogBilinearLaw):
    """log_bilinear plus a floor F·(N/N_REF)^-phi: L = exp(bilinear) + exp(F - phi·n)."""

    def log_loss(self, vals, x, active=None, grad=True):
        log_b, g_b = super().log_loss(vals, x, active, grad)
        n = np.log(x.n_params) - np.log(N_REF)
        log_l, (wb, wf) = log_sum_exp([log_b, vals["F"] - vals["phi"] * n])
        if not grad:
            return log_l, None
        grads = {k: wb * v for k, v in g_b.items()}
        grads["F"] = wf + 0.0 * log_l
        grads["phi"] = -wf * n + 0.0 * log_l
        return log_l, grads


@dataclasses.dataclass
class CurvedLaw(LogBilinearLaw):
    """log_bilinear with curvature in log G (and optionally in log N): log L -= omega·g² (+ psi·n²)."""

    def log_loss(self, vals, x, active=None, grad=True):
        log_b, g_b = super().log_loss(vals, x, active, grad)
        n = np.log(x.n_params) - np.log(N_REF)
        g = np.log(np.maximum(x.mixture_tokens, 1.0)) - np.log(G_REF)
        psi = vals.get("psi", 0.0)
        log_l = log_b - vals["omega"] * g * g - psi * n * n
        if not grad:
            return log_l, None
        grads = dict(g_b)
        grads["omega"] = -g * g + 0.0 * log_l
        if "psi" in vals:
            grads["psi"] = -n * n + 0.0 * log_l
        return log_l, grads


def curved(name, with_n=False, per_domain_omega=False):
    base = LOG_BILINEAR
    extra = [Param("omega", False, (-1.0, 1.0), (-0.02, 0.0, 0.02), per_domain=per_domain_omega)]
    if with_n:
        extra.append(Param("psi", False, (-1.0, 1.0), (0.0,)))
    return CurvedLaw(name=name, formula=base.formula + " · G^-(omega·log G)", why=base.why,
                     params=[*base.params, *extra], terms=base.terms,
                     fixed_when_single_n={**base.fixed_when_single_n, **({"psi": 0.0} if with_n else {})})


def floor(name, per_domain_floor=True):
    base = LOG_BILINEAR
    return FloorLaw(name=name, formula=base.formula + " + F·N^-phi", why=base.why, params=[
        *base.params,
        Param("F", True, (-20.0, 3.0), (-3.0, 0.0), per_domain=per_domain_floor),
        Param("phi", False, (0.0, 3.0), (0.1, 0.5))], terms=base.terms,
        fixed_when_single_n={**base.fixed_when_single_n, "phi": 0.0})


VARIANTS = {
    "base": lambda: LOG_BILINEAR,
    "pd_kappa": lambda: per_domain("pd_kappa", {"kappa"}),
    "pd_kappa_mu_nu": lambda: per_domain("pd_kappa_mu_nu", {"kappa", "mu", "nu"}),
    "pd_lam": lambda: per_domain("pd_lam", {"lam"}),
    "pd_kappa_lam": lambda: per_domain("pd_kappa_lam", {"kappa", "lam"}),
    "floor": lambda: floor("floor"),
    "floor_shared": lambda: floor("floor_shared", per_domain_floor=False),
    "curved": lambda: curved("curved"),
    "curved_pd": lambda: curved("curved_pd", per_domain_omega=True),
    "curved_n": lambda: curved("curved_n", with_n=True),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("variants", nargs="*", choices=[[], *VARIANTS], default=[],
                    metavar="VARIANT", help=f"any of {', '.join(VARIANTS)} (default: all)")
    ap.add_argument("--tables", action="store_true", help="also write each variant's held-out rows beside RESULTS")
    args = ap.parse_args()
    path, names = args.results, args.variants or list(VARIANTS)
    df = select_rows(load_results(path))
    print(f"{path}: {len(df)} rows, N = {sorted(df.n_params.unique())}", flush=True)
    for name in names:
        law = VARIANTS[name]()
        t = time.time()
        res, table = validate.heldout(df, law, per_domain=True)
        cells = []
        for check in ("largest_N", "largest_T"):
            r = res.get(check, {})
            cells.append(f"{check} {r['mean_rel_error']:.2%} / {r['max_rel_error']:.2%}" if "mean_rel_error" in r
                         else f"{check} {r}")
        print(f"{name:16s} " + " | ".join(cells) + f"  ({time.time() - t:.0f} s)", flush=True)
        if args.tables and table is not None and len(table):
            table.to_csv(f"{path}.{name}.heldout.csv", index=False)


if __name__ == "__main__":
    main()
