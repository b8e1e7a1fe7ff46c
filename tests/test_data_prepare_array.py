"""Data preparation as a job array (splitsweep/data/prepare_array.py): the same bytes as one local process.

The partition is a pure function (unit tests); the stages run in this process in any task split and order
(fast); the command line refuses bad values before any job; and on the real test cluster the command runs
the array (3 tasks) through splitsweep's submitit launcher and writes, file for file, what one process writes.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from splitsweep.data import prepare as prep
from splitsweep.data import prepare_array as arr
from tests.helpers import REPO

BATCH = 10  # data.batch_documents: parts are whole numbers of batches
DOMAINS = ["alpha", "beta", "gamma"]


def write_corpus(out: Path, n_files: int = 3, docs_per_file: int = 80, seed: int = 0) -> Path:
    """A small labelled corpus: 3 kept domains with their own words, a label the config drops, and empty
    documents (dropped and counted), over several JSON Lines files."""
    rng = random.Random(seed)
    words = {d: [f"{d[:2]}{w}" for w in ("ka", "lo", "mi", "nu", "pe", "ro", "su", "ti", "va", "ze")] + ["the", "of"]
             for d in DOMAINS + ["skip"]}
    out.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        with open(out / f"part-{f}.jsonl", "w") as fh:
            for _ in range(docs_per_file):
                label = rng.choice(DOMAINS * 3 + ["skip"])
                n = rng.choice([0] + list(range(5, 60)))
                text = " ".join(rng.choice(words[label]) for _ in range(n)) + ("\nend." if n else "")
                fh.write(json.dumps({"text": text, "meta": {"source": label}}) + "\n")
    return out


def data_overrides(root: Path, corpus: Path) -> list[str]:
    return [f"paths.root={root}", "data=hf", f"data.data_files={corpus}/*.jsonl", "data.domain_field=meta.source",
            f"data.domains=[{','.join(DOMAINS)}]", "data.tokenizer.vocab_size=300", "data.heldout_tokens=200",
            "data.progress=false", f"data.batch_documents={BATCH}", "train.seq_len=32"]


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def prepare_locally(root: Path, corpus: Path) -> Path:
    """What one process writes (num_proc=1): the prepared directory and its packed-L32, as a job makes them."""
    cfg = compose_cfg(data_overrides(root, corpus))
    prepared = prep.prepare(cfg.data)
    prep.pack(prepared, 32, progress=False)
    return prepared


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus) -> Path:
    return prepare_locally(tmp_path_factory.mktemp("local"), corpus)


# ------------------------------------------------------------------------------------------ partition
@pytest.mark.parametrize("n_documents, part_documents", [(0, 10), (1, 10), (10, 10), (95, 10), (240, 40), (7, 100)])
def test_parts_cover_the_documents_once_whatever_the_task_count(n_documents, part_documents):
    parts = arr.document_parts(n_documents, part_documents)
    # contiguous, in document order, each at most part_documents, starting at multiples of it
    assert [s for s, _ in parts] == list(range(0, n_documents, part_documents))
    assert all(0 < stop - start <= part_documents for start, stop in parts)
    assert [d for s, e in parts for d in range(s, e)] == list(range(n_documents))
    for n_tasks in range(1, 9):
        shares = [arr.parts_of_task(parts, n_tasks, t) for t in range(n_tasks)]
        flat = [p for share in shares for p in share]
        assert sorted(flat) == parts and len(flat) == len(set(flat)), n_tasks  # every part exactly once
        # the result is assembled in document order, so the order tasks finish in does not matter
        for order in (shares, shares[::-1], random.Random(n_tasks).sample(shares, len(shares))):
            assert sorted(p for share in order for p in share) == parts


def test_part_names_follow_from_their_inputs():
    assert arr.part_name(0, 40, 10) == "000000000000-000000000040-b10"
    names = [arr.part_name(s, e, 10) for s, e in arr.document_parts(1000, 40)]
    assert names == sorted(names) and len(set(names)) == len(names)  # sort in document order
    with pytest.raises(ValueError):
        arr.parts_of_task([(0, 1)], 2, 2)
    with pytest.raises(ValueError):
        arr.document_parts(10, 0)


# ------------------------------------------------------------------------------------------ stages, in process
def test_stages_in_any_split_and_order_write_the_bytes_of_one_process(tmp_path, corpus, reference):
    """Plan, parts (3 tasks run last first, then again: nothing rewritten), a killed writer's debris and a lost
    part (named by the assembly, which builds nothing), then the assembly: the tree of one process."""
    cfg = compose_cfg(data_overrides(tmp_path, corpus))
    data = arr.plain_data_cfg(cfg.data)
    plan = arr.plan_job(data)
    assert plan["key"] == reference.name and not plan["built"] and plan["documents"] == 240
    parts = arr.document_parts(plan["documents"], 4 * BATCH)
    shares = [arr.parts_of_task(parts, 3, t) for t in range(3)]
    for share in reversed(shares):
        assert len(arr.PartsTask()(data, plan["key"], share)["written"]) == len(share)
    assert arr.PartsTask()(data, plan["key"], shares[0])["written"] == []  # a re-run task skips its parts
    lost = arr.part_path(data, plan["key"], parts[2])
    shutil.rmtree(lost)
    debris = lost.with_name(f".{lost.name}.tmp-somehost-999999-deadbeef")  # a killed writer's private dir
    debris.mkdir()
    (debris / "0.tokens.bin").write_bytes(b"torn")
    out = arr.assemble_job(data, plan["key"], parts, 32)
    assert "error" in out and lost.name in out["error"] and "1 of 6 parts are missing" in out["error"]
    assert not (tmp_path / "store" / "data" / plan["key"]).exists()
    arr.PartsTask()(data, plan["key"], shares[2])  # the task that owned it, run again
    out = arr.assemble_job(data, plan["key"], parts, 32)
    prepared = Path(out["prepared"])
    assert prepared == tmp_path / "store" / "data" / reference.name
    assert not arr.work_dir(data.cache_dir, plan["key"]).exists()  # parts (and debris) removed once published
    digest = tree_digest(prepared)
    assert any(f.endswith(".npy") for f in digest) and "manifest.json" in digest and "d0/train.bin" in digest
    assert digest == tree_digest(reference)
    assert arr.plan_job(data) == {"key": reference.name, "tokenizer": plan["tokenizer"], "built": True,
                                  "documents": None}  # a second run only checks (and packs a new seq_len)


def test_a_bad_document_fails_its_task_naming_it_by_its_index_in_the_corpus(tmp_path, reference):
    corpus = write_corpus(tmp_path / "corpus", n_files=1, docs_per_file=100)
    lines = (corpus / "part-0.jsonl").read_text().splitlines()
    lines[57] = json.dumps({"text": None, "meta": {"source": "alpha"}})
    (corpus / "part-0.jsonl").write_text("\n".join(lines) + "\n")
    # a tokenizer file (no sample read), so the plan job succeeds and the part holding document 57 fails
    data = arr.plain_data_cfg(compose_cfg([*data_overrides(tmp_path, corpus),
                                           f"data.tokenizer.path={reference / 'tokenizer.json'}"]).data)
    plan = arr.plan_job(data)
    out = arr.PartsTask()(data, plan["key"], [(40, 60), (60, 80)])
    assert out == {"error": "data.text_field='text': document 57 holds a NoneType ('None'), not text"}
    assert arr.missing_parts(data, plan["key"], [(40, 60), (60, 80)]) == [arr.part_name(40, 60, BATCH),
                                                                       arr.part_name(60, 80, BATCH)]


def test_clustered_domains_in_parts_are_those_of_one_process(tmp_path, corpus):
    """No labels: every part labels its documents with the clusters the plan job fitted (loaded, not refitted),
    and the manifest (which names the cluster directory: one cache for both) is the one process's."""
    overrides = [o for o in data_overrides(tmp_path, corpus) if not o.startswith(("data.domain_field", "data.domains"))]
    overrides += ["data.clustering.n_clusters=3", "data.clustering.svd_components=8",
                  "data.clustering.sample_documents=120"]
    cfg = compose_cfg(overrides)
    local = prep.prepare(cfg.data)
    prep.pack(local, 32, progress=False)
    reference = local.rename(local.with_name(f"local-{local.name}"))  # same cache: same cluster_dir in the manifest
    data = arr.plain_data_cfg(cfg.data)
    plan = arr.plan_job(data)
    parts = arr.document_parts(plan["documents"], 5 * BATCH)
    for t in (1, 0):
        arr.PartsTask()(data, plan["key"], arr.parts_of_task(parts, 2, t))
    prepared = Path(arr.assemble_job(data, plan["key"], parts, 32)["prepared"])
    assert json.loads((prepared / "manifest.json").read_text())["domains"] == ["c0", "c1", "c2"]
    assert tree_digest(prepared) == tree_digest(reference)


