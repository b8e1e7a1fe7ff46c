"""Collect the results table from W&B runs (public API): one row per (run, evaluated domain).

A run logs, in its summary or config, the columns of splitsweep/records.py. Two layouts are read:
  - a summary key `results`: the list of row dicts the run appended to results.jsonl (preferred);
  - otherwise flat keys, one row per run: n_params, pretrain_tokens, special_tokens, eval_loss, ...
    taken from summary first, then config.
"""
from __future__ import annotations

import os

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


def rows_of_run(run) -> list:
    summary = _as_dict(getattr(run, "summary", {}))
    config = _as_dict(getattr(run, "config", {}))
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
