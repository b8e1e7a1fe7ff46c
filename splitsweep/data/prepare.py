"""Preparation of a real-text data set, once per data config: read it through `datasets.load_dataset`
(a hub id, streamed or not, or local JSON Lines / Parquet / CSV / text files with globs), label every
document with its domain (a column, or a cluster), tokenize, split held-out text by document, and pack
fixed-length sequences into memory-mapped arrays per domain and split.

Layout under `data.cache_dir` (by default `${paths.store}/data`; the paths are layout.DataLayout's):
  tokenizers/<hash>/tokenizer.json        a trained byte-level BPE (hash of the sample and settings)
  clusters/<hash>/model.pkl, summary.md   the fitted c-BTM clustering and its summary
  <hash>/manifest.json                    token and document counts per domain and split
  <hash>/tokenizer.json                   the tokenizer the shards were made with
  <hash>/<d>/{train,heldout}.bin          flat token ids, documents in seeded order, EOS after each
  <hash>/packed-L<seq_len>/<d>/{train,heldout}.npy   [n, seq_len + 1] sequences; sequence i starts at
                                          token i * seq_len, so every token is a target exactly once
Every directory appears by one rename after it is fully written, under a lock, so two jobs starting at
once prepare it once, and a job never reads half-written shards.

For a corpus too big for one machine, prepare_array.py makes the same directory, byte for byte, with a SLURM
job array: each task runs `tokenize_documents` on parts of the documents, and `finish_prepared` (the split and
the manifest, shared with `_build`) runs once on the parts joined in document order.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
from ..errors import ConfigError
from ..identity import signature
from ..layout import MANIFEST, DataLayout
from ..steps import PreparedData, check_planned
from ..store import build_once, write_json_atomic
from ..typed_config import Section
from . import clustering as clus
from .tokenizer import cached_bpe, eos_id, load_tokenizer

PREP_VERSION = 1
# Held-out decontamination compares documents by their spans of this many tokens: about a line of text (80 bytes
# at a 512-token vocabulary; GPT-3's contamination check used 13 words). Shorter spans also match common phrases
# and code idioms, which are not duplicated documents.
OVERLAP_NGRAM = 32


@dataclasses.dataclass(frozen=True)
class ClusteringArgs:
    n_clusters: int
    sample_documents: int
    """tf-idf, SVD and balanced k-means are fitted on the first documents read"""
    svd_components: int
    max_features: int
    seed: int


@dataclasses.dataclass(frozen=True)
class TokenizerArgs:
    path: str | None
    """a tokenizers JSON file; None: train a byte-level BPE on a sample of the mixture"""
    vocab_size: int | None
    sample_documents: int
    min_frequency: int


@dataclasses.dataclass(frozen=True)
class HFDataArgs(Section):
    """data=hf, typed (conf/data/hf.yaml declares the keys, their defaults and meanings)."""
    kind: str
    path: str
    name: str | None
    data_files: object
    data_dir: str | None
    split: str
    streaming: bool
    revision: str | None
    max_documents: int | None
    text_field: str
    domain_field: str | None
    domains: list | None
    weights: object
    clustering: ClusteringArgs
    tokenizer: TokenizerArgs
    heldout_tokens: int
    heldout_max_overlap: float | None
    """hold out only documents with at most this share of their OVERLAP_NGRAM-token spans found in another
    document (None: any document)"""
    data_seed: int
    allow_repetition: bool
    batch_documents: int
    num_proc: int
    progress: bool
    cache_dir: str
    section = "data"


def _progress(cfg, **kw):
    from tqdm.auto import tqdm

    return tqdm(disable=not cfg.progress, file=sys.stderr, mininterval=1.0, **kw)


# ------------------------------------------------------------------------------------------ reading
def _local_files(cfg) -> list:
    """(path, size, mtime) of every local file the config names, so edited files make a new preparation."""
    patterns = []
    files = cfg.data_files
    if isinstance(files, str):
        patterns = [files]
    elif isinstance(files, list):
        patterns = files
    elif isinstance(files, dict):
        patterns = [p for v in files.values() for p in ([v] if isinstance(v, str) else v)]
    if os.path.exists(cfg.path):
        patterns.append(os.path.join(cfg.path, "**") if os.path.isdir(cfg.path) else cfg.path)
    out = []
    for pattern in patterns:
        for p in sorted(glob.glob(str(pattern), recursive=True)):
            if os.path.isfile(p):
                st = os.stat(p)
                out.append((os.path.abspath(p), st.st_size, st.st_mtime_ns))
    return out


def source_identity(cfg) -> dict:
    return {"path": cfg.path, "name": cfg.name, "data_files": cfg.data_files, "data_dir": cfg.data_dir,
            "split": cfg.split, "revision": cfg.revision, "max_documents": cfg.max_documents,
            "text_field": cfg.text_field, "local_files": _local_files(cfg)}


def load(cfg):
    """The one `datasets.load_dataset` call, for hub ids and local files alike."""
    from datasets import load_dataset

    kwargs = {"path": cfg.path, "name": cfg.name, "data_files": cfg.data_files, "data_dir": cfg.data_dir,
              "split": cfg.split, "streaming": cfg.streaming, "revision": cfg.revision}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if not kwargs["streaming"]:
        kwargs["cache_dir"] = str(DataLayout(cfg.cache_dir).hf_datasets())
    try:
        return load_dataset(**kwargs)
    except Exception as err:  # datasets raises many types for a wrong id, config, split or file
        raise ConfigError(f"data: could not load {kwargs['path']!r} (name={cfg.name}, "
                          f"data_files={kwargs.get('data_files')}, split={kwargs['split']}): "
                          f"{type(err).__name__}: {err}") from err


def _column(batch: dict, field: str, what: str) -> list:
    if field in batch:
        return batch[field]
    head, *rest = field.split(".")
    if head not in batch:
        raise ConfigError(f"data.{what}={field!r}: no column {head!r}; this data set's columns are "
                          f"{sorted(batch)}")
    values = []
    for i, v in enumerate(batch[head]):
        for j, key in enumerate(rest):
            if not isinstance(v, dict) or key not in v:
                inside = sorted(v) if isinstance(v, dict) else type(v).__name__
                raise ConfigError(f"data.{what}={field!r}: a document has no key {key!r} under "
                                  f"{'.'.join([head] + rest[:j])!r} (it holds {inside})")
            v = v[key]
        values.append(v)
    return values


def read_batches(cfg, batch_size: int = 1000, documents: range | None = None
                 ) -> Iterator[tuple[list[str], list | None]]:
    """(texts, labels or None) in batches, checked: texts must be strings, labels present.

    `documents` (a range of document indices; it must start at a multiple of batch_size) reads only those: the
    batches are then exactly the ones a full read yields there, and a document is named by its index in the
    whole data set. A job array's task reads its part this way (prepare_array.py)."""
    ds = load(cfg)
    limit = cfg.max_documents
    seen = 0
    if documents is not None:
        ds = ds.select(documents)
        seen = documents.start
    text_field, domain_field = cfg.text_field, cfg.domain_field
    for batch in ds.iter(batch_size=batch_size):
        texts = _column(batch, text_field, "text_field")
        if limit is not None and seen + len(texts) > limit:
            keep = limit - seen
            batch = {k: v[:keep] for k, v in batch.items()}
            texts = texts[:keep]
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ConfigError(f"data.text_field={text_field!r}: document {seen + i} holds a "
                                  f"{type(t).__name__} ({str(t)[:60]!r}), not text")
        labels = None
        if domain_field:
            labels = [None if v is None else str(v) for v in _column(batch, domain_field, "domain_field")]
        seen += len(texts)
        yield texts, labels
        if limit is not None and seen >= limit:
            return


