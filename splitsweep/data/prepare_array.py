"""Data preparation as a job array, for corpora too big for one process: `python -m splitsweep.data.prepare_array`.

    python -m splitsweep.data.prepare_array [--tasks 8] [--part-documents 100000] OVERRIDES...

OVERRIDES are the sweep's own (`data=hf data.data_files=... data.domain_field=...`, `paths.root=...`) and the
launcher's (`hydra.launcher.partition=... hydra.launcher.mem_gb=...`): the jobs go through splitsweep's submitit
launcher config, `hydra/launcher=submitit_slurm` unless another is named (`submitit_local`: local processes,
the same code without a scheduler). The result is the directory one local preparation makes,
`<data.cache_dir>/<key>/` and its `packed-L<train.seq_len>/`, byte for byte, so the sweep's jobs then find it
prepared and read it.

Three stages, each through the same submitit executor:
  1. plan (one job): load the data set (builds its Arrow cache once), fit the clustering and train the tokenizer
     (cached, exactly as a local preparation does), compute the prepared key and count the documents.
     Every job's submitit folder (logs, pickles) is `<data.cache_dir>/.prepare-logs/<job id>/`.
  2. parts (a job array of --tasks tasks): the documents are cut into parts of --part-documents consecutive
     documents (`document_parts`: a function of the document count and the part size only, never of the task
     count); task t takes parts t, t + T, ... (`parts_of_task`). A part is tokenized exactly as a local
     preparation tokenizes those documents (`prepare.tokenize_documents` on that range, in the same batches)
     and written to `<cache_dir>/.array-<key>/parts/<start>-<stop>-b<batch>/` (named by its inputs: the
     prepared key, the document range and the batch size), privately, then published by one rename. A part
     already there is skipped, so a killed, requeued or re-run task neither redoes nor duplicates one; two
     writers of one part publish it once (the first rename wins, and both wrote the same bytes).
  3. assemble (one job): every part must be present and well formed (else the missing ones are named and
     nothing is built); their per-label token files are joined in document order, which rebuilds exactly the
     raw files a single process writes, and the same code as a local preparation (`prepare.finish_prepared`)
     draws the held-out documents, writes the splits and the manifest, under the same lock and rename
     (`store.build_once`). Then it packs for train.seq_len and removes the parts (the logs stay).

Why one process's bytes: everything after tokenizing is a function of (per-label token streams in document
order, lengths, byte and empty counts, labels seen, documents read), and a part's tokens depend only on its
documents (the tokenizer and the labels are per document, and a part's batches are the batches a full read
makes, since parts start at multiples of data.batch_documents). Joining parts in document order therefore gives
the single process's inputs, whatever the number of tasks or the order in which they finished.
"""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from submitit.helpers import Checkpointable

from ..errors import ConfigError
from ..layout import MANIFEST, DataLayout
from ..store import build_once, private_tmp, publish_dir, write_json_atomic
from . import prepare as prep

PART_VERSION = 1
PART_META = "meta.json"
REPO = Path(__file__).resolve().parents[2]
SUBMITIT_LAUNCHERS = ("slurm", "local")  # the _EXECUTOR of splitsweep's submitit launcher classes


# ------------------------------------------------------------------------------------------ partition
def document_parts(n_documents: int, part_documents: int) -> list[tuple[int, int]]:
    """The parts, as (start, stop) document ranges in document order: fixed by the corpus and the part size,
    so the same for any number of tasks."""
    if part_documents < 1:
        raise ValueError(f"part_documents={part_documents} must be >= 1")
    return [(start, min(start + part_documents, n_documents)) for start in range(0, n_documents, part_documents)]


def parts_of_task(parts: list, n_tasks: int, task: int) -> list:
    """The parts task `task` of `n_tasks` writes: every n_tasks-th, so tasks get near-equal shares of a corpus
    whose documents grow or shrink along the files. Together the tasks cover every part exactly once."""
    if not 0 <= task < n_tasks:
        raise ValueError(f"task {task} is not one of 0..{n_tasks - 1}")
    return list(parts[task::n_tasks])


def part_name(start: int, stop: int, batch_documents: int) -> str:
    """A part's directory name: its inputs (with the prepared key in the parent directory's name)."""
    return f"{start:012d}-{stop:012d}-b{batch_documents}"


def work_dir(cache_dir, key: str) -> Path:
    """Where one prepared key's array keeps its parts until they are assembled (beside the prepared directory)."""
    return DataLayout(cache_dir).array_work(key)


