"""Sweep cost: tokens the default sweep actually trains, against the minimum and against no reuse.

    python benchmarks/bench_sweep.py                       # the real default sweep (sweeps/phonebook.yaml)
    python benchmarks/bench_sweep.py --fractions 0,0.5,1 --domains d0,mixture   # a smaller grid
    python benchmarks/bench_sweep.py --reuse DIR           # only count an existing SPLITSWEEP_OUTPUT

It runs `SPLITSWEEP_OUTPUT=<dir> WANDB_MODE=disabled python -m splitsweep -m report.enabled=false` from
the repo root (sequential local launcher, one job at a time), then counts:

- trained    = seed tokens (sum of `tokens` over every store/seeds/<id>/segments.jsonl line)
               + expert tokens (per run: the record's `tokens_trained` minus the seed tokens that run
               trained itself, i.e. its own lines in segments.jsonl; `tokens_trained` includes them)
- minimum    = each seed trajectory once (the largest D any run needs from it) + every run's D' (a
               pretraining-only run's D is its branch point D - cooldown_tokens, its D' its cooldown)
- evaluated  = held-out tokens of every row (forward passes, about a third of a training token each)
- no reuse   = every grid point from scratch: sum of D + D' over runs

Goal: trained / minimum <= 1.05. The numbers are token counts, so machine load does not change them
(only the wall time printed beside them).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def run_sweep(output: Path, extra: list[str]) -> float:
    env = dict(os.environ, SPLITSWEEP_OUTPUT=str(output), WANDB_MODE="disabled")
    cmd = [sys.executable, "-m", "splitsweep", "-m", "report.enabled=false", *extra]
    print("$", f"SPLITSWEEP_OUTPUT={output} WANDB_MODE=disabled", " ".join(cmd[1:]), flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return time.monotonic() - t0


def count(output: Path) -> dict:
    rows = []
    for results in sorted((output / "sweeps").glob("*/results.jsonl")):
        rows += read_jsonl(results)
    runs = {}
    for r in rows:  # one row per evaluated domain: keep one per run
        runs.setdefault(r["run_id"], r)
    if not runs:
        raise SystemExit(f"no records under {output}/sweeps/*/results.jsonl")

    segments = []
    for seg_file in sorted((output / "store" / "seeds").glob("*/segments.jsonl")):
        for s in read_jsonl(seg_file):
            s["trajectory"] = seg_file.parent.name
            segments.append(s)
    seed_by_run = defaultdict(int)
    seed_by_traj = defaultdict(int)
    for s in segments:
        seed_by_run[s["run_id"]] += int(s["tokens"])
        seed_by_traj[s["trajectory"]] += int(s["tokens"])

    expert_tokens = {rid: int(r["tokens_trained"]) - seed_by_run[rid] for rid, r in runs.items()}
    # A pretraining-only run (D' = 0) under wsd leaves the trajectory cooldown_tokens before D and decays on
    # the mixture: its seed is D - cooldown, its own phase the cooldown.
    branch = {rid: int(r["pretrain_tokens"]) - int(r.get("cooldown_tokens") or 0) for rid, r in runs.items()}
    own = {rid: int(r["special_tokens"]) + int(r.get("cooldown_tokens") or 0) for rid, r in runs.items()}
    max_d = defaultdict(int)
    for rid, r in runs.items():
        if branch[rid] > 0:
            max_d[r["seed_id"]] = max(max_d[r["seed_id"]], branch[rid])
    seed_trained = sum(seed_by_traj.values())
    expert_trained = sum(expert_tokens.values())
    minimum = sum(max_d.values()) + sum(own.values())
    scratch = sum(int(r["pretrain_tokens"]) + int(r["special_tokens"]) for r in runs.values())
    mismatched = [rid for rid in runs if expert_tokens[rid] != own[rid]]
    # Evaluation is compute too: a forward pass costs about a third of a training step's FLOPs per token.
    eval_tokens = sum(int(r.get("eval_tokens") or 0) for r in rows if r.get("eval_domain") != "mixture")
    return {
        "runs": len(runs), "trajectories": len(seed_by_traj), "seed_segments": len(segments),
        "seed_trained": seed_trained, "seed_minimum": sum(max_d.values()),
        "expert_trained": expert_trained, "expert_minimum": sum(own.values()),
        "eval_tokens": eval_tokens, "eval_train_equivalent": eval_tokens // 3,
        "trained": seed_trained + expert_trained, "minimum": minimum, "no_reuse": scratch,
        "experts_not_equal_to_D_prime": mismatched,
        "segments": [{k: s[k] for k in ("trajectory", "from_step", "to_step", "tokens", "wall_s")} for s in segments],
        "batch_tokens": next(iter(runs.values())).get("batch_tokens"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", help="SPLITSWEEP_OUTPUT for the sweep (default: a fresh temporary directory)")
    ap.add_argument("--reuse", help="count an existing SPLITSWEEP_OUTPUT directory, train nothing")
    ap.add_argument("--fractions", help="override split.pretrain_fraction, e.g. 0,0.4,1.0")
    ap.add_argument("--domains", help="override split.expert_domain, e.g. d0,mixture")
    ap.add_argument("--budget", type=int, help="override split.budget_tokens (a multiple of 16 x 128)")
    ap.add_argument("--json", help="also write the counts as JSON here")
    ap.add_argument("extra", nargs="*", help="further Hydra overrides")
    args = ap.parse_args()

    wall = None
    if args.reuse:
        output = Path(args.reuse)
    else:
        output = Path(args.output or tempfile.mkdtemp(prefix="bench_sweep_"))
        extra = list(args.extra)
        if args.fractions:
            extra.append(f"split.pretrain_fraction={args.fractions}")
        if args.domains:
            extra.append(f"split.expert_domain={args.domains}")
        if args.budget:
            extra.append(f"split.budget_tokens={args.budget}")
        wall = run_sweep(output, extra)

    c = count(output)
    c["wall_s"] = wall
    print()
    print(f"sweep output: {output}")
    print(f"runs {c['runs']}, seed trajectories {c['trajectories']}, seed segments {c['seed_segments']}"
          + (f", wall {wall:.0f} s" if wall else ""))
    for s in c["segments"]:
        print(f"  seed segment {s['trajectory']}: steps {s['from_step']}..{s['to_step']} "
              f"{s['tokens']:,} tokens ({s['wall_s']:.1f} s)")
    print(f"{'':22s}{'tokens':>14s}")
    print(f"{'seed trained':22s}{c['seed_trained']:>14,}   (minimum {c['seed_minimum']:,})")
    print(f"{'expert trained':22s}{c['expert_trained']:>14,}   (minimum {c['expert_minimum']:,})")
    print(f"{'total trained':22s}{c['trained']:>14,}")
    print(f"{'minimum':22s}{c['minimum']:>14,}")
    print(f"{'no reuse (scratch)':22s}{c['no_reuse']:>14,}")
    print(f"{'held-out evaluated':22s}{c['eval_tokens']:>14,}   (forward only: about "
          f"{c['eval_train_equivalent']:,} training tokens, {c['eval_train_equivalent'] / c['trained']:.1%} "
          f"of the training)")
    print(f"trained / minimum  = {c['trained'] / c['minimum']:.4f}   (goal <= 1.05)")
    print(f"trained / no reuse = {c['trained'] / c['no_reuse']:.4f}   "
          f"(reuse saves {1 - c['trained'] / c['no_reuse']:.1%} of the tokens)")
    if c["experts_not_equal_to_D_prime"]:
        print(f"WARNING: {len(c['experts_not_equal_to_D_prime'])} runs trained an expert phase != D' "
              f"(resumed or re-trained): {c['experts_not_equal_to_D_prime'][:5]}")
    if args.json:
        Path(args.json).write_text(json.dumps(c, indent=2))


if __name__ == "__main__":
    main()