# ------------------------------------------------------------------------------------------ domains
class Labeler:
    """Domain of each document: a column's value, or its cluster ("c0".."c{K-1}")."""

    def __init__(self, cfg):
        self.cfg = cfg = HFDataArgs.of(cfg)
        self.field = cfg.domain_field
        self.model = None
        self.cluster_dir = None
        if not self.field:
            c = cfg.clustering
            key = signature({"source": source_identity(cfg), "clustering": dataclasses.asdict(c), "v": PREP_VERSION})

            def sample():
                texts = []
                for batch, _ in read_batches(cfg):
                    texts += [t for t in batch if t.strip()]
                    if len(texts) >= c.sample_documents:
                        break
                if len(texts) < c.n_clusters:
                    raise ConfigError(f"data.clustering: {len(texts)} non-empty documents cannot make "
                                      f"{c.n_clusters} clusters")
                return texts[: c.sample_documents]

            self.model, self.cluster_dir = clus.cached_model(DataLayout(cfg.cache_dir).clusters(), key, sample, c)
            self.key = key

    def identity(self) -> dict:
        return {"domain_field": self.field} if self.field else {"clusters": self.key}

    def __call__(self, texts: list[str], labels: list | None) -> list:
        if self.field:
            return labels
        return [f"c{int(c)}" for c in self.model.predict(texts)] if texts else []

    def all_domains(self) -> list[str] | None:
        return None if self.field else [f"c{k}" for k in range(self.cfg.clustering.n_clusters)]


