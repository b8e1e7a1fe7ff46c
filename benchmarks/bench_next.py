"""`python -m analysis next` against random runs of equal cost, on synthetic sweeps of a known law.

For each seed: a deliberately poor grid (4 sizes, 2 budgets, pretrain fractions 0 and 0.6) of the `two_source`
law with 0.5% noise; the fit's bootstrap interval of D*/T at the largest N and budget; then two ways to spend the
same compute, each measured by refitting with the new rows (drawn from the same law) and bootstrapping again:
  - proposed: the runs `next` chooses under a compute budget (a fraction of the grid's own compute);
  - random: candidates of the same grid drawn uniformly until the proposed cost is spent.

    python benchmarks/bench_next.py [--seeds 5] [--budget-share 0.1] [--n-bootstrap 20]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis.fit import fit_law  # noqa: E402
from analysis.io import domain_weights, load_results, select_rows  # noqa: E402
from analysis.laws import LAWS  # noqa: E402
from analysis.next_runs import candidates, propose, run_cost_tokens, seed_of, trained_seeds  # noqa: E402
from analysis.split import choose_split  # noqa: E402
from analysis.synthetic import TRUE_PARAMS, make_sweep, rows_for_runs  # noqa: E402

LAW = LAWS["two_source"]
GRID = dict(n_values=(1e6, 2e6, 4e6, 8e6), tokens_per_param=(10, 40), fractions=(0.0, 0.6), cross=False)
TARGET = (8e6, 40 * 8e6)


def width(table: pd.DataFrame, n_bootstrap: int, seed: int) -> tuple[float, object]:
    rows = select_rows(load_results(table))
    fit = fit_law(rows, LAW, n_bootstrap=n_bootstrap, seed=seed)
    s = choose_split(fit, *TARGET, mixture_weights=domain_weights(rows), rows=rows, prediction_intervals=False)
    lo, hi = s["pretrain_fraction_ci"]
    return hi - lo, fit


def random_runs(table: pd.DataFrame, rows: pd.DataFrame, fit, cost_flops: float, rng) -> list:
    cands = candidates(table, list(fit.domains), *TARGET, "per-path", len(fit.domains), None)
    seeds = trained_seeds(table)
    picked, spent = [], 0.0
    for i in rng.permutation(len(cands)):
        c = cands[i]
        flops = 6.0 * c.n_params * run_cost_tokens(c, seeds, 0.0)
        if spent + flops > cost_flops * (1 + 1e-9):
            continue
        picked.append(c)
        spent += flops
        seeds.setdefault(float(c.n_params), []).append(seed_of(c, 0.0))
    return [vars(c) for c in picked], spent


def one_seed(seed: int, budget_share: float, n_bootstrap: int) -> dict:
    table = make_sweep(LAW, TRUE_PARAMS["two_source"], seed=seed, **GRID)
    w0, fit = width(table, n_bootstrap, seed)
    rows = select_rows(load_results(table))
    grid_flops = float(table.drop_duplicates("run_id")["flops"].sum())
    out = propose(fit, load_results(table), rows, target_n=TARGET[0], target_budget=TARGET[1],
                  accounting="per-path", compute_budget=budget_share * grid_flops)
    new = rows_for_runs(LAW, TRUE_PARAMS["two_source"], out["runs"], seed=1000 + seed)
    w_prop, _ = width(pd.concat([table, new], ignore_index=True), n_bootstrap, seed)
    runs, spent = random_runs(load_results(table), rows, fit, out["cost_flops"], np.random.default_rng(seed))
    rand = rows_for_runs(LAW, TRUE_PARAMS["two_source"], runs, seed=1000 + seed)
    w_rand, _ = width(pd.concat([table, rand], ignore_index=True), n_bootstrap, seed)
    return dict(seed=seed, width_before=w0, width_proposed=w_prop, width_random=w_rand,
                expected_width=out["expected_interval"][1] - out["expected_interval"][0],
                n_proposed=len(out["runs"]), n_random=len(runs), cost_proposed=out["cost_flops"], cost_random=spent,
                grid_flops=grid_flops)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--budget-share", type=float, default=0.1, help="compute of the proposal / the grid's")
    p.add_argument("--n-bootstrap", type=int, default=20)
    a = p.parse_args(argv)
    t0 = time.time()
    res = pd.DataFrame([one_seed(s, a.budget_share, a.n_bootstrap) for s in range(a.seeds)])
    print(res.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"mean width: before {res.width_before.mean():.4f}, proposed {res.width_proposed.mean():.4f}, random "
          f"{res.width_random.mean():.4f}; proposed / random = {res.width_proposed.mean() / res.width_random.mean():.3f}"
          f" ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