def logs_dir(cache_dir) -> Path:
    """The submitit folder of every preparation job (<job id>/ with its logs and pickles), kept after the end."""
    return DataLayout(cache_dir).prepare_logs()


# ------------------------------------------------------------------------------------------ checks
def check_options(cfg, tasks, part_documents) -> None:
    """Every bad value named before any job is submitted: the array's own options, and the data settings an
    array cannot work with."""
    from ..plan import check_config, check_integer

    check_config(cfg)
    check_integer("--tasks", tasks, 1)
    check_integer("--part-documents", part_documents, 1)
    d = cfg.data
    if str(d.kind) != "hf":
        raise ConfigError(f"data.kind={str(d.kind)!r}: only real text (data=hf) is prepared; the {d.kind} data "
                          "is made in memory by every job. Add data=hf and its data.* settings")
    d = prep.HFDataArgs.of(d)
    if d.streaming:
        raise ConfigError("data.streaming=true: a job array's tasks read their parts by document index, which a "
                          "stream cannot do; set data.streaming=false (the plan job downloads the data set into "
                          "data.cache_dir/hf_datasets once) or prepare in one process")
    batch = d.batch_documents
    if int(part_documents) % batch:
        lower = int(part_documents) // batch * batch
        near = [n for n in (lower, lower + batch) if n >= batch]
        raise ConfigError(f"--part-documents={int(part_documents)} must be a multiple of "
                          f"data.batch_documents={batch} (a part is read in the batches one process reads); "
                          f"nearest valid values: {' or '.join(map(str, near))}")


def launcher_kind(launcher: dict, choice: str | None = None) -> str:
    """'slurm' or 'local': the submitit executor of the configured launcher, which must be one of splitsweep's
    (they build the executor); a ConfigError naming the launcher otherwise."""
    import hydra.utils

    target = str(launcher.get("_target_"))
    try:
        cls = hydra.utils.get_class(target)
    except Exception:  # an unimportable target: not a submitit launcher either
        cls = None
    kind = getattr(cls, "_EXECUTOR", None)
    if kind not in SUBMITIT_LAUNCHERS or not hasattr(cls, "_executor"):
        raise ConfigError(f"hydra/launcher={choice or target} is not one of splitsweep's submitit launchers: a job "
                          "array runs through submitit; use hydra/launcher=submitit_slurm (SLURM) or "
                          "hydra/launcher=submitit_local (local processes)")
    return kind


# ------------------------------------------------------------------------------------------ executor
def launcher_params(hydra_cfg) -> dict:
    """The launcher's settings, resolved, except its folder and job name (which this command sets)."""
    out = {}
    for key in hydra_cfg.launcher:
        if key in ("submitit_folder", "name"):  # interpolate the sweep's directory and name: not ours
            continue
        value = OmegaConf.select(hydra_cfg, f"launcher.{key}")
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out


def make_executor(params: dict, folder: Path, num_proc: int):
    """A submitit executor built by splitsweep's own launcher class from its config: the same translation of
    partition, account, qos, timeout_min, mem_gb, setup, additional_parameters, array_parallelism, ... into
    sbatch options as a sweep's jobs get, and the repository on the jobs' PYTHONPATH. A preparation task is one
    process on one node without GPUs; its CPUs default to data.num_proc (it tokenizes with that many)."""
    import hydra.utils

    params = dict(params)
    cls = hydra.utils.get_class(params.pop("_target_"))
    params.update(submitit_folder=str(folder / "%j"), nodes=1, tasks_per_node=1, gpus_per_node=None)
    if params.get("cpus_per_task") is None and num_proc > 1:
        params["cpus_per_task"] = num_proc
    return cls(**params)._executor()


# ------------------------------------------------------------------------------------------ stage 1: plan
def plain_data_cfg(cfg) -> prep.HFDataArgs:
    """data.* resolved and typed: what the jobs get (pickled), equal to what a job resolves."""
    return prep.HFDataArgs.of(cfg)


def identity(cfg) -> tuple[prep.Labeler, Path, int, str]:
    """(labeler, tokenizer file, vocab size, prepared key), as a local preparation computes them (cached)."""
    labeler = prep.Labeler(cfg)
    tok_path, tok_identity, vocab_size = prep.resolve_tokenizer(cfg, labeler)
    return labeler, tok_path, vocab_size, prep.prepared_key(cfg, labeler, tok_identity)


