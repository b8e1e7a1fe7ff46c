"""Collect the results table from W&B runs (public API): one row per (run, evaluated domain).

A run logs, in its summary or config, the columns of splitsweep/records.py. Two layouts are read:
  - a summary key `results_json` (a JSON string, as splitsweep writes it: W&B rounds floats) or `results`:
    the list of row dicts the run appended to results.jsonl (preferred);
  - otherwise flat keys, one row per run: n_params, pretrain_tokens, special_tokens, eval_loss, ...
    taken from summary first, then config.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .errors import AnalysisError
from .io import REQUIRED


def collect_wandb(path: str, group: str | None = None, api=None) -> pd.DataFrame:
    """Rows of the runs of `entity/project` (optionally one group). `api` is injectable for tests."""
    if path.count("/") != 1 or not all(path.split("/")):
        raise AnalysisError(f"W&B path must be entity/project, got {path!r}")
    if api is None:
        try:
            import wandb
        except ImportError as e:  # pragma: no cover - wandb is a listed dependency
            raise AnalysisError("collecting from W&B needs the wandb package") from e
        if not (os.environ.get("WANDB_API_KEY") or _netrc_has_key()):
            raise AnalysisError("no W&B API key: run `wandb login` or set WANDB_API_KEY to collect from W&B "
                                "(or pass the sweep directory / results.jsonl instead)")
        try:
            api = wandb.Api(timeout=30)
        except Exception as e:
            raise AnalysisError(f"cannot reach W&B: {e}") from e
    filters = {"group": group} if group else {}
    try:
        runs = list(api.runs(path, filters=filters))
    except Exception as e:
        raise AnalysisError(f"cannot list W&B runs of {path}" + (f" group {group}" if group else "") + f": {e}") from e
    rows = []
    for run in runs:
        rows += rows_of_run(run)
    if not rows:
        raise AnalysisError(f"no result rows in W&B {path}" + (f" group {group}" if group else ""))
    return pd.DataFrame(rows)


def _offline_runs(directory) -> list:
    """Every offline W&B run under `directory`: (its directory, its records as wandb's own reader gives them).

    wandb has no Python reader for `.wandb` files; its own CLI `wandb leet inspect --json RUN_DIR` dumps the
    records as JSON lines."""
    import json
    import shutil
    import subprocess

    files = sorted(Path(directory).rglob("run-*.wandb"))
    if not files:
        raise AnalysisError(f"no offline W&B runs (run-*.wandb) under {directory}")
    exe = shutil.which("wandb")
    if exe is None:
        raise AnalysisError("the `wandb` command is not on PATH (pip install wandb)")
    runs = []
    for f in files:
        proc = subprocess.run([exe, "leet", "inspect", "--json", str(f.parent)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise AnalysisError(f"wandb leet inspect failed on {f.parent}: {proc.stderr.strip()[-500:]}")
        records = []
        for line in proc.stdout.splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        runs.append((f.parent, records))
    return runs


def _summary_and_config(records: list) -> tuple[dict, dict]:
    """A run's summary is the merge of its summary updates, in order; its config likewise."""
    summary, config = {}, {}
    for record in records:
        if record.get("type") == "summary":
            summary.update(record["summary"].get("update", {}))
        elif record.get("type") == "run":
            config.update(record["run"].get("config", {}).get("update", {}))
    return summary, config


def _run_id(records: list, run_dir: Path) -> str:
    return next((r["run"]["run_id"] for r in records if r.get("type") == "run" and "run_id" in r["run"]),
                run_dir.name)


def collect_wandb_offline(directory) -> pd.DataFrame:
    """Rows from offline W&B runs under `directory` (e.g. a sweep's wandb/ folder)."""
    rows = []
    for run_dir, records in _offline_runs(directory):
        summary, config = _summary_and_config(records)
        rows += rows_of_run(_Run(summary, config, _run_id(records, run_dir)))
    if not rows:
        raise AnalysisError(f"no result rows in the offline W&B runs under {directory}")
    return pd.DataFrame(rows)


def offline_history(directory) -> dict:
    """{run id: {"base_id", "steps"}} of the offline runs under `directory`, as a sync would upload them: the
    steps of every history record, in the order written. `base_id` names the trajectory or the expert a run
    logs for (splitsweep/logger.py: one W&B run per process, `<base_id>-<attempt>`)."""
    out = {}
    for run_dir, records in _offline_runs(directory):
        summary, config = _summary_and_config(records)
        run_id = _run_id(records, run_dir)
        base = config.get("wandb_base_id", {})
        base = base.get("value") if isinstance(base, dict) else base
        steps = [int(r["history"]["step"]["num"]) for r in records if r.get("type") == "history"]
        entry = out.setdefault(run_id, {"base_id": base or run_id, "steps": []})
        entry["steps"] += steps
    return out


class _Run:
    def __init__(self, summary, config, run_id):
        self.summary, self.config, self.id = summary, config, run_id


def rows_of_run(run) -> list:
    summary = _as_dict(getattr(run, "summary", {}))
    config = _as_dict(getattr(run, "config", {}))
    if isinstance(summary.get("results_json"), str):  # splitsweep's exact copy of its results.jsonl rows
        import json
        return [dict(r) for r in json.loads(summary["results_json"])]
    if isinstance(summary.get("results"), list):
        return [dict(r) for r in summary["results"]]
    row = {**{k: v for k, v in config.items() if not k.startswith("_")},
           **{k: v for k, v in summary.items() if not k.startswith("_")}}
    if not all(k in row for k in REQUIRED):
        return []
    row.setdefault("run_id", getattr(run, "id", None))
    row.setdefault("status", "ok" if getattr(run, "state", "finished") == "finished" else getattr(run, "state"))
    return [row]


def _as_dict(obj) -> dict:
    if isinstance(obj, dict):
        return obj
    for attr in ("_json_dict", "items"):
        if hasattr(obj, attr):
            try:
                return dict(obj.items()) if attr == "items" else dict(getattr(obj, attr))
            except Exception:
                continue
    return {}


def _netrc_has_key() -> bool:
    import netrc
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])
