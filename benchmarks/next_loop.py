"""The closed loop of `python -m analysis next` with real training: a deliberately poor grid, then rounds of
"propose, run the proposed sweep file, refit", printing the interval of D*/C at the target after each round.

    python benchmarks/next_loop.py OUT [--rounds 3] [--max-runs 4] [--n-bootstrap 1000]

1,000 resamples: the interval's ends are percentiles of the resampled D*, and with fewer their Monte Carlo error
is as large as a round's change (benchmarks/README.md §9).

Every round runs the exact command `next` prints (its sweep file uses hydra/sweeper=points on top of the
first launch's settings), so the new rows join the same sweep and its seeds are reused from the store.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Tiny real runs of the real-text ladder's config (its 3-layer sizes, lr(N), shared seed) on a small local corpus:
# 2 sizes, 2 budgets, fractions 1/2 and 1 only, and little held-out text.
POOR_GRID = [
    "sweeps=realtext_ladder", "model=llama_21k,llama_38k", "split.tokens_per_param=2,6",
    "split.pretrain_fraction=0.5,1.0", "data.heldout_tokens=16384", "train.checkpoint_every_steps=100",
    "logger.mode=disabled", "report.enabled=false", "sweep_name=next_loop",
]
LAW = ["--law", "two_source", "--shared-coefficients"]


def run(cmd, env, log):
    t = time.time()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, shell=isinstance(cmd, str))
    log.write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout, time.time() - t


def loop(root: Path, rounds: int = 3, max_runs: int = 4, n_bootstrap: int = 1000, grid=POOR_GRID) -> list:
    """[{round, interval, width, mc_error, expected_interval, runs, cost_flops, train_s}] for rounds 0..rounds."""
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SPLITSWEEP_OUTPUT=str(root / "outputs"))
    sweep = root / "outputs" / "sweeps" / "next_loop"
    corpus = root / "corpus"
    history = []
    with open(root / "loop.log", "a") as log:
        if not corpus.exists():
            run([sys.executable, "-m", "splitsweep.data.local_corpus", str(corpus), "--mb-per-domain", "2",
                 "--shards", "2"], env, log)
        grid = [*grid, f"data.data_files={corpus}/*.jsonl"]
        _, train_s = run([sys.executable, "-m", "splitsweep", "-m", *grid], env, log)
        for r in range(rounds + 1):
            out = root / f"next_{r}"
            printed, _ = run([sys.executable, "-m", "analysis", "next", str(sweep), *LAW, "--n-bootstrap",
                              str(n_bootstrap), "--target-n-params", "37856", "--target-budget-tokens",
                              str(_target_budget(sweep)), "--max-runs", str(max_runs), "--out", str(out), "--quiet"],
                             env, log)
            nxt = json.loads((out / "next.json").read_text())
            lo, hi = nxt["current"]["interval"]
            mc = max(nxt["current"].get("interval_mc_error") or [0.0])
            history.append(dict(round=r, interval=[lo, hi], width=hi - lo, mc_error=mc,
                                expected_interval=nxt["expected_interval"],
                                runs=len(nxt["runs"]), cost_flops=nxt["cost_flops"], train_s=train_s))
            print(f"round {r}: D*/C interval {lo:.3f}–{hi:.3f} (width {hi - lo:.3f}, ends ±{mc:.3f} Monte Carlo); "
                  f"next {len(nxt['runs'])} runs, "
                  f"{nxt['cost_flops']:.3g} FLOPs, expected {nxt['expected_interval'][0]:.3f}–"
                  f"{nxt['expected_interval'][1]:.3f}; training {train_s:.0f} s", flush=True)
            if r == rounds:
                break
            command = printed.strip().splitlines()[-1]
            assert command.startswith("python -m splitsweep -m sweeps=next_loop_next"), command
            _, train_s = run(command.replace("python", shlex.quote(sys.executable), 1), env, log)
    return history


def _target_budget(sweep: Path) -> int:
    """The largest budget C measured at the target size (the round-0 grid's 6 tokens per parameter)."""
    best = 0
    for line in (sweep / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("n_params") == 37856 and row.get("status") == "ok":
            best = max(best, int(row["budget_tokens"]))
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-runs", type=int, default=4)
    p.add_argument("--n-bootstrap", type=int, default=1000)
    a = p.parse_args(argv)
    t0 = time.time()
    history = loop(a.out, a.rounds, a.max_runs, a.n_bootstrap)
    (a.out / "history.json").write_text(json.dumps(history, indent=1))
    print(f"widths {[round(h['width'], 4) for h in history]} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
