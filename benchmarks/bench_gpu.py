"""GPU benchmark, ready to run unchanged on a CUDA machine (it cannot run on the CPU machines we develop on):
our training loop against torchtitan's own Trainer, same model, batch, precision and parallelism.

    python benchmarks/bench_gpu.py                     # llama_20m, llama_127m, llama_1b; 2-rank FSDP if 2 GPUs
    python benchmarks/bench_gpu.py --sizes llama_20m --steps 10    # quick
    python benchmarks/bench_gpu.py --prepare-only      # no GPU needed: build the assets, check both configs

What runs, per size (each measurement its own `torchrun` process, so one OOM cannot spoil the others):
- ours:       `splitsweep.train.Trainer` on the model `splitsweep.job` builds with `train=gpu`'s layout:
              bf16 (torch.autocast on 1 GPU, FSDP2 MixedPrecisionPolicy(bf16, fp32 reduce) on 2), per-block
              torch.compile, torchtitan's selective (per-op) activation checkpointing, foreach AdamW,
              host syncs every `--sync-every` steps; random tokens of the tokenizer's vocabulary.
- torchtitan: `torchtitan.train.Trainer` (0.2.2) with the same flavor registered in `llama3_args`, the same
              local batch x seq, mixed_precision_param=bfloat16, compile (model, loss), selective op AC, on
              torchtitan's c4_test loader pointed at a generated local json corpus, tokenized by a BPE
              tokenizer.json built here (no downloads).
Timing: `--warmup` steps (compilation), then `--steps` steps between two torch.cuda.synchronize().
Reported: tokens/s per GPU, MFU = tokens/s x FLOPs/token over the bf16 matmul peak measured in this run
(best 8192^3 bf16 matmul), peak memory (torch.cuda.max_memory_allocated), and ours/torchtitan.
FLOPs/token = 6·(N + d·V) + 12·L·d·seq, as bench_train.py.

Failing loudly: with no CUDA GPU it exits 2 before doing anything; any measurement that fails (OOM, an
import error, a worker without a result) is printed with its error and the script exits 1 at the end.
Expected output (format; numbers are the GPU's):

    GPU NVIDIA H100 80GB HBM3 x 2; bf16 matmul peak 7.1e+14 FLOP/s (measured)
    | size | ranks | loop | tokens/s/GPU | MFU | peak mem GiB | ours / torchtitan |
    |---|---|---|---|---|---|---|
    | llama_20m | 1 | ours | ... | ...% | ... | 0.97x |
    | llama_20m | 1 | torchtitan | ... | ...% | ... | |
    ...
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULT = "BENCH_GPU_RESULT "


def load_spec(name: str):
    from omegaconf import OmegaConf

    from splitsweep.model import ModelSpec

    return ModelSpec.from_config(OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml"))


# ------------------------------------------------------------------ assets: a local corpus and a tokenizer
def prepare_assets(folder: Path, vocab_size: int, docs: int = 4000) -> tuple[Path, Path, int]:
    """(dataset dir, tokenizer dir, vocab size): json lines of {"text"} from a random word list, and a BPE
    tokenizer.json (+ tokenizer_config.json) trained on them with the `tokenizers` library."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    data, tok_dir = folder / "corpus", folder / "tokenizer"
    data.mkdir(parents=True, exist_ok=True)
    tok_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(20000)]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(300, 1200))) for _ in range(docs)]
    with open(data / "train.json", "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts[:1000], trainers.BpeTrainer(vocab_size=vocab_size,
                                                            special_tokens=["<unk>", "<bos>", "<eos>"]))
    tok.save(str(tok_dir / "tokenizer.json"))
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<bos>", "eos_token": "<eos>", "add_bos_token": True, "add_eos_token": True}))
    return data, tok_dir, tok.get_vocab_size()


def torchtitan_args(args, size: str, data: Path, tok_dir: Path, dump: Path) -> list[str]:
    return ["--model.name", "llama3", "--model.flavor", size, "--model.hf_assets_path", str(tok_dir),
            "--training.local_batch_size", str(args.batch), "--training.seq_len", str(args.seq_len),
            "--training.steps", str(args.warmup + args.steps), "--training.dataset", "c4_test",
            "--training.dataset_path", str(data), "--training.mixed_precision_param", "bfloat16",
            "--parallelism.data_parallel_shard_degree", "-1", "--compile.enable", "--compile.components",
            "model,loss", "--activation_checkpoint.mode", "selective", "--activation_checkpoint.selective_ac_option",
            "op", "--lr_scheduler.warmup_steps", "2", "--metrics.log_freq", str(args.steps),
            "--job.dump_folder", str(dump)]