def kept_documents(cfg, labeler: Labeler, batch_size: int = 1000, seen: set | None = None,
                   documents: range | None = None):
    """(texts, labels, empty counts) batches of the kept domains, empty documents dropped and counted;
    every label met, kept or not, goes into `seen`. `documents`: only those (see read_batches)."""
    keep = set(cfg.domains or []) or None
    for texts, labels in read_batches(cfg, batch_size, documents):
        labels = labeler(texts, labels)
        if seen is not None:
            seen.update(lab for lab in labels if lab is not None)
        out_t, out_l, empty = [], [], {}
        for t, lab in zip(texts, labels):
            if lab is None or (keep is not None and lab not in keep):
                continue
            if not t.strip():
                empty[lab] = empty.get(lab, 0) + 1
                continue
            out_t.append(t)
            out_l.append(lab)
        yield out_t, out_l, empty


# ------------------------------------------------------------------------------------------ tokenizer
def resolve_tokenizer(cfg, labeler: Labeler) -> tuple[Path, dict, int]:
    """(tokenizer file, its identity, the model's vocab size), checked against data.tokenizer.vocab_size."""
    cfg = HFDataArgs.of(cfg)
    t = cfg.tokenizer
    want = t.vocab_size
    if t.path:
        path = Path(t.path)
        if not path.is_file():
            raise ConfigError(f"data.tokenizer.path={str(path)!r} does not exist")
        try:
            tok = load_tokenizer(path)
        except Exception as err:
            raise ConfigError(f"data.tokenizer.path={str(path)!r} is not a tokenizers file: {err}") from err
        size = tok.get_vocab_size(with_added_tokens=True)
        if want is not None and want != size:
            raise ConfigError(f"data.tokenizer.vocab_size={want} does not match the vocabulary of "
                              f"{str(path)!r} ({size} tokens); the model's embedding is sized from it — set "
                              f"data.tokenizer.vocab_size={size} or null")
        try:
            eos_id(tok)
        except ValueError as err:
            raise ConfigError(f"data.tokenizer.path={str(path)!r}: {err}") from err
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return path, {"file": digest}, size
    if want is None or want < 257:
        raise ConfigError(f"data.tokenizer.vocab_size={want}: a trained byte-level BPE needs at least 257 "
                          f"(256 bytes + <|endoftext|>)")
    recipe = {"source": source_identity(cfg), "domains": cfg.domains, "labels": labeler.identity(),
              "sample_documents": t.sample_documents}

    def sample():
        texts = []
        for batch, _, _ in kept_documents(cfg, labeler):
            texts += batch
            if len(texts) >= t.sample_documents:
                break
        if not texts:
            raise ConfigError("data: no non-empty documents to train a tokenizer on")
        return texts[: t.sample_documents]

    path = cached_bpe(DataLayout(cfg.cache_dir).tokenizers(), recipe, sample, want, t.min_frequency)
    return path, {"trained": path.parent.name}, want


