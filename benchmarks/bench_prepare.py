"""Preparation throughput against a plain batch encode, and peak memory, on a corpus made by repeating
the local text corpus (splitsweep/data/local_corpus.py) up to a size.

  python benchmarks/bench_prepare.py --sizes 10,100 --out /tmp/bench_prepare
  python benchmarks/bench_prepare.py --sizes 30 --num-proc 1,2 --modes prepare   # data.num_proc side by side

Each measurement runs in its own process, so its peak RSS (ru_maxrss) is its own:
  encode   json.loads of every line + `Tokenizer.encode_batch_fast` in batches of 1000 documents
           (the floor: tokenization alone, nothing written)
  prepare  `data=hf` preparation through `datasets.load_dataset` (Arrow conversion included), domain
           labels, tokenization (by data.num_proc processes), held-out split by document, flat shards, then
           packing at seq_len 256
Both use the same tokenizer file (a byte-level BPE trained once, not timed).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_corpus(out: Path, mb: float) -> Path:
    """JSON Lines of local text, repeated until `mb` MB of text (4 domains, nested meta.source)."""
    from splitsweep.data import local_corpus

    d = out / f"corpus_{int(mb)}mb"
    if (d / "done").exists():
        return d
    base = out / "base"
    if not base.exists():
        local_corpus.build(base, mb_per_domain=2.0, shards=1)
    rows = [json.loads(line) for line in (base / "corpus-00.jsonl").read_text().splitlines()]
    d.mkdir(parents=True, exist_ok=True)
    target, size, rep = mb * 1e6, 0, 0
    with open(d / "corpus.jsonl", "w") as f:
        while size < target:
            for row in rows:
                text = row["text"] if rep == 0 else f"[copy {rep}]\n" + row["text"]
                f.write(json.dumps({"text": text, "meta": row["meta"]}) + "\n")
                size += len(text.encode())
                if size >= target:
                    break
            rep += 1
    (d / "done").write_text(str(size))
    return d


def text_bytes(corpus: Path) -> int:
    return int((corpus / "done").read_text())


def run_encode(corpus: Path, tokenizer: Path) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    t0 = time.perf_counter()
    n_tokens, batch = 0, []
    with open(corpus / "corpus.jsonl") as f:
        for line in f:
            batch.append(json.loads(line)["text"])
            if len(batch) == 1000:
                n_tokens += sum(len(e.ids) for e in tok.encode_batch_fast(batch))
                batch = []
    if batch:
        n_tokens += sum(len(e.ids) for e in tok.encode_batch_fast(batch))
    return {"seconds": time.perf_counter() - t0, "tokens": n_tokens}


def run_prepare(corpus: Path, tokenizer: Path, store: Path, num_proc: int = 1) -> dict:
    from omegaconf import OmegaConf

    from splitsweep.data.prepare import pack, prepare

    cfg = OmegaConf.create({
        "kind": "hf", "path": "json", "data_files": str(corpus / "corpus.jsonl"), "split": "train",
        "streaming": False, "text_field": "text", "domain_field": "meta.source", "domains": None,
        "tokenizer": {"path": str(tokenizer), "vocab_size": None}, "heldout_tokens": 65536,
        "data_seed": 0, "batch_documents": 1000, "progress": False, "cache_dir": str(store),
        "clustering": {}, "num_proc": num_proc})
    t0 = time.perf_counter()
    prepared = prepare(cfg)
    t1 = time.perf_counter()
    pack(prepared, 256, progress=False)
    t2 = time.perf_counter()
    manifest = json.loads((prepared / "manifest.json").read_text())
    tokens = sum(v["train_tokens"] + v["heldout_tokens"] for v in manifest["per_domain"].values())
    return {"seconds": t2 - t0, "prepare_s": t1 - t0, "pack_s": t2 - t1, "tokens": tokens}


def child(mode: str, corpus: Path, tokenizer: Path, store: Path) -> None:
    num_proc = int(mode.split(":")[1]) if ":" in mode else 1
    mode = mode.split(":")[0]
    if mode == "prepare":
        import splitsweep.data.prepare  # noqa: F401  (imports torch through splitsweep.plan)
    else:
        import tokenizers  # noqa: F401
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = run_encode(corpus, tokenizer) if mode == "encode" else run_prepare(corpus, tokenizer, store, num_proc)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["import_rss_mb"] = base_rss
    print(json.dumps(out))


def measure(mode: str, corpus: Path, tokenizer: Path, store: Path) -> dict:
    shutil.rmtree(store, ignore_errors=True)
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(corpus), str(tokenizer), str(store)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="10,100", help="corpus sizes in MB of text")
    p.add_argument("--out", default="/tmp/bench_prepare")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--num-proc", default="1", help="data.num_proc values of the prepare mode, e.g. 1,2")
    p.add_argument("--modes", default="encode,prepare")
    p.add_argument("--reps", type=int, default=1, help="repetitions, in alternating order")
    p.add_argument("--child", nargs=4, metavar=("MODE", "CORPUS", "TOKENIZER", "STORE"))
    a = p.parse_args()
    if a.child:
        mode, corpus, tokenizer, store = a.child
        return child(mode, Path(corpus), Path(tokenizer), Path(store))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tok_path = out / f"bpe{a.vocab}.json"
    if not tok_path.exists():
        from splitsweep.data.tokenizer import train_bpe

        base = make_corpus(out, 10)
        texts = [json.loads(line)["text"] for line in (base / "corpus.jsonl").read_text().splitlines()][:3000]
        train_bpe(texts, a.vocab).save(str(tok_path))
    rows = []
    for mb in [float(s) for s in a.sizes.split(",")]:
        corpus = make_corpus(out, mb)
        nbytes = text_bytes(corpus)
        modes = [m if m == "encode" else f"prepare:{n}" for m in a.modes.split(",")
                 for n in (a.num_proc.split(",") if m == "prepare" else [1])]
        for rep in range(a.reps):
            for mode in (modes if rep % 2 == 0 else modes[::-1]):  # adjacent runs see about the same load
                r = measure(mode, corpus, tok_path, out / "store")
                r.update(mode=mode.replace(":", " num_proc="), mb=nbytes / 1e6, mb_per_s=nbytes / 1e6 / r["seconds"])
                rows.append(r)
                print(json.dumps(r), flush=True)
    print("\n| corpus MB | mode | seconds | MB/s | tokens | peak RSS MB | RSS after imports MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mb']:.0f} | {r['mode']} | {r['seconds']:.1f} | {r['mb_per_s']:.2f} | {r['tokens']:,} | "
              f"{r['peak_rss_mb']:.0f} | {r['import_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