def register_flavor(size: str, vocab: int, seq_len: int) -> None:
    from torchtitan.models.llama3 import llama3_args

    llama3_args[size] = load_spec(size).model_args(vocab, seq_len)


# ------------------------------------------------------------------ workers (one per torchrun)
def worker_ours(args) -> dict:
    import torch

    from splitsweep.data import MIXTURE
    from splitsweep.distributed import init_distributed
    from splitsweep.model import build_model
    from splitsweep.parallelize import TrainLayout, adamw, parallelize
    from splitsweep.schedule import Schedule
    from splitsweep.train import BatchSpec, TrainingPath, Trainer

    class RandomTokens:
        """Tokens as a pure function of the sequence index, like the real sources."""

        def __init__(self, vocab, seq_len):
            self.vocab_size, self.seq_len = vocab, seq_len

        def sequences(self, stream, start, count, offset=None):
            import numpy as np

            g = np.random.default_rng(start)
            return g.integers(0, self.vocab_size, (count, self.seq_len + 1), dtype=np.int64)

    env = init_distributed("cuda")
    spec = load_spec(args.size)
    layout = TrainLayout(precision="bf16", compile=True, activation_checkpointing="selective")
    model = parallelize(build_model(spec, args.vocab, args.seq_len, seed=0), env, layout)
    opt = adamw(model, env, 3e-4, (0.9, 0.95), 1e-8, 0.1)
    batch = BatchSpec(args.batch * env.world_size, None, args.seq_len)
    trainer = Trainer(model, opt, RandomTokens(args.vocab, args.seq_len), Schedule("wsd", 3e-4, 2, 0.1), batch,
                      env, layout=layout, sync_every=args.sync_every)
    path = TrainingPath(10 ** 6, 0, MIXTURE)
    trainer.train(path, 0, args.warmup, "warmup", progress_every_s=1e9)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.train(path, args.warmup, args.warmup + args.steps, "timed", progress_every_s=1e9)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"tokens_per_s_per_gpu": args.steps * args.batch * args.seq_len / dt,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2 ** 30, "rank": env.rank}


def worker_torchtitan(args) -> dict:
    import torch
    from torchtitan.config import ConfigManager
    from torchtitan.tools.logging import init_logger
    from torchtitan.train import Trainer

    init_logger()
    register_flavor(args.size, args.vocab, args.seq_len)
    config = ConfigManager().parse_args(torchtitan_args(args, args.size, Path(args.data), Path(args.tokenizer),
                                                        Path(args.dump)))
    marks = {}

    class TimedTrainer(Trainer):
        def train_step(self, data_iterator):
            if self.step == args.warmup + 1:  # torchtitan counts from 1; the step about to run
                torch.cuda.synchronize()
                marks["t0"] = time.perf_counter()
            out = super().train_step(data_iterator)
            if self.step == args.warmup + args.steps:
                torch.cuda.synchronize()
                marks["t1"] = time.perf_counter()
            return out

    trainer = TimedTrainer(config)
    try:
        trainer.train()
    finally:
        trainer.close()
    if "t0" not in marks or "t1" not in marks:
        raise RuntimeError(f"torchtitan's Trainer did not run the timed steps (marks {marks})")
    return {"tokens_per_s_per_gpu": args.steps * args.batch * args.seq_len / (marks["t1"] - marks["t0"]),
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
            "rank": int(os.environ.get("RANK", 0))}