def n_documents(cfg) -> int:
    """Documents a full read yields: the data set's, up to data.max_documents."""
    n = len(prep.load(cfg))
    limit = cfg.max_documents
    return n if limit is None else min(n, limit)


def plan_job(cfg) -> dict:
    """Stage 1 (a job): the prepared key, the tokenizer and the document count, or the ConfigError's text."""
    try:
        _, tok_path, _, key = identity(cfg)
        built = (DataLayout(cfg.cache_dir).prepared(key) / MANIFEST).exists()
        return {"key": key, "tokenizer": str(tok_path), "built": built,
                "documents": None if built else n_documents(cfg)}
    except ConfigError as err:
        return {"error": str(err)}


# ------------------------------------------------------------------------------------------ stage 2: parts
def parts_dir(cfg, key: str) -> Path:
    return work_dir(cfg.cache_dir, key) / "parts"


def part_path(cfg, key: str, part) -> Path:
    return parts_dir(cfg, key) / part_name(part[0], part[1], cfg.batch_documents)


def write_part(cfg, labeler, tok_path: Path, vocab_size: int, key: str, part) -> bool:
    """Tokenize documents [start, stop) into their part directory, published by one rename; False when it was
    there already (published by an earlier or a concurrent writer: the same bytes, kept)."""
    final = part_path(cfg, key, part)
    if (final / PART_META).exists():
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = private_tmp(final)
    try:
        tmp.mkdir()
        raw, n_docs, seen = prep.tokenize_documents(cfg, labeler, tok_path, prep.token_dtype(vocab_size), tmp,
                                                    documents=range(*part))
        labels = []
        for i, (label, entry) in enumerate(raw.items()):
            Path(entry["path"]).rename(tmp / f"{i}.tokens.bin")
            np.save(tmp / f"{i}.lengths.npy", np.asarray(entry["lengths"], dtype=np.int64))
            labels.append({"label": label, "index": i, "documents": len(entry["lengths"]),
                           "tokens": int(sum(entry["lengths"])), "bytes": int(entry["bytes"]),
                           "empty_documents": int(entry["empty_documents"])})
        write_json_atomic(tmp / PART_META, {
            "version": PART_VERSION, "key": key, "start": part[0], "stop": part[1],
            "batch_documents": cfg.batch_documents, "documents_read": n_docs,
            "seen": sorted(seen), "labels": labels})
        return publish_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class PartsTask(Checkpointable):
    """Stage 2 (one array task): write this task's parts in order, skipping those already published. On a
    timeout or preemption submitit requeues it with the same arguments, and it goes on where it stopped."""

    def __call__(self, cfg, key: str, parts: list) -> dict:
        try:
            labeler, tok_path, vocab_size, now = identity(cfg)
            if now != key:
                raise ConfigError(f"data changed since the array was planned (prepared key {key}, now {now}: "
                                  "an input file was edited?); run the command again")
            written = [part_name(*p, cfg.batch_documents) for p in parts
                       if write_part(cfg, labeler, tok_path, vocab_size, key, p)]
            return {"written": written, "parts": len(parts)}
        except ConfigError as err:
            return {"error": str(err)}


# ------------------------------------------------------------------------------------------ stage 3: assemble
def missing_parts(cfg, key: str, parts: list) -> list[str]:
    """Names of the parts not (yet) published."""
    return [part_path(cfg, key, p).name for p in parts if not (part_path(cfg, key, p) / PART_META).exists()]


def read_part(cfg, key: str, part, dtype) -> dict:
    """A published part's meta, checked against its name and its files (a damaged part is named, never used)."""
    path = part_path(cfg, key, part)
    meta = json.loads((path / PART_META).read_text())
    want = {"version": PART_VERSION, "key": key, "start": part[0], "stop": part[1],
            "batch_documents": cfg.batch_documents}
    wrong = {k: meta.get(k) for k, v in want.items() if meta.get(k) != v}
    for e in meta["labels"]:
        lengths = np.load(path / f"{e['index']}.lengths.npy")
        size = (path / f"{e['index']}.tokens.bin").stat().st_size
        if len(lengths) != e["documents"] or int(lengths.sum()) != e["tokens"] or size != e["tokens"] * dtype.itemsize:
            wrong[f"label {e['label']!r}"] = f"{len(lengths)} lengths, {size} bytes"
    if wrong:
        raise RuntimeError(f"part {path} does not match its name or its files ({wrong}); delete it and run again")
    return meta


