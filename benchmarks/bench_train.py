"""Training throughput: our loop (splitsweep.train.Trainer on the torchtitan Llama) against a minimal
plain-PyTorch GPT loop of the same size, batch and data, side by side in one process, interleaved.

    python benchmarks/bench_train.py                              # llama_886k and llama_5m, 16 x 128
    python benchmarks/bench_train.py --models llama_886k --reps 3 --steps 5   # quick
    python benchmarks/bench_train.py --profile llama_886k         # + torch.profiler table of each variant

Variants (each keeps its own model and optimizer for the whole run; after one warm-up chunk every
repetition runs `--steps` optimizer steps of each variant, in a rotating order):

- ours   : `Trainer.train` (splitsweep.train) on `build_model` (torchtitan 0.2.2 Llama, sdpa), AdamW built
           as in splitsweep.job, batches read by the Trainer from the phonebook source, the wsd schedule,
           torchtitan's clip_grad_norm_, a loss all-reduce and a stop-flag broadcast per step (no-ops with
           one process), as the jobs run it. No checkpoints, logging or progress lines.
- plain  : a nanoGPT-like GPT written below: learned position embeddings, pre-RMSNorm, fused QKV,
           F.scaled_dot_product_attention(is_causal=True), a SwiGLU MLP of the same width H, untied
           head -- the same d, L, heads, H and non-embedding parameter count as the torchtitan model --
           with the plainest loop: x, y from a pre-built token tensor (the same batches ours reads), forward,
           cross-entropy, backward, torch.nn.utils.clip_grad_norm_, AdamW step, zero_grad.
- tt+plain: the plain loop around the torchtitan model (splits the gap into loop vs model), with --diag.

FLOPs per token = 6 * (N + d * V) + 12 * L * d * seq: N = non-embedding parameters (the law's N), d * V the
output head (the embedding lookup is not a matmul), and attention's QK^T and AV matmuls counted over the
full seq x seq square (PaLM's convention, not halved for the causal mask). MFU = FLOPs/s over the fp32
matmul peak measured in this run: the best of several 2048^3 fp32 torch.matmul with the same threads.

The machine is shared: every number is a median over interleaved repetitions, and the ratio ours/plain is
the median of the per-repetition ratios (adjacent measurements see about the same load).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omegaconf import OmegaConf  # noqa: E402

from splitsweep.data import MIXTURE  # noqa: E402
from splitsweep.data.phonebook import Phonebook  # noqa: E402
from splitsweep.distributed import DistEnv  # noqa: E402
from splitsweep.model import ModelSpec, build_model  # noqa: E402
from splitsweep.schedule import Schedule  # noqa: E402
from splitsweep.train import BatchSpec, TrainingPath, Trainer  # noqa: E402


# ----------------------------------------------------------------------------- the plain GPT
class Block(nn.Module):
    def __init__(self, d: int, n_heads: int, hidden: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.RMSNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.ln2 = nn.RMSNorm(d, eps=1e-5)
        self.fc = nn.Linear(d, 2 * hidden, bias=False)  # gate and up, fused
        self.down = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        gate, up = self.fc(self.ln2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class GPT(nn.Module):
    def __init__(self, vocab: int, seq_len: int, d: int, n_layers: int, n_heads: int, hidden: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(seq_len, d)
        self.blocks = nn.ModuleList(Block(d, n_heads, hidden) for _ in range(n_layers))
        self.ln_f = nn.RMSNorm(d, eps=1e-5)
        self.head = nn.Linear(d, vocab, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("proj.weight", "down.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def non_embedding_params(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith(("wte", "wpe", "head")))


def plain_loop(model, opt, data: torch.Tensor, first: int, steps: int, lr_at, grad_clip: float) -> float:
    """nanoGPT's inner loop, minus its logging: returns the last loss."""
    loss = None
    for step in range(first, first + steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch = data[step % len(data)]
        x, y = batch[:, :-1], batch[:, 1:]
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return float(loss.detach())


# ----------------------------------------------------------------------------- measurements
def matmul_peak(n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of an n x n @ n x n torch.matmul in `dtype`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def load_spec(name: str) -> ModelSpec:
    return ModelSpec.from_config(OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml"))


class Variant:
    def __init__(self, name, run):
        self.name, self.run, self.times, self.loss = name, run, [], float("nan")


def make_variants(spec: ModelSpec, args, source, data, env) -> list[Variant]:
    train_cfg = OmegaConf.load(ROOT / "conf" / "train" / "cpu.yaml")
    o = train_cfg.optimizer
    opt_kw = dict(betas=tuple(o.betas), eps=float(o.eps), weight_decay=float(o.weight_decay))
    schedule = Schedule("wsd", float(train_cfg.lr), int(train_cfg.warmup_steps), float(train_cfg.min_lr_factor))
    batch = BatchSpec(args.batch, args.batch, args.seq_len)
    horizon = 10 ** 6  # a seed path longer than the run: warmup, then constant lr on the mixture

    def lr_at(step):
        return schedule.lr(step, horizon, 0)

    variants = []
    # ours: exactly what a seed job runs (Worker.build + Trainer.train), minus checkpoints and W&B
    model = build_model(spec, source.vocab_size, args.seq_len, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=schedule.peak_lr, **opt_kw)
    trainer = Trainer(model, opt, source, schedule, batch, env, grad_clip=float(train_cfg.grad_clip))
    path = TrainingPath(horizon, 0, MIXTURE)
    state = {"ours": 0}

    def run_ours(steps):
        s = state["ours"]
        seen = {}
        with contextlib.redirect_stdout(io.StringIO()):  # the final-step progress line
            # log= as a job passes it (the per-step metrics dict); here it only keeps the loss
            trainer.train(path, s, s + steps, "bench", log=lambda step, m: seen.update(m),
                          progress_every_s=1e9)
        state["ours"] = s + steps
        return seen["train/loss"]

    variants.append(Variant("ours", run_ours))

    gpt = GPT(source.vocab_size, args.seq_len, spec.dim, spec.n_layers, spec.n_heads, spec.ffn_hidden())
    assert gpt.non_embedding_params() == spec.non_embedding_params(), \
        (gpt.non_embedding_params(), spec.non_embedding_params())

    def plain_variant(name, model):
        # The same minimal loop for the plain GPT and (with --diag) for the torchtitan model.
        optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.peak_lr, **opt_kw)
        state[name] = 0

        def run(steps):
            s = state[name]
            state[name] = s + steps
            return plain_loop(model, optimizer, data, s, steps, lr_at, float(train_cfg.grad_clip))

        return Variant(name, run)

    variants.append(plain_variant("plain", gpt))
    if args.diag:
        variants.append(plain_variant("tt+plain", build_model(spec, source.vocab_size, args.seq_len, seed=0)))
    return variants


def profile(variants, steps: int):
    from torch.profiler import ProfilerActivity, profile as tprofile
    for v in variants:
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            v.run(steps)
        print(f"\n--- profile: {v.name} ({steps} steps) ---")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


def bench_model(name: str, args, peaks: list[float]) -> dict:
    spec = load_spec(name)
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    # The default sweep's data: the phonebook of conf/data/phonebook.yaml.
    dcfg = OmegaConf.load(ROOT / "conf" / "data" / "phonebook.yaml")
    source = Phonebook.from_config(dcfg, seq_len=args.seq_len, seed=0)
    total_steps = args.steps * (args.reps + 1) + (args.profile_steps if args.profile else 0)
    # The plain loop's token tensor: the very batches ours reads, built once up front (as nanoGPT's
    # memmap would hold them); ours builds each batch from the source inside its step.
    data = torch.from_numpy(np.stack([source.sequences(MIXTURE, s * args.batch, args.batch)
                                      for s in range(total_steps)]))
    variants = make_variants(spec, args, source, data, env)
    tokens_per_chunk = args.steps * args.batch * args.seq_len

    for v in variants:  # warm-up chunk (allocator, first-call overheads), not timed
        v.run(args.steps)
    ratios = {v.name: [] for v in variants[1:]}
    for rep in range(args.reps):
        order = variants[rep % len(variants):] + variants[:rep % len(variants)]
        for v in order:
            t0 = time.perf_counter()
            v.loss = v.run(args.steps)
            v.times.append(time.perf_counter() - t0)
        peaks.append(matmul_peak())
        ours = variants[0].times[-1]
        for v in variants[1:]:
            ratios[v.name].append(v.times[-1] / ours)  # tokens/s ours / tokens/s other
    if args.profile and name in args.profile:
        profile(variants, args.profile_steps)

    n = spec.non_embedding_params()
    flops_tok = 6 * (n + spec.dim * source.vocab_size) + 12 * spec.n_layers * spec.dim * args.seq_len
    out = {"model": name, "N": n, "d": spec.dim, "L": spec.n_layers, "heads": spec.n_heads,
           "H": spec.ffn_hidden(), "flops_per_token": flops_tok, "variants": {}}
    for v in variants:
        tps = [tokens_per_chunk / t for t in v.times]
        out["variants"][v.name] = {"tokens_s": statistics.median(tps), "min": min(tps), "max": max(tps),
                                   "loss": v.loss}
    out["ratio"] = {k: statistics.median(r) for k, r in ratios.items()}
    out["ratio_all"] = ratios
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llama_886k,llama_5m")
    ap.add_argument("--batch", type=int, default=16, help="sequences per step (conf/train/cpu.yaml: 16)")
    ap.add_argument("--seq-len", type=int, default=128, help="conf/train/cpu.yaml: 128")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per timed chunk")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per variant")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--diag", action="store_true", help="also time the plain loop around the torchtitan model")
    ap.add_argument("--profile", default="", help="comma list of models to profile after timing")
    ap.add_argument("--profile-steps", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    peaks = [matmul_peak()]
    results = [bench_model(m, args, peaks) for m in args.models.split(",")]
    peaks.append(matmul_peak())
    peak = max(peaks)

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} x seq "
          f"{args.seq_len}, {args.steps} steps x {args.reps} interleaved reps per variant")
    print(f"fp32 matmul peak (2048^3, best of {len(peaks)} measurements in this run): {peak:.1f} GFLOP/s "
          f"(median {statistics.median(peaks):.1f})")
    for r in results:
        print(f"\n{r['model']}: N={r['N']:,} (non-embedding), d={r['d']} L={r['L']} heads={r['heads']} "
              f"H={r['H']}; {r['flops_per_token'] / 1e6:.2f} MFLOP/token")
        print(f"  {'variant':10s}{'tokens/s':>10s}{'(min..max)':>18s}{'GFLOP/s':>9s}{'MFU':>7s}{'loss':>8s}")
        for name, v in r["variants"].items():
            gf = v["tokens_s"] * r["flops_per_token"] / 1e9
            span = f"({v['min']:,.0f}..{v['max']:,.0f})"
            print(f"  {name:10s}{v['tokens_s']:>10,.0f}{span:>18s}"
                  f"{gf:>9.1f}{gf / peak:>7.1%}{v['loss']:>8.3f}")
        for name, ratio in r["ratio"].items():
            per = ", ".join(f"{x:.3f}" for x in r["ratio_all"][name])
            print(f"  ours / {name}: {ratio:.3f} (per rep: {per})" + ("   goal >= 0.9" if name == "plain" else ""))


if __name__ == "__main__":
    main()