# ------------------------------------------------------------------------------------------ preparation
def prepared_step(cfg, labeler: Labeler, tok_identity: dict) -> PreparedData:
    cfg = HFDataArgs.of(cfg)
    return PreparedData(PREP_VERSION, source_identity(cfg), labeler.identity(), cfg.domains, tok_identity,
                        cfg.heldout_tokens, cfg.data_seed, heldout_overlap(cfg))


def heldout_overlap(cfg) -> dict | None:
    """The held-out decontamination of this config, as its identity records it."""
    m = cfg.heldout_max_overlap
    return None if m is None else {"max": float(m), "ngram": OVERLAP_NGRAM}


def prepared_key(cfg, labeler: Labeler, tok_identity: dict) -> str:
    return prepared_step(cfg, labeler, tok_identity).identity


def prepare(cfg, expect: PreparedData | None = None) -> Path:
    """The prepared directory of this data config (built now unless a job built it before). `expect`: the step
    the caller means to run (PreparedData.run), refused if this config describes another."""
    cfg = HFDataArgs.of(cfg)
    labeler = Labeler(cfg)
    tok_path, tok_identity, vocab_size = resolve_tokenizer(cfg, labeler)
    step = prepared_step(cfg, labeler, tok_identity)
    if expect is not None:
        check_planned(expect, step)
    key, cache = step.identity, DataLayout(cfg.cache_dir)
    return build_once(cache.prepared(key), lambda tmp: _build(cfg, labeler, tok_path, vocab_size, tmp, key),
                      is_built=lambda p: (p / MANIFEST).exists(), lock=cache.prepared_lock(key))


def token_dtype(vocab_size: int):
    """The narrowest unsigned type holding every token id of the vocabulary."""
    return np.uint16 if vocab_size <= 65536 else np.uint32


def _build(cfg, labeler: Labeler, tok_path: Path, vocab_size: int, out: Path, key: str) -> None:
    """The prepared directory in one process: every document tokenized in the order read, then split."""
    out.mkdir(parents=True)
    shutil.copy(tok_path, out / "tokenizer.json")
    raw, n_docs, seen = tokenize_documents(cfg, labeler, tok_path, token_dtype(vocab_size), out)
    finish_prepared(cfg, labeler, tok_path, vocab_size, raw, n_docs, seen, out, key)


def tokenize_documents(cfg, labeler: Labeler, tok_path: Path, dtype, out: Path, documents: range | None = None):
    """(raw, kept documents, labels seen) of the documents read (all, or the range `documents`): per label, its
    documents' token ids + EOS appended in the order read to `out/.raw-<i>.bin`, with their lengths, UTF-8
    bytes and the count of empty documents dropped. A job array's part is this on its document range."""
    eos = eos_id(load_tokenizer(tok_path))
    raw: dict[str, dict] = {}
    n_docs = 0
    seen: set = set()
    bar = _progress(cfg, desc="tokenizing", unit="doc")
    batches = kept_documents(cfg, labeler, cfg.batch_documents, seen, documents)
    num_proc = cfg.num_proc
    for (texts, labels, empty), encoded in encoded_in_order(batches, tok_path, dtype, eos, num_proc):
        for lab, n in empty.items():
            _raw_entry(raw, lab, out)["empty_documents"] += n
        for lab, (n_bytes, arr) in zip(labels, encoded):
            entry = _raw_entry(raw, lab, out)
            entry["lengths"].append(len(arr))
            entry["bytes"] += n_bytes
            entry["chunks"].append(arr)
            entry["pending"] += len(arr)
            if entry["pending"] > 1 << 20:
                _flush(entry)
        n_docs += len(texts)
        bar.update(len(texts))
    bar.close()
    for entry in raw.values():
        _flush(entry)
        entry["file"].close()
    return raw, n_docs, seen