def join_parts(cfg, key: str, parts: list, dtype, out: Path) -> tuple[dict, int, set]:
    """(raw, documents read, labels seen) as one process's tokenize_documents leaves them: every label's
    tokens and lengths, part after part in document order, in `out/.raw-<i>.bin`."""
    raw: dict[str, dict] = {}
    lengths: dict[str, list] = {}
    n_docs, seen = 0, set()
    for part in parts:
        meta = read_part(cfg, key, part, dtype)
        n_docs += meta["documents_read"]
        seen.update(meta["seen"])
        for e in meta["labels"]:
            if e["label"] not in raw:
                raw[e["label"]] = {"path": out / f".raw-{len(raw)}.bin", "bytes": 0, "empty_documents": 0}
                lengths[e["label"]] = []
            entry = raw[e["label"]]
            src = part_path(cfg, key, part)
            with open(src / f"{e['index']}.tokens.bin", "rb") as fin, open(entry["path"], "ab") as fout:
                shutil.copyfileobj(fin, fout, 1 << 24)
            lengths[e["label"]].append(np.load(src / f"{e['index']}.lengths.npy"))
            entry["bytes"] += e["bytes"]
            entry["empty_documents"] += e["empty_documents"]
    for label, entry in raw.items():
        entry["lengths"] = np.concatenate(lengths[label]) if lengths[label] else np.zeros(0, np.int64)
    return raw, n_docs, seen


def assemble_job(cfg, key: str, parts: list, seq_len: int | None) -> dict:
    """Stage 3 (a job): the prepared directory from every part (refused while one is missing), published as a
    local preparation publishes it, then packed for seq_len; the parts are removed once it is published."""
    try:
        labeler, tok_path, vocab_size, now = identity(cfg)
        if now != key:
            raise ConfigError(f"data changed since the array was planned (prepared key {key}, now {now}); "
                              "run the command again")
        cache = DataLayout(cfg.cache_dir)
        missing = [] if (cache.prepared(key) / MANIFEST).exists() else missing_parts(cfg, key, parts)
        if missing:  # (a concurrent run that assembled first has removed the parts: its result is used)
            raise ConfigError(f"{len(missing)} of {len(parts)} parts are missing under {parts_dir(cfg, key)} "
                              f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): a task failed "
                              "or is still running; run the command again to write them")

        def build(tmp: Path) -> None:
            tmp.mkdir(parents=True)
            shutil.copy(tok_path, tmp / "tokenizer.json")
            raw, n_docs, seen = join_parts(cfg, key, parts, np.dtype(prep.token_dtype(vocab_size)), tmp)
            prep.finish_prepared(cfg, labeler, tok_path, vocab_size, raw, n_docs, seen, tmp, key)

        prepared = build_once(cache.prepared(key), build, is_built=lambda p: (p / MANIFEST).exists(),
                              lock=cache.prepared_lock(key))
        packed = prep.pack(prepared, int(seq_len), cfg.progress) if seq_len else None
        shutil.rmtree(work_dir(cfg.cache_dir, key), ignore_errors=True)
        return {"prepared": str(prepared), "packed": str(packed) if packed else None}
    except ConfigError as err:
        return {"error": str(err)}


# ------------------------------------------------------------------------------------------ driver
def _result(job, what: str) -> dict:
    """A job's result; its ConfigError as a ConfigError here; a crash as an error naming the job's log."""
    try:
        out = job.result()
    except Exception as err:
        raise RuntimeError(f"{what} (job {job.job_id}) failed; its log: {job.paths.stderr}\n{err}") from None
    if "error" in out:
        raise ConfigError(out["error"])
    return out


def _say(text: str) -> None:
    print(f"splitsweep: {text}", file=sys.stderr, flush=True)


