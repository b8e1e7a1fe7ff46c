"""bf16 against fp32 training on this CPU: tokens/s, MFU against both matmul peaks, and loss parity.

    python benchmarks/bench_precision.py                                  # llama_201k and llama_5m, 16 x 128
    python benchmarks/bench_precision.py --models llama_201k --reps 3     # quick

Both variants are `splitsweep.train.Trainer` on the same torchtitan Llama, built as the jobs build it
(`parallelize`, `adamw`), from the same initial weights, reading the same phonebook batches:
- fp32: `train.precision=fp32`, everything in fp32;
- bf16: `train.precision=bf16`, torch.autocast(bf16) around the forward (one process), fp32 weights,
  optimizer and loss.

Speed: after one warm-up chunk each repetition runs `--steps` steps of each variant in a rotating order;
the ratio bf16/fp32 is the median of the per-repetition ratios (adjacent chunks see about the same load).
Parity: the two trajectories train the same `--reps x --steps` steps; their training losses over the last
chunk and their held-out losses at the end are compared (relative difference).
MFU: model FLOPs/s (6·(N + d·V) + 12·L·d·seq per token, as bench_train.py) over the best 2048^3 matmul of
the same dtype and threads, measured in this run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omegaconf import OmegaConf  # noqa: E402

from splitsweep.data import MIXTURE  # noqa: E402
from splitsweep.data.phonebook import Phonebook  # noqa: E402
from splitsweep.distributed import DistEnv  # noqa: E402
from splitsweep.model import ModelSpec, build_model  # noqa: E402
from splitsweep.parallelize import TrainLayout, adamw, parallelize  # noqa: E402
from splitsweep.schedule import Schedule  # noqa: E402
from splitsweep.train import BatchSpec, TrainingPath, Trainer  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_train import matmul_peak  # noqa: E402


def bench_model(name: str, args, peaks: dict) -> dict:
    spec = ModelSpec.from_config(OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml"))
    dcfg = OmegaConf.load(ROOT / "conf" / "data" / "phonebook.yaml")
    source = Phonebook.from_config(dcfg, seq_len=args.seq_len, seed=0)
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    batch = BatchSpec(args.batch, None, args.seq_len)
    horizon = 10 ** 6
    trainers = {}
    for variant in args.variants.split(","):
        precision, _, extra = variant.partition("+")
        layout = TrainLayout(precision=precision, compile=extra == "compile")
        model = parallelize(build_model(spec, source.vocab_size, args.seq_len, seed=0), env, layout)
        opt = adamw(model, env, args.lr, (0.9, 0.95), 1e-8, 0.0)
        trainers[variant] = Trainer(model, opt, source, Schedule("wsd", args.lr, 10, 0.1), batch, env,
                                      layout=layout, sync_every=args.steps)
    path = TrainingPath(horizon, 0, MIXTURE)
    step = {p: 0 for p in trainers}
    last_loss = {}

    def run(p):
        seen = []
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the loop's closing progress line
            trainers[p].train(path, step[p], step[p] + args.steps, p,
                              log=lambda s, m: seen.append(m["train/loss"]), progress_every_s=1e9)
        step[p] += args.steps
        last_loss[p] = seen[-1]
        return time.perf_counter() - t0

    for p in trainers:  # warm-up chunk
        run(p)
    times = {p: [] for p in trainers}
    order = list(trainers)
    for rep in range(args.reps):
        for p in order[rep % len(order):] + order[:rep % len(order)]:
            times[p].append(run(p))
    tokens = args.steps * batch.tokens_per_step
    flops_tok = 6 * (spec.non_embedding_params() + spec.dim * source.vocab_size) \
        + 12 * spec.n_layers * spec.dim * args.seq_len
    heldout = source.heldout(0)
    out = {"model": name, "N": spec.non_embedding_params(), "steps_each": step["fp32"], "variants": {}}
    for p, tr in trainers.items():
        tps = tokens / statistics.median(times[p])
        out["variants"][p] = {"tokens_per_s": tps, "mfu_vs_fp32_peak": tps * flops_tok / 1e9 / peaks["fp32"],
                              "mfu_vs_bf16_peak": tps * flops_tok / 1e9 / peaks["bf16"],
                              "train_loss": last_loss[p], "heldout_loss": tr.evaluate(heldout, 32)[0]}
    for p, v in out["variants"].items():
        v["speedup"] = statistics.median(f / b for f, b in zip(times["fp32"], times[p]))
        v["heldout_rel_diff"] = (v["heldout_loss"] - out["variants"]["fp32"]["heldout_loss"]) \
            / out["variants"]["fp32"]["heldout_loss"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llama_201k,llama_5m")
    ap.add_argument("--variants", default="fp32,bf16", help="fp32 first; e.g. fp32,bf16,fp32+compile,bf16+compile")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed chunk")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peaks = {"fp32": matmul_peak(dtype=torch.float32), "bf16": matmul_peak(dtype=torch.bfloat16)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} x seq {args.seq_len}; "
          f"matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s "
          f"({peaks['bf16'] / peaks['fp32']:.2f}x)")
    print("| model | N | variant | tok/s | vs fp32 | MFU of fp32 peak | MFU of bf16 peak | train loss (last chunk) "
          "| held-out loss (vs fp32) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        r = bench_model(name, args, peaks)
        for p, v in r["variants"].items():
            print(f"| {name} | {r['N']:,} | {p} | {v['tokens_per_s']:,.0f} | {v['speedup']:.2f}x | "
                  f"{100 * v['mfu_vs_fp32_peak']:.1f}% | {100 * v['mfu_vs_bf16_peak']:.1f}% | {v['train_loss']:.4f} | "
                  f"{v['heldout_loss']:.4f} ({100 * v['heldout_rel_diff']:+.2f}%) |", flush=True)


if __name__ == "__main__":
    main()
