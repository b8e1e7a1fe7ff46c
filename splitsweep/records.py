"""The results table: one JSON line per (trained model, evaluated domain).

Rows are the only thing `analysis/` reads from training, so their columns are a contract.

Appends are whole lines or nothing, once per `run_id`: under an exclusive lock, every byte is written and
flushed, or the file is cut back to where it was and the error raised. A small index beside the table,
`.records/<table>/<run_id>.json` (the byte range of the run's rows), answers "is this run recorded?" without
reading the table. The index is repaired from the table itself: rows appended by a writer killed before
it indexed them are indexed by the next writer, and a torn last line (a writer killed mid-append, before
this module wrote whole lines) is moved to `<table>.torn` so that the table stays parseable.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .fsio import AppendError, append_lines, locked, read_jsonl
from .layout import RESULTS_FILE, SweepLayout
from .store import write_json_atomic


def _column(doc: str, **default) -> Any:
    return field(metadata={"doc": doc}, **default)


@dataclass(frozen=True)
class ResultRow:
    """One row of the results table: a trained model measured on one held-out domain. Its fields are the
    columns `analysis/` relies on, in the order they are written."""

    # the grid point
    sweep: str = _column("name of the sweep (the Hydra multirun) that produced the row")
    run_id: str = _column("signature of the grid point: hash of everything that determines the trained model")
    model: str = _column("model config name, e.g. llama_430k")
    n_params: int = _column("non-embedding parameters (blocks + final norm): the N of the law")
    n_params_total: int = _column("all parameters, embeddings and output head included")
    # its split
    pretrain_tokens: int = _column("D: tokens of the seed, trained on the mixture")
    special_tokens: int = _column("D': tokens of the expert phase, on expert_domain")
    expert_domain: str = _column("a data domain, or 'mixture' for the no-split baseline")
    # the measurement
    eval_domain: str = _column("held-out domain this row's loss is measured on, or 'mixture'")
    mixture_weight: float = _column("eval_domain's share of the mixture's tokens (1.0 for 'mixture')")
    eval_loss: float = _column(
        "mean next-token cross-entropy on held-out text, nats per token; for 'mixture', the domains' losses "
        "weighted by their mixture shares")
    eval_tokens: int = _column("held-out tokens the loss averages over")
    eval_loss_se: float = _column(
        "standard error of eval_loss over the held-out documents (nats per token); for 'mixture', from the "
        "domains' standard errors")
    recall_accuracy: float | None = _column("exact-match greedy recall of facts (phonebook only, else null)")
    # compute, and how it was spent
    flops: int = _column("6 * n_params * (pretrain_tokens + special_tokens): seed share plus expert")
    flops_total_params: int = _column("6 * n_params_total * (pretrain_tokens + special_tokens)")
    schedule: str = _column("learning-rate schedule that produced the model: wsd or cosine")
    precision: str = _column(
        "compute dtype of training and evaluation matmuls: fp32 or bf16 (weights and losses fp32)")
    seed: int = _column("random seed of model init and data order")
    # provenance
    config_hash: str = _column("hash of the resolved job config")
    seed_id: str = _column("identity of the seed trajectory the expert started from")
    git_sha: str = _column("commit of the code that trained the model")
    wall_s: float = _column("wall-clock seconds the job spent (seed share not included if reused)")
    tokens_trained: int = _column("tokens this job actually trained (seed tokens included only if it trained them)")
    # data and batch
    epochs_max: float = _column("largest number of passes over any domain's training data (repetition)")
    batch_tokens: int = _column("tokens per optimizer step (global_batch x seq_len)")
    # the budget
    accounting: str = _column(
        "how the budget was split: per_path (T = D + D' per expert path) or shared_seed (C = D + K·D')")
    budget_tokens: int = _column("the budget the grid point's split divides: T (per_path) or C (shared_seed)")
    n_experts: int = _column("K, the experts sharing one seed (1 under per_path)")
    cooldown_tokens: int = _column(
        "pretraining only (D' = 0) under wsd: the last tokens of D, decayed on the mixture (else 0)")
    status: str = _column("'ok': the model was trained and measured", default="ok")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Column -> meaning, from the row's fields.
COLUMNS = {f.name: f.metadata["doc"] for f in fields(ResultRow)}


INDEX_DIR = ".records"


class RecordWriteError(OSError):
    """Rows could not be written whole (e.g. a full disk); the table was left as it was."""


def _index_dir(table: Path) -> Path:
    return table.parent / INDEX_DIR / table.stem


def _is_row(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("run_id"), str)


def _row_key(row: dict, key: str) -> str:
    # A row written before its table had `key` (downstream rows before eval_id) counts under its run_id.
    value = row.get(key)
    return value if isinstance(value, str) else row["run_id"]


@contextlib.contextmanager
def _locked(table: Path, key: str = "run_id"):
    with locked(table):
        _repair(table, key)
        yield


def _repair(table: Path, key: str = "run_id") -> None:
    """Holding the lock: cut a torn tail off the table, and index rows that no marker covers yet."""
    index = _index_dir(table)
    if not table.exists():
        shutil.rmtree(index, ignore_errors=True)  # the table was removed: so is what it recorded
        return
    with open(table, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                f.seek(0)
                data = f.read()
                keep = data.rfind(b"\n") + 1
                with open(table.with_name(table.name + ".torn"), "ab") as torn:
                    torn.write(data[keep:] + b"\n")
                f.truncate(keep)
                os.fsync(f.fileno())
                size = keep
        covered_file = index / ".covered"
        covered = json.loads(covered_file.read_text())["bytes"] if covered_file.exists() else 0
        if covered > size:  # the table was cut or replaced by hand: index it again from the start
            shutil.rmtree(index, ignore_errors=True)
            covered = 0
        if covered == size:
            return
        f.seek(covered)
        spans: dict[str, list[int]] = {}
        offset = covered
        for line in f.read(size - covered).splitlines(keepends=True):
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if _is_row(row):
                span = spans.setdefault(_row_key(row, key), [offset, 0, 0])
                span[1], span[2] = offset + len(line) - span[0], span[2] + 1
            offset += len(line)
    for ident, (start, length, n) in spans.items():
        if not (index / f"{ident}.json").exists():
            write_json_atomic(index / f"{ident}.json", {"offset": start, "length": length, "rows": n})
    write_json_atomic(covered_file, {"bytes": size})


def append_rows(sweep_dir: str | os.PathLike, rows: list[dict], filename: str = RESULTS_FILE,
                key: str = "run_id") -> bool:
    """Append `rows` (all of one `key`: a run, or one evaluation of a run) to `sweep_dir/filename` unless that
    key is already there.

    Returns True when the rows were written, False when they were already there. Raises
    RecordWriteError, with the table unchanged, when they cannot all be written.
    """
    if not rows:
        return False
    run_ids = {_row_key(r, key) for r in rows}
    if len(run_ids) != 1:
        raise ValueError(f"append_rows takes the rows of one {key}, got {sorted(run_ids)}")
    (run_id,) = run_ids
    table = Path(sweep_dir) / filename
    payload = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    with _locked(table, key):
        marker = _index_dir(table) / f"{run_id}.json"
        if marker.exists():
            return False
        try:
            start = append_lines(table, payload, lock=False)  # _locked holds the lock; its repair cut any torn tail
        except AppendError as err:
            cause = err.__cause__
            raise RecordWriteError(err.errno, f"could not record {len(rows)} rows of run {run_id} in "
                                   f"{table}: {cause.strerror or cause}; the table is unchanged") from cause
        write_json_atomic(marker, {"offset": start, "length": len(payload), "rows": len(rows)})
        write_json_atomic(_index_dir(table) / ".covered", {"bytes": start + len(payload)})
    return True


def is_recorded(sweep_dir: str | os.PathLike, run_id: str, filename: str = RESULTS_FILE,
                key: str = "run_id") -> bool:
    """Whether `run_id` (a value of `key`) has rows in the table: one small file read, not the table."""
    table = Path(sweep_dir) / filename
    marker = _index_dir(table) / f"{run_id}.json"
    try:
        span = json.loads(marker.read_text())
        if table.stat().st_size >= span["offset"] + span["length"]:
            return True
    except (OSError, ValueError, KeyError):
        pass
    if not table.exists() and not marker.parent.exists():
        return False
    with _locked(table, key):  # index what a killed writer left unindexed; drop an index the table outlived
        return marker.exists()


def recorded_rows(sweep_dir: str | os.PathLike, run_id: str, filename: str = RESULTS_FILE) -> list[dict]:
    """The rows of one recorded run, read from its byte range ([] when it is not recorded)."""
    table = Path(sweep_dir) / filename
    if not is_recorded(sweep_dir, run_id, filename):
        return []
    span = json.loads((_index_dir(table) / f"{run_id}.json").read_text())
    with open(table, "rb") as f:
        f.seek(span["offset"])
        rows = [json.loads(line) for line in f.read(span["length"]).splitlines()]
    if len(rows) != span["rows"] or any(r.get("run_id") != run_id for r in rows):
        raise RuntimeError(f"the index of {table} does not match the table for run {run_id}; "
                           f"remove {_index_dir(table)} to rebuild it")
    return rows


def read_rows(path: str | os.PathLike, run_id: str | None = None) -> list[dict]:
    """Rows of a results file. Lines that are not rows (a torn last line, a foreign line without a
    `run_id`) are skipped: `analysis` is the strict reader."""
    path = Path(path)
    if path.is_dir():
        path = SweepLayout(path).results
    return [row for row in read_jsonl(path) if _is_row(row) and (run_id is None or row["run_id"] == run_id)]
