"""data=hf on real text available offline: a small fixed corpus of licences, man pages, Python sources and
changelogs (`tests/data/corpus/`, see its NOTES.md), read through the same `datasets.load_dataset` call a hub id uses."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from splitsweep.data import prepare as prep
from splitsweep.data.tokenizer import load_tokenizer
from splitsweep.plan import ConfigError, make_plan
from tests.helpers import REPO, TINY

T = 4 * 32  # tokens per step of TINY (global_batch 4 x seq_len 32)
KEEP = ["licenses", "manpages", "python"]
CORPUS = REPO / "tests" / "data" / "corpus"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The shipped corpus, copied so that no test can write beside it."""
    out = tmp_path_factory.mktemp("corpus")
    for f in sorted(CORPUS.glob("corpus-*.jsonl")):
        shutil.copyfile(f, out / f.name)
    return out


def hf_cfg(root: Path, corpus: Path, *overrides: str):
    base = [o for o in TINY if not o.startswith("data.")]  # TINY's data keys are the phonebook's
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[
            f"paths.root={root}", *base, "data=hf", f"data.data_files={corpus}/corpus-*.jsonl",
            "data.tokenizer.vocab_size=384", "data.heldout_tokens=600", "data.progress=false",
            f"split.pretrain_tokens={8 * T}", f"split.special_tokens={4 * T}", *overrides])


def labelled(root, corpus, *overrides):
    return hf_cfg(root, corpus, "data.domain_field=meta.source", f"data.domains=[{','.join(KEEP)}]", *overrides)