# ------------------------------------------------------------------------------------------ command line
@pytest.mark.parametrize("options, overrides, message", [
    (["--part-documents", "15"], [], "--part-documents=15 must be a multiple of data.batch_documents=10 "
                                     "(a part is read in the batches one process reads); nearest valid values: "
                                     "10 or 20"),
    (["--tasks", "0"], [], "--tasks=0 must be an integer >= 1"),
    ([], ["hydra/launcher=sequential"], "hydra/launcher=sequential is not one of splitsweep's submitit launchers"),
    ([], ["data.streaming=true"], "data.streaming=true: a job array's tasks read their parts by document index"),
])
def test_bad_values_are_refused_before_any_job(tmp_path, corpus, capsys, monkeypatch, options, overrides, message):
    monkeypatch.setattr(arr, "make_executor", lambda *a, **k: pytest.fail("an executor was made"))
    code = arr.main(["--part-documents", "40", *options, *data_overrides(tmp_path, corpus), *overrides])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("splitsweep: error: ") and message in err, err
    assert not (tmp_path / "store").exists()  # nothing read, nothing prepared


def test_phonebook_is_not_prepared(tmp_path, capsys):
    assert arr.main([f"paths.root={tmp_path}"]) == 2
    assert "data.kind='phonebook': only real text (data=hf) is prepared" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ on SLURM