def finish_prepared(cfg, labeler: Labeler, tok_path: Path, vocab_size: int, raw: dict, n_docs: int, seen: set,
                    out: Path, key: str) -> None:
    """From the raw per-label token files (one process's, or a job array's parts joined in document order):
    the domains kept, each one's held-out documents drawn and both splits written, and the manifest. Everything
    here is a function of (raw, n_docs, seen) and the config, so equal inputs give equal bytes."""
    tok = load_tokenizer(tok_path)
    eos = eos_id(tok)
    dtype = token_dtype(vocab_size)
    wanted = cfg.domains
    found = sorted(lab for lab, e in raw.items() if len(e["lengths"]))
    if not found and not (wanted and set(wanted) - seen):
        raise ConfigError(f"data: no non-empty text in field {cfg.text_field!r} of the kept documents"
                          + (f" (data.domains={wanted})" if wanted else ""))
    if wanted:
        missing = [d for d in wanted if d not in found]
        if missing:
            where = f"column {cfg.domain_field!r}" if cfg.domain_field else "the clusters"
            raise ConfigError(f"data.domains: {missing} not found in {where}; it holds {sorted(seen)}"
                              + ("" if cfg.domain_field else " (clusters are named c0..c{K-1})"))
        domains = [str(d) for d in wanted]
    else:
        domains = labeler.all_domains() or found
        domains = [d for d in domains if d in found]

    heldout_tokens, seed = cfg.heldout_tokens, cfg.data_seed
    manifest = {"key": key, "version": PREP_VERSION, "domains": domains, "vocab_size": vocab_size,
                "tokenizer_vocab": tok.get_vocab_size(with_added_tokens=True), "eos_id": eos,
                "dtype": np.dtype(dtype).name, "documents_read": n_docs, "heldout_tokens_target": heldout_tokens,
                "cluster_dir": str(labeler.cluster_dir) if labeler.cluster_dir else None, "per_domain": {}}
    bar = _progress(cfg, desc="splitting", unit="domain", total=len(domains))
    for k, name in enumerate(domains):
        e = raw[name]
        lengths = np.asarray(e["lengths"], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        order = np.random.default_rng([seed, 17, k]).permutation(len(lengths))
        src = np.memmap(e["path"], dtype=dtype, mode="r")
        overlap = None
        if cfg.heldout_max_overlap is not None:
            overlap = shared_span_fractions(src, lengths, OVERLAP_NGRAM)
        held, train = _heldout_documents(name, order, lengths, heldout_tokens, overlap, cfg.heldout_max_overlap)
        d = out / f"d{k}"
        d.mkdir()
        counts = {}
        for split, docs in (("heldout", held), ("train", train)):
            total = int(lengths[docs].sum())
            dst = np.memmap(d / f"{split}.bin", dtype=dtype, mode="w+", shape=(total,))
            pos = 0
            for i in docs:
                dst[pos:pos + lengths[i]] = src[starts[i]:starts[i] + lengths[i]]
                pos += lengths[i]
            dst.flush()
            del dst
            counts[split] = {"tokens": total, "documents": int(len(docs))}
        del src
        os.unlink(e["path"])
        manifest["per_domain"][name] = {
            "dir": f"d{k}", "bytes": e["bytes"], "documents": int(len(lengths)),
            "empty_documents": e["empty_documents"], "train_tokens": counts["train"]["tokens"],
            "train_documents": counts["train"]["documents"], "heldout_tokens": counts["heldout"]["tokens"],
            "heldout_documents": counts["heldout"]["documents"],
            "heldout_doc_ids": sorted(int(i) for i in held)}
        if overlap is not None:
            manifest["per_domain"][name]["overlap"] = {
                "eligible_documents": int(np.sum(overlap <= cfg.heldout_max_overlap)),
                "mean_heldout": float(overlap[held].mean()), "mean_train": float(overlap[train].mean()),
                "mean_all": float(overlap.mean())}
        bar.update(1)
    bar.close()
    for name, e in raw.items():  # labels found but not kept (clusters/columns outside data.domains)
        if name not in domains and os.path.exists(e["path"]):
            os.unlink(e["path"])
    write_json_atomic(out / MANIFEST, manifest)


def _heldout_documents(name, order, lengths, heldout_tokens, overlap=None, max_overlap=None):
    """(held-out, training) document indices: the first documents of `order` until heldout_tokens, taking only
    those with overlap <= max_overlap when an overlap is given; every other document trains, in `order`."""
    eligible = order if overlap is None else order[overlap[order] <= max_overlap]
    cum = np.cumsum(lengths[eligible])
    n_held = int(np.searchsorted(cum, heldout_tokens) + 1) if heldout_tokens > 0 else 0
    held = eligible[:n_held]
    train = order[~np.isin(order, held)]
    if overlap is not None and (len(cum) == 0 or cum[-1] < heldout_tokens):
        raise ConfigError(
            f"data: domain {name!r} has {int(cum[-1]) if len(cum) else 0:,} tokens in {len(eligible)} documents "
            f"with at most {max_overlap:g} of their {OVERLAP_NGRAM}-token spans found in other documents "
            f"(data.heldout_max_overlap={max_overlap:g}), fewer than data.heldout_tokens={heldout_tokens:,}; "
            f"lower data.heldout_tokens or raise data.heldout_max_overlap")
    if len(train) == 0 or int(lengths[train].sum()) < 2:
        raise ConfigError(
            f"data: domain {name!r} is too small for data.heldout_tokens={heldout_tokens:,}: it has "
            f"{int(lengths.sum()):,} tokens in {len(lengths)} documents, and holding out whole documents "
            f"for {heldout_tokens:,} tokens leaves no training text; lower data.heldout_tokens or drop "
            f"the domain from data.domains")
    return held, train


def shared_span_fractions(tokens, lengths, n: int = OVERLAP_NGRAM) -> np.ndarray:
    """Per document (consecutive runs of `lengths` in `tokens`), the share of its distinct n-token spans that also
    occur in another document; 0 for a document shorter than n. Near-duplicates (a license quoted in many
    copyright files, the shared sections of related manual pages) score near 1. Memory: about 24 bytes per token."""
    lengths = np.asarray(lengths, dtype=np.int64)
    n_docs = len(lengths)
    m = int(lengths.sum()) - n + 1
    if m <= 0:
        return np.zeros(n_docs)
    toks = np.asarray(tokens[: int(lengths.sum())], dtype=np.uint64) + np.uint64(1)
    spans = np.zeros(m, dtype=np.uint64)
    for j in range(n):  # a polynomial hash of every span, wrapping mod 2^64
        spans = spans * np.uint64(0x100000001B3) + toks[j: j + m]
    doc = np.repeat(np.arange(n_docs), lengths)
    inside = doc[:m] == doc[n - 1: n - 1 + m]
    spans, doc = spans[inside], doc[:m][inside]
    order = np.lexsort((doc, spans))
    spans, doc = spans[order], doc[order]
    distinct = np.ones(len(spans), dtype=bool)
    distinct[1:] = (spans[1:] != spans[:-1]) | (doc[1:] != doc[:-1])
    spans, doc = spans[distinct], doc[distinct]
    starts = np.ones(len(spans), dtype=bool)
    starts[1:] = spans[1:] != spans[:-1]
    group = np.cumsum(starts) - 1
    shared = np.bincount(group)[group] > 1
    total = np.bincount(doc, minlength=n_docs)
    return np.bincount(doc, weights=shared, minlength=n_docs) / np.maximum(total, 1)


_WORKER_TOKENIZER = {}


def _encode(texts: list, tok_path: str, dtype: str, eos: int) -> list:
    """(UTF-8 bytes, token ids + EOS) of every text: the same function in this process and in a worker."""
    tok = _WORKER_TOKENIZER.get(tok_path)
    if tok is None:
        tok = _WORKER_TOKENIZER[tok_path] = load_tokenizer(Path(tok_path))
    encoded = tok.encode_batch_fast(texts) if hasattr(tok, "encode_batch_fast") else tok.encode_batch(texts)
    out = []
    for text, enc in zip(texts, encoded):
        arr = np.empty(len(enc.ids) + 1, dtype=dtype)
        arr[:-1] = enc.ids
        arr[-1] = eos
        out.append((len(text.encode("utf-8", errors="replace")), arr))
    return out


def encoded_in_order(batches, tok_path: Path, dtype, eos: int, num_proc: int = 1):
    """(batch, its encoded documents) in the order read. With num_proc > 1 the batches are tokenized by that
    many worker processes, at most 2 x num_proc batches ahead of the writer (memory stays bounded for any
    corpus); the writer takes them in order, so the shards are byte for byte those of one process."""
    args = (str(tok_path), np.dtype(dtype).name, int(eos))
    if num_proc <= 1:
        for batch in batches:
            yield batch, (_encode(batch[0], *args) if batch[0] else [])
        return
    import collections
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(num_proc) as pool:
        window: collections.deque = collections.deque()
        for batch in batches:
            window.append((batch, pool.apply_async(_encode, (batch[0], *args)) if batch[0] else None))
            if len(window) >= 2 * num_proc:
                done, pending = window.popleft()
                yield done, (pending.get() if pending is not None else [])
        while window:
            done, pending = window.popleft()
            yield done, (pending.get() if pending is not None else [])


def _raw_entry(raw: dict, lab: str, out: Path) -> dict:
    if lab not in raw:
        path = out / f".raw-{len(raw)}.bin"
        raw[lab] = {"path": path, "file": open(path, "wb"), "chunks": [], "pending": 0, "lengths": [],
                    "bytes": 0, "empty_documents": 0}
    return raw[lab]


def _flush(entry: dict) -> None:
    if entry["chunks"]:
        entry["file"].write(np.concatenate(entry["chunks"]).tobytes())
    entry["chunks"], entry["pending"] = [], 0


def pack(prepared: Path, seq_len: int, progress: bool = True) -> Path:
    """[n, seq_len + 1] arrays per domain and split (sequence i = tokens[i*L : i*L + L + 1])."""
    final = DataLayout.packed(prepared, seq_len)
    if (final / MANIFEST).exists():
        return final
    manifest = json.loads((prepared / MANIFEST).read_text())
    dtype = np.dtype(manifest["dtype"])

    def write_packed(tmp: Path) -> None:
        tmp.mkdir()
        out = {"seq_len": seq_len, "per_domain": {}}
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(v["train_tokens"] + v["heldout_tokens"] for v in manifest["per_domain"].values()),
                   desc=f"packing L={seq_len}", unit="tok", unit_scale=True, disable=not progress,
                   file=sys.stderr, mininterval=1.0)
        for name, info in manifest["per_domain"].items():
            (tmp / info["dir"]).mkdir()
            counts = {}
            for split in ("train", "heldout"):
                flat = np.memmap(prepared / info["dir"] / f"{split}.bin", dtype=dtype, mode="r")
                n = max(0, (len(flat) - 1) // seq_len)
                arr = np.lib.format.open_memmap(tmp / info["dir"] / f"{split}.npy", mode="w+", dtype=dtype,
                                                shape=(n, seq_len + 1))
                view = np.lib.stride_tricks.as_strided(flat, shape=(n, seq_len + 1),
                                                       strides=(seq_len * dtype.itemsize, dtype.itemsize))
                step = max(1, (1 << 22) // (seq_len + 1))
                for i in range(0, n, step):
                    arr[i:i + step] = view[i:i + step]
                arr.flush()
                del arr, view, flat
                counts[split] = n
                bar.update(n * seq_len)
            out["per_domain"][name] = {"train_sequences": counts["train"], "heldout_sequences": counts["heldout"],
                                       "train_target_tokens": counts["train"] * seq_len,
                                       "heldout_target_tokens": counts["heldout"] * seq_len}
        bar.close()
        write_json_atomic(tmp / MANIFEST, out)

    return build_once(final, write_packed, is_built=lambda p: (p / MANIFEST).exists(),
                      lock=DataLayout.packed_lock(prepared, seq_len))
