"""Benchmark of analysis/fit.py (numbers and command in benchmarks/FIT.md).

  python benchmarks/bench_fit.py [--scipy-starts N] [--skip-two-source]

1. Chinchilla on Epoch's 240 points with Hoffmann's 4,500-start grid: analysis.fit.fit_law (batched
   LM prescreen + lmfit polish) side by side with a plain scipy L-BFGS-B loop over the same starts,
   (a) with scipy's default finite-difference gradient (Hoffmann's / Epoch's procedure) and
   (b) with the same analytic gradient analysis uses. Reports time and best Huber sum of each.
2. two_source on 1,000 synthetic rows: full start grid, then 200 bootstrap resamples over runs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.fit import DELTA, Layout, Problem, fit_law, huber  # noqa: E402
from analysis.inputs import LawInputs  # noqa: E402
from analysis.io import load_results, select_rows  # noqa: E402
from analysis.laws import LAWS, specialize  # noqa: E402
from analysis.synthetic import TRUE_PARAMS, make_sweep  # noqa: E402

DATA = ROOT / "tests" / "data" / "epoch_chinchilla_points.csv"


def epoch_table():
    raw = pd.read_csv(DATA)
    raw = raw[raw["loss"] < sorted(raw["loss"])[-5]]
    return load_results(pd.DataFrame({"n_params": raw["Model Size"],
                                      "pretrain_tokens": raw["Training FLOP"] / (6 * raw["Model Size"]),
                                      "special_tokens": 0.0, "eval_loss": raw["loss"]}))


def scipy_loop(df, starts, analytic: bool):
    """Plain loop: scipy.optimize.minimize(L-BFGS-B) from every start, keep the best (Epoch cell 18)."""
    law = LAWS["chinchilla"]
    x = LawInputs.from_table(df)
    problem = Problem(Layout(law, specialize(law, x), x.domains, False), x, df["eval_loss"].to_numpy(), DELTA)

    def f(theta):
        return float(huber(problem.residuals(theta[None])[0]).sum())

    def f_and_grad(theta):
        r, jac = problem.residuals_jac(theta[None])
        psi = np.clip(r[0], -DELTA, DELTA)  # d huber / d r
        return float(huber(r[0]).sum()), jac[0].T @ psi

    best = (np.inf, None)
    for s in starts:
        with np.errstate(all="ignore"):
            res = minimize(f_and_grad if analytic else f, s, jac=analytic, method="L-BFGS-B")
        if res.success and res.fun < best[0]:
            best = (res.fun, res.x)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scipy-starts", type=int, default=4500, help="starts for the scipy loops (all 4,500 by default)")
    ap.add_argument("--skip-two-source", action="store_true")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}, numpy {np.__version__}")
    df = epoch_table()
    t = time.perf_counter()
    fit = fit_law(df, LAWS["chinchilla"])
    ours = time.perf_counter() - t
    p = fit.params()
    print(f"chinchilla, {len(df)} points, {fit.n_starts} starts: analysis.fit_law {ours:.1f} s, Huber sum "
          f"{fit.objective:.10g}, A={p['A']:.2f} B={p['B']:.2f} E={p['E']:.4f} alpha={p['alpha']:.4f} beta={p['beta']:.4f}")
    law = LAWS["chinchilla"]
    starts = law.start_grid(["E", "A", "B", "alpha", "beta"])[: args.scipy_starts]
    for analytic in (True, False):
        t = time.perf_counter()
        best, _ = scipy_loop(df, starts, analytic)
        dt = time.perf_counter() - t
        scale = len(law.start_grid(["E", "A", "B", "alpha", "beta"])) / len(starts)
        extra = f" (x{scale:.1f} for all starts: {dt * scale:.0f} s)" if scale > 1 else ""
        print(f"  scipy L-BFGS-B loop, {'analytic' if analytic else 'finite-difference'} gradient, {len(starts)} "
              f"starts: {dt:.1f} s{extra}, best Huber sum {best:.10g}")
    if args.skip_two_source:
        return
    # ~1,000 fitted rows: 6 sizes x 3 budgets x 13 fractions x 4 domains (own) + baselines
    fractions = tuple(np.round(np.linspace(0, 0.96, 13), 3)) + (1.0,)
    table = make_sweep(LAWS["two_source"], TRUE_PARAMS["two_source"], n_values=(1e6, 2e6, 4e6, 8e6, 16e6, 32e6),
                       tokens_per_param=(10, 20, 40), fractions=fractions, seed=0, noise=0.003)
    rows = select_rows(load_results(table))
    t = time.perf_counter()
    fit = fit_law(rows, LAWS["two_source"], n_bootstrap=200, progress=True)
    dt = time.perf_counter() - t
    print(f"two_source, {len(rows)} rows, {fit.n_starts} starts + 200 bootstrap resamples of "
          f"{rows['run_id'].nunique()} runs: {dt:.1f} s, Huber sum {fit.objective:.6g}")


if __name__ == "__main__":
    main()
