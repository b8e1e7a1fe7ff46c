"""The results table: one JSON line per (trained model, evaluated domain).

Rows are the only thing `analysis/` reads from training, so their columns are a contract.
Appends are atomic (one `write` under an exclusive lock, then fsync) and idempotent per `run_id`.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

RESULTS_FILE = "results.jsonl"

# Column -> meaning. `analysis/` relies on these names.
COLUMNS = {
    "sweep": "name of the sweep (the Hydra multirun) that produced the row",
    "run_id": "signature of the grid point: hash of everything that determines the trained model",
    "model": "model config name, e.g. llama_430k",
    "n_params": "non-embedding parameters (blocks + final norm): the N of the law",
    "n_params_total": "all parameters, embeddings and output head included",
    "pretrain_tokens": "D: tokens of the seed, trained on the mixture",
    "special_tokens": "D': tokens of the expert phase, on expert_domain",
    "expert_domain": "a data domain, or 'mixture' for the no-split baseline",
    "eval_domain": "held-out domain this row's loss is measured on, or 'mixture'",
    "mixture_weight": "eval_domain's share of the mixture's tokens (1.0 for 'mixture')",
    "eval_loss": "mean next-token cross-entropy on held-out text, nats per token",
    "eval_tokens": "held-out tokens the loss averages over",
    "recall_accuracy": "exact-match greedy recall of facts (phonebook only, else null)",
    "flops": "6 * n_params * (pretrain_tokens + special_tokens): seed share plus expert",
    "flops_total_params": "6 * n_params_total * (pretrain_tokens + special_tokens)",
    "schedule": "learning-rate schedule that produced the model: wsd or cosine",
    "seed": "random seed of model init and data order",
    "config_hash": "hash of the resolved job config",
    "seed_id": "identity of the seed trajectory the expert started from",
    "git_sha": "commit of the code that trained the model",
    "wall_s": "wall-clock seconds the job spent (seed share not included if reused)",
    "tokens_trained": "tokens this job actually trained (seed tokens included only if it trained them)",
    "epochs_max": "largest number of passes over any domain's training data (repetition)",
    "status": "ok",
}


def append_rows(sweep_dir: str | os.PathLike, rows: list[dict], filename: str = RESULTS_FILE) -> bool:
    """Append `rows` (all of one run_id) to `sweep_dir/filename` unless that run_id is already there.

    Returns True when the rows were written, False when the run was already there.
    """
    if not rows:
        return False
    run_ids = {r["run_id"] for r in rows}
    if len(run_ids) != 1:
        raise ValueError(f"append_rows takes the rows of one run, got run_ids {sorted(run_ids)}")
    (run_id,) = run_ids
    path = Path(sweep_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if run_id in {r["run_id"] for r in read_rows(path)}:
            return False
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
    return True


def read_rows(path: str | os.PathLike, run_id: str | None = None) -> list[dict]:
    """Rows of a results file; a torn last line (a writer killed mid-write) is ignored."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if run_id is None or row.get("run_id") == run_id:
            rows.append(row)
    return rows