def run_parts(executor, cfg, key: str, parts: list, tasks: int) -> None:
    """Stage 2: the missing parts as one job array of at most `tasks` tasks; waits; every failed task named."""
    import submitit

    todo = [p for p in parts if not (part_path(cfg, key, p) / PART_META).exists()]
    if not todo:
        _say(f"all {len(parts)} parts are written")
        return
    n = min(tasks, len(todo))
    shares = [parts_of_task(todo, n, t) for t in range(n)]
    executor.update_parameters(name=f"prepare-parts-{key}")
    jobs = executor.map_array(PartsTask(), [cfg] * n, [key] * n, shares)
    _say(f"{len(todo)} of {len(parts)} parts in a job array of {n} tasks ({jobs[0].job_id}..{jobs[-1].job_id}); "
         f"logs under {logs_dir(cfg.cache_dir)}/")
    failures, done, t0 = [], 0, time.monotonic()
    for job in submitit.helpers.as_completed(jobs, poll_frequency=2):
        try:
            _result(job, "array task")
        except (ConfigError, RuntimeError) as err:
            failures.append(str(err))
        done += 1
        _say(f"[{done}/{n}] array task {job.job_id} ended ({time.monotonic() - t0:.0f} s)")
    if failures:
        raise RuntimeError(f"{len(failures)} of {n} array tasks failed (the parts they wrote are kept; run the "
                           "command again to write the rest):\n" + "\n".join(failures))


def prepare_array(cfg, hydra_cfg, tasks: int, part_documents: int) -> Path:
    """The prepared directory of cfg.data, made by the three stages (module docstring) on the configured
    submitit launcher; a prepared directory that exists is only packed for train.seq_len if it is not yet."""
    check_options(cfg, tasks, part_documents)
    params = launcher_params(hydra_cfg)
    kind = launcher_kind(params, OmegaConf.select(hydra_cfg, "runtime.choices", default={}).get("hydra/launcher"))
    data = plain_data_cfg(cfg.data)
    executor = make_executor(params, logs_dir(data.cache_dir), data.num_proc)
    executor.update_parameters(name="prepare-plan")
    _say(f"planning the preparation on {kind} (one job: load the data, the tokenizer, count the documents)")
    plan = _result(executor.submit(plan_job, data), "the plan job")
    key, parts = plan["key"], []
    if plan["built"]:
        _say(f"{DataLayout(data.cache_dir).prepared(key)} is prepared already")
    else:
        parts = document_parts(int(plan["documents"]), int(part_documents))
        _say(f"{plan['documents']:,} documents in {len(parts)} parts of up to {int(part_documents):,}; "
             f"prepared key {key}")
        run_parts(executor, data, key, parts, int(tasks))
    executor.update_parameters(name=f"prepare-assemble-{key}")
    out = _result(executor.submit(assemble_job, data, key, parts, int(cfg.train.seq_len)), "the assemble job")
    return Path(out["prepared"])


# ------------------------------------------------------------------------------------------ command line
def compose(overrides: list[str]):
    """The sweep's config with these overrides, Hydra's part included (for hydra.launcher.*)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    importlib.import_module("splitsweep.resolvers")  # registers ${ss_by_n:...} (sweeps' configs use it)
    if not any(o.lstrip("+~").startswith("hydra/launcher=") for o in overrides):
        overrides = ["hydra/launcher=submitit_slurm", *overrides]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides, return_hydra_config=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m splitsweep.data.prepare_array",
        description="Prepare a data=hf corpus as a SLURM job array through splitsweep's submitit launcher: the "
                    "same shards and manifest, byte for byte, as one local process. The sweep's jobs then find "
                    "them prepared.",
        epilog="OVERRIDES: the sweep's (data=hf data.data_files=... paths.root=...) and the launcher's "
               "(hydra.launcher.partition=... hydra.launcher.mem_gb=...; hydra/launcher=submitit_local for local "
               "processes). Example: python -m splitsweep.data.prepare_array --tasks 16 data=hf "
               "'data.data_files=/data/*.jsonl' data.domain_field=source hydra.launcher.partition=cpu")
    p.add_argument("--tasks", type=int, default=8, help="array tasks (at most one per part; default 8)")
    p.add_argument("--part-documents", type=int, default=100_000,
                   help="documents per part, a multiple of data.batch_documents (default 100000); parts, not "
                        "tasks, fix the result: any --tasks gives the same bytes")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m splitsweep")
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = compose(list(args.overrides))
        prepared = prepare_array(cfg, cfg.hydra, args.tasks, args.part_documents)
    except ConfigError as err:
        print(f"splitsweep: error: {err}", file=sys.stderr, flush=True)
        return 2
    except Exception as err:  # Hydra's override errors, a failed job: one clear line (its log is named)
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(err, (HydraException, OmegaConfBaseException)):
            print(f"splitsweep: error: {err}", file=sys.stderr, flush=True)
            return 2
        if isinstance(err, RuntimeError):
            print(f"splitsweep: error: {err}", file=sys.stderr, flush=True)
            return 1
        raise
    print(prepared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