# ------------------------------------------------------------------ orchestration
def bf16_peak() -> float:
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(10):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def measure(args, loop: str, size: str, ranks: int, assets: dict, folder: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           str(Path(__file__).resolve()), "--worker", loop, "--size", size, "--vocab", str(assets["vocab"]),
           "--data", str(assets["data"]), "--tokenizer", str(assets["tokenizer"]),
           "--dump", str(folder / f"dump-{loop}-{size}-{ranks}"), "--batch", str(args.batch),
           "--seq-len", str(args.seq_len), "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--sync-every", str(args.sync_every)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    found = [json.loads(line[len(RESULT):]) for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"{loop} {size} x{ranks} failed (exit {proc.returncode}):\n"
                           + "\n".join((proc.stderr or proc.stdout).splitlines()[-25:]))
    rank0 = [r for r in found if r["rank"] == 0] or found
    return {"tokens_per_s_per_gpu": rank0[0]["tokens_per_s_per_gpu"],
            "peak_mem_gib": max(r["peak_mem_gib"] for r in found)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="llama_20m,llama_127m,llama_1b")
    ap.add_argument("--batch", type=int, default=4, help="sequences per GPU")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--sync-every", type=int, default=50)
    ap.add_argument("--vocab-size", type=int, default=32000, help="of the BPE tokenizer built for both loops")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--prepare-only", action="store_true", help="build assets and check configs; no GPU needed")
    ap.add_argument("--worker", choices=["ours", "torchtitan"], help=argparse.SUPPRESS)
    for hidden in ("--size", "--data", "--tokenizer", "--dump"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        result = (worker_ours if args.worker == "ours" else worker_torchtitan)(args)
        print(RESULT + json.dumps(result), flush=True)
        return

    import torch

    folder = Path(tempfile.mkdtemp(prefix="bench_gpu-"))
    sizes = args.sizes.split(",")
    if args.prepare_only:
        data, tok, vocab = prepare_assets(folder, args.vocab_size, docs=200)
        from torchtitan.config import ConfigManager
        from torchtitan.protocols.train_spec import get_train_spec

        for size in sizes:
            register_flavor(size, vocab, args.seq_len)
            cfg = ConfigManager().parse_args(torchtitan_args(args, size, data, tok, folder / "dump"))
            spec = load_spec(size)
            print(f"{size}: N = {spec.non_embedding_params():,}, torchtitan flavor {cfg.model.flavor} "
                  f"registered, batch {args.batch} x {args.seq_len}, vocab {vocab}")
        train_spec = get_train_spec("llama3")  # torchtitan's own tokenizer and loader read the assets
        loader = train_spec.build_dataloader_fn(dp_world_size=1, dp_rank=0, tokenizer=train_spec.build_tokenizer_fn(cfg),
                                                job_config=cfg)
        inputs, labels = next(iter(loader))
        if tuple(labels.shape) != (args.batch, args.seq_len) or int(labels.max()) >= vocab:
            raise SystemExit(f"bench_gpu: torchtitan's loader gave labels {tuple(labels.shape)}, max id "
                             f"{int(labels.max())} (vocab {vocab})")
        print(f"torchtitan's loader: a batch of {tuple(labels.shape)} tokens below {vocab}")
        print(f"assets in {folder}; configs parse. Run without --prepare-only on a CUDA machine.")
        return
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False); this benchmark measures GPUs "
              "only and has measured nothing. Use --prepare-only to check the setup.", file=sys.stderr)
        raise SystemExit(2)

    n_gpus = torch.cuda.device_count()
    data, tok, vocab = prepare_assets(folder, args.vocab_size)
    assets = {"data": data, "tokenizer": tok, "vocab": vocab}
    peak = bf16_peak()
    print(f"GPU {torch.cuda.get_device_name(0)} x {n_gpus}; bf16 matmul peak {peak:.2e} FLOP/s (measured)")
    print("| size | ranks | loop | tokens/s/GPU | MFU | peak mem GiB | ours / torchtitan |")
    print("|---|---|---|---|---|---|---|")
    failures = []
    runs = [(s, 1) for s in sizes] + ([(sizes[len(sizes) // 2], 2)] if n_gpus >= 2 else [])
    for size, ranks in runs:
        spec = load_spec(size)
        flops_tok = 6 * (spec.non_embedding_params() + spec.dim * vocab) + 12 * spec.n_layers * spec.dim * args.seq_len
        got = {}
        for loop in ("ours", "torchtitan"):
            try:
                got[loop] = measure(args, loop, size, ranks, assets, folder)
            except Exception as err:  # noqa: BLE001 -- report every failure, then exit 1
                failures.append(str(err))
                print(f"| {size} | {ranks} | {loop} | FAILED | | | |", flush=True)
        for loop, r in got.items():
            ratio = (f"{got['ours']['tokens_per_s_per_gpu'] / got['torchtitan']['tokens_per_s_per_gpu']:.2f}x"
                     if loop == "ours" and len(got) == 2 else "")
            print(f"| {size} | {ranks} | {loop} | {r['tokens_per_s_per_gpu']:,.0f} | "
                  f"{100 * r['tokens_per_s_per_gpu'] * flops_tok / peak:.1f}% | {r['peak_mem_gib']:.1f} | {ratio} |",
                  flush=True)
    if n_gpus < 2:
        print("(one GPU: the 2-rank FSDP run was not measured)")
    if failures:
        print("\n".join(["", "FAILED measurements:", *failures]), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