@pytest.mark.slurm
def test_job_array_on_slurm_writes_the_bytes_of_one_process(slurm_cluster, tmp_path, corpus, reference):
    """The command a user runs, on the real cluster: plan job, a 3-task array (6 parts of 40 documents), the
    assembly job; then every file of the prepared directory (shards, packed arrays, tokenizer, manifest)
    is the one process's."""
    root = tmp_path / "out"
    cmd = [sys.executable, "-m", "splitsweep.data.prepare_array", "--tasks", "3", "--part-documents", "40",
           *data_overrides(root, corpus), "hydra/launcher=submitit_slurm",
           f"hydra.launcher.partition={slurm_cluster.partition}", "hydra.launcher.mem_gb=1",
           "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=5"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **slurm_cluster.env, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-4000:] + slurm_cluster.logs_tail()
    prepared = Path(proc.stdout.strip().splitlines()[-1])
    assert prepared == root / "store" / "data" / reference.name
    assert "240 documents in 6 parts" in proc.stderr and "job array of 3 tasks" in proc.stderr, proc.stderr
    assert tree_digest(prepared) == tree_digest(reference)
    # the parts ran as 3 tasks of one SLURM array job, and are gone once assembled
    logs = prepared.parent / ".prepare-logs"
    array_tasks = sorted(p.name for p in logs.iterdir() if p.is_dir() and "_" in p.name)  # <array id>_<task>
    assert len(array_tasks) == 3 and len({t.split("_")[0] for t in array_tasks}) == 1, array_tasks
    assert slurm_cluster.sacct_state(array_tasks[0]) == "COMPLETED"
    assert not arr.work_dir(prepared.parent, reference.name).exists()