def docs_by_domain(corpus: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in sorted(corpus.glob("corpus-*.jsonl")):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            out.setdefault(row["meta"]["source"], []).append(row["text"])
    return out


@pytest.fixture(scope="module")
def shared(tmp_path_factory, corpus):
    """One prepared store reused by the tests that only read it."""
    root = tmp_path_factory.mktemp("store")
    plan = make_plan(labelled(root, corpus))
    return root, plan


def test_labels_token_counts_exact_and_heldout_by_document(shared, corpus):
    root, plan = shared
    src = plan.source
    assert src.domains == KEEP  # data.domains order; changelogs dropped
    docs = docs_by_domain(corpus)
    tok = load_tokenizer(src.prepared / "tokenizer.json")
    eos = src.manifest["eos_id"]
    for k, name in enumerate(KEEP):
        info = src.manifest["per_domain"][name]
        texts = [t for t in docs[name] if t.strip()]
        ids = [e.ids for e in tok.encode_batch(texts)]
        assert info["documents"] == len(texts)
        assert info["train_tokens"] + info["heldout_tokens"] == sum(len(i) + 1 for i in ids)
        assert info["heldout_tokens"] >= 600 and info["heldout_documents"] >= 1
        # the natural weight is the train-token share
        total = sum(src.manifest["per_domain"][n]["train_tokens"] for n in KEEP)
        assert src.weights[k] == pytest.approx(info["train_tokens"] / total)
        # held-out documents never appear in training text
        train = np.fromfile(src.prepared / info["dir"] / "train.bin", dtype=src.manifest["dtype"])
        held = np.fromfile(src.prepared / info["dir"] / "heldout.bin", dtype=src.manifest["dtype"])
        assert len(train) == info["train_tokens"] and len(held) == info["heldout_tokens"]
        train_bytes = train.tobytes()
        for i in info["heldout_doc_ids"]:
            doc = np.asarray(ids[i] + [eos], dtype=train.dtype).tobytes()
            assert held.tobytes().find(doc) >= 0
            assert train_bytes.find(doc) < 0
        # packed rows: seq_len + 1 tokens, stride seq_len, every training sequence distinct in one epoch
        n = src.domain_train_sequences(k)
        assert n == (info["train_tokens"] - 1) // 32
        assert src.heldout(k).shape == ((info["heldout_tokens"] - 1) // 32, 33)
        rows = np.stack([src.domain_sequence(k, i) for i in range(n)])
        assert rows.shape == (n, 33) and rows.dtype == np.int64
        flat = np.lib.stride_tricks.sliding_window_view(train, 33)[::32][:n]
        assert sorted(map(bytes, rows.astype(train.dtype))) == sorted(map(bytes, flat))
        assert rows.max() < src.vocab_size == 384


def test_exact_tokens_for_d_and_dprime_without_repetition(shared):
    root, plan = shared
    src, b = plan.source, plan.batch
    assert plan.pretrain_tokens == 8 * T and plan.special_tokens == 4 * T
    from splitsweep.train import TrainingPath

    for expert in KEEP + ["mixture"]:
        path = TrainingPath(plan.seed_steps, plan.expert_steps, expert, plan.seed_offsets)
        seen, targets = set(), 0
        for step in range(plan.seed_steps + plan.expert_steps):
            stream, index = path.stream_at(step)
            for i in range(index * b.global_batch, (index + 1) * b.global_batch):
                if stream == "mixture":
                    k, j = src.mixture.lookup(i)
                else:
                    k, j = src.domain_index(stream), i + int(plan.seed_offsets[src.domain_index(stream)])
                assert (k, j) not in seen  # no sequence read twice on one expert path
                seen.add((k, j))
                targets += src.domain_sequence(k, j).size - 1
        assert targets == plan.pretrain_tokens + plan.special_tokens


def test_second_preparation_is_a_no_op(shared, corpus, monkeypatch):
    root, plan = shared
    before = sorted(p.name for p in (root / "store" / "data").iterdir())

    def boom(*a, **k):
        raise AssertionError("prepared twice")

    monkeypatch.setattr(prep, "_build", boom)
    monkeypatch.setattr(prep, "load", boom)  # jobs read only the shards: no datasets call on a cache hit
    monkeypatch.setattr("splitsweep.data.tokenizer.train_bpe", boom)
    again = make_plan(labelled(root, corpus))
    assert again.source.identity() == plan.source.identity()
    assert again.trajectory_id == plan.trajectory_id
    assert sorted(p.name for p in (root / "store" / "data").iterdir()) == before


def test_two_jobs_preparing_at_once_prepare_once(tmp_path, corpus, monkeypatch):
    cfg = labelled(tmp_path, corpus, "data.max_documents=60")
    calls = []
    real = prep._build

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(prep, "_build", counted)
    out, errors = [], []

    def run():
        try:
            out.append(prep.prepare(cfg.data))
        except Exception as err:  # pragma: no cover
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(calls) == 1 and out[0] == out[1]
    assert not [p for p in (tmp_path / "store" / "data").iterdir() if ".tmp-" in p.name]


def test_clustering_without_labels(tmp_path, corpus, monkeypatch):
    cfg = hf_cfg(tmp_path, corpus, "data.clustering.n_clusters=3", "data.clustering.svd_components=20")
    src = make_plan(cfg).source
    assert src.domains == ["c0", "c1", "c2"]
    cluster_dir = Path(src.manifest["cluster_dir"])
    summary = json.loads((cluster_dir / "summary.json").read_text())
    assert [c["cluster"] for c in summary["clusters"]] == ["c0", "c1", "c2"]
    assert all(c["top_terms"] and c["snippets"] for c in summary["clusters"])
    # balanced: no cluster holds more than ceil(n/K) of the sample
    assert max(c["sample_documents"] for c in summary["clusters"]) <= -(-summary["sample_documents"] // 3) + 5
    assert "top terms" in (cluster_dir / "summary.md").read_text()
    # clusters follow the real sources: each cluster is mostly one source
    model = prep.Labeler(cfg.data).model
    docs = docs_by_domain(corpus)
    purity = []
    for name, texts in docs.items():
        labels = model.predict(texts)
        purity.append(np.bincount(labels, minlength=3).max() / len(labels))
    assert np.mean(purity) > 0.6
    # the fitted model is saved and reused
    from splitsweep.data import clustering

    monkeypatch.setattr(clustering.ClusterModel, "fit", classmethod(lambda *a, **k: 1 / 0))
    assert make_plan(cfg).source.identity() == src.identity()


def test_parquet_and_tokenizer_file_through_the_same_call(tmp_path, corpus, shared):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, plan = shared
    rows = [json.loads(line) for f in sorted(corpus.glob("corpus-*.jsonl")) for line in f.read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    tok_file = plan.source.prepared / "tokenizer.json"
    cfg = labelled(tmp_path, corpus, "data.path=parquet", f"data.data_files={tmp_path}/*.parquet",
                   f"data.tokenizer.path={tok_file}", "data.tokenizer.vocab_size=null")
    src = make_plan(cfg).source
    assert src.vocab_size == 384
    # the hub code path: streaming=true through the same call, on the JSON Lines files
    streamed = make_plan(labelled(tmp_path / "s", corpus, "data.streaming=true", f"data.tokenizer.path={tok_file}",
                                  "data.tokenizer.vocab_size=384")).source
    for name in KEEP:
        a, b = src.manifest["per_domain"][name], plan.source.manifest["per_domain"][name]
        assert a["train_tokens"] + a["heldout_tokens"] == b["train_tokens"] + b["heldout_tokens"]
        assert streamed.manifest["per_domain"][name] == {**b, "dir": streamed.manifest["per_domain"][name]["dir"]}


def error(tmp_path, corpus, *overrides, fn=labelled) -> str:
    with pytest.raises(ConfigError) as err:
        make_plan(fn(tmp_path, corpus, *overrides))
    return str(err.value)


def test_errors_before_training(tmp_path, corpus, shared):
    _, plan = shared
    msg = error(tmp_path, corpus, "data.domain_field=meta.nope")
    assert "meta.nope" in msg and "'nope'" in msg and "source" in msg
    msg = error(tmp_path, corpus, "data.text_field=body")
    assert "'body'" in msg and "text" in msg and "meta" in msg
    msg = error(tmp_path, corpus, "data.domains=[licenses,poetry]")
    assert "poetry" in msg and "licenses" in msg and "manpages" in msg
    msg = error(tmp_path, corpus, "data.heldout_tokens=1000000")
    assert "too small" in msg and "data.heldout_tokens" in msg
    # D' beyond one epoch of the domain, without repetition allowed (plan.py, from the shards' size)
    n = plan.source.domain_train_sequences(0)
    too_many = (n // 4 + 2) * T
    msg = error(tmp_path, corpus, f"split.special_tokens={too_many}", "split.expert_domain=licenses")
    assert "licenses" in msg and "allow_repetition" in msg
    ok = make_plan(labelled(tmp_path, corpus, f"split.special_tokens={too_many}", "split.expert_domain=licenses",
                            "data.allow_repetition=true"))
    assert ok.epochs_max > 1.0
    # a tokenizer file whose vocabulary is not the configured one
    tok_file = plan.source.prepared / "tokenizer.json"
    msg = error(tmp_path, corpus, f"data.tokenizer.path={tok_file}", "data.tokenizer.vocab_size=512")
    assert "512" in msg and "384" in msg
    msg = error(tmp_path, corpus, f"data.tokenizer.path={tmp_path}/none.json")
    assert "does not exist" in msg
    msg = error(tmp_path, corpus, "data.weights=[1,2]")
    assert "3 domains" in msg
    msg = error(tmp_path, corpus, "data.path=json", f"data.data_files={tmp_path}/missing-*.jsonl")
    assert "could not load" in msg


def test_non_text_and_empty_fields(tmp_path, corpus):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jsonl").write_text("\n".join(json.dumps({"text": i, "meta": {"source": "x"}}) for i in range(5)))
    msg = error(tmp_path, corpus, f"data.data_files={bad}/a.jsonl", "data.domains=null")
    assert "int" in msg and "not text" in msg
    (bad / "b.jsonl").write_text("\n".join(json.dumps({"text": "  ", "meta": {"source": "x"}}) for i in range(5)))
    msg = error(tmp_path, corpus, f"data.data_files={bad}/b.jsonl", "data.domains=null",
                "data.tokenizer.path=null")
    assert "no non-empty" in msg


def test_training_job_on_real_text(shared, corpus):
    from splitsweep.job import Job
    from splitsweep.records import read_rows

    root, plan = shared
    cfg = labelled(root, corpus, "split.expert_domain=python", "logger.mode=disabled")
    rows = Job(cfg).run()
    assert [r["eval_domain"] for r in rows] == KEEP + ["mixture"]
    assert all(np.isfinite(r["eval_loss"]) and r["eval_loss"] < np.log(384) + 0.5 for r in rows)
    assert rows[0]["tokens_trained"] == 12 * T and rows[0]["special_tokens"] == 4 * T
    assert 0 < rows[0]["epochs_max"] < 1
    assert len(read_rows(Path(cfg.paths.sweep_dir), run_id=rows[0]["run_id"])) == 4


def test_given_weights_reuse_the_shards(shared, corpus, monkeypatch):
    root, plan = shared
    monkeypatch.setattr(prep, "_build", lambda *a, **k: 1 / 0)
    given = make_plan(labelled(root, corpus, "data.weights={licenses:1,manpages:1,python:2}"))
    assert given.source.weights == [0.25, 0.25, 0.5]
    assert given.source.mixture.counts.tolist() == [60, 60, 120]
    assert given.trajectory_id != plan.trajectory_id  # the mixture is part of the seed's identity


def test_tokenizing_with_two_processes_writes_the_same_bytes(tmp_path, corpus, shared):
    """data.num_proc=2 (spawned workers, batches written in the order read): shards, packed arrays and manifest
    byte for byte those of one process, and the same trajectory."""
    root, plan = shared
    cfg = labelled(tmp_path, corpus, "data.num_proc=2", "data.batch_documents=7")
    two = make_plan(cfg)
    one_dir = root / "store" / "data" / plan.source.manifest["key"]
    two_dir = tmp_path / "store" / "data" / two.source.manifest["key"]
    assert one_dir.name == two_dir.name and two.trajectory_id == plan.trajectory_id  # num_proc is not identity
    files = sorted(p.relative_to(one_dir) for p in one_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two_dir) for p in two_dir.rglob("*") if p.is_file())
    assert any(f.suffix == ".bin" for f in files) and any(f.suffix == ".npy" for f in files)
    for f in files:
        assert (one_dir / f).read_bytes() == (two_dir / f).read_bytes(), f


def test_status_of_a_hf_sweep_whose_store_was_deleted_says_missing_and_prepares_nothing(tmp_path, corpus):
    import subprocess
    import sys

    from tests.helpers import run_cli

    base = [o for o in TINY if not o.startswith("data.")]
    args = ["-m", *base, "data=hf", f"data.data_files={corpus}/corpus-*.jsonl", "data.tokenizer.vocab_size=384",
            "data.heldout_tokens=600", "data.progress=false", "data.domain_field=meta.source",
            f"data.domains=[{','.join(KEEP)}]", f"split.budget_tokens={12 * T}", "split.pretrain_fraction=0.5",
            "split.expert_domain=licenses", "report.enabled=false", "logger.mode=disabled"]
    run_cli(tmp_path, *args, env={"OMP_NUM_THREADS": "1"})
    store = tmp_path / "store"
    assert (store / "data").is_dir()
    shutil.rmtree(store)
    sweep = tmp_path / "sweeps" / "test"
    out = subprocess.run([sys.executable, "-m", "splitsweep.status", str(sweep)], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert f"store {store}: missing" in out.stdout and "1 done" in out.stdout, out.stdout
    assert not store.exists()  # nothing was prepared or trained by the query
