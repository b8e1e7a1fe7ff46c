"""Read a results table and make it tidy: one row per (trained model, evaluated domain).

Sources: a sweep directory (its `results.jsonl`, written by splitsweep/records.py), or one file
(.jsonl / .json / .csv / .parquet). Column names are the contract in splitsweep/records.py COLUMNS.
Only n_params, pretrain_tokens, special_tokens and eval_loss are required; a table with just those is
single-domain data (every row an expert on its own, only, domain with mixture weight 1).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import AnalysisError

RESULTS_FILE = "results.jsonl"  # same name as splitsweep.records.RESULTS_FILE
REQUIRED = ("n_params", "pretrain_tokens", "special_tokens", "eval_loss")
MIXTURE = "mixture"  # expert_domain of the no-split baseline, eval_domain of the whole-mixture eval
SINGLE_DOMAIN = "all"  # domain name given to single-domain data

# Which rows the law is fitted on. The law predicts a model's loss on one domain's held-out text.
SELECTIONS = {
    "own+baseline": "experts on their own domain, and the mixture baseline on each individual domain "
    "(eval_domain != 'mixture' and expert_domain in {eval_domain, 'mixture'}): the split decision "
    "compares exactly these two on the same domain",
    "all-domains": "every row with eval_domain != 'mixture', cross-domain rows included (another domain's "
    "expert sees the evaluated domain only through p*D)",
    "own": "experts on their own domain only (expert_domain == eval_domain, baseline excluded)",
}
DEFAULT_SELECTION = "own+baseline"


def load_results(source, batch_tokens: int | None = None) -> pd.DataFrame:
    """The tidy, validated table of `ok` rows; attrs['dropped_status'] counts rows dropped for status."""
    if isinstance(source, pd.DataFrame):
        raw, where = source.copy(), "<DataFrame>"
    else:
        raw, where = read_table(source), str(source)
    return tidy(raw, where)


def read_table(source) -> pd.DataFrame:
    path = Path(source)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        raise AnalysisError(f"no results at {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        # A torn last line (a writer killed mid-append) is skipped, as splitsweep.records.read_rows does.
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return pd.DataFrame(rows)
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise AnalysisError(f"{path}: unknown results format {suffix!r} (use .jsonl, .csv or .parquet, or a sweep dir)")


def tidy(raw: pd.DataFrame, where: str = "<table>") -> pd.DataFrame:
    if len(raw) == 0:
        raise AnalysisError(f"{where}: the results table is empty")
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise AnalysisError(f"{where}: missing required column(s) {', '.join(missing)} "
                            f"(have: {', '.join(map(str, raw.columns))})")
    df = raw.copy()
    df["source_row"] = np.arange(len(df))  # position in the source, to name rows in errors
    n_before = len(df)
    if "status" in df.columns:
        df = df[df["status"].fillna("ok").astype(str) == "ok"]
    dropped = n_before - len(df)
    if len(df) == 0:
        raise AnalysisError(f"{where}: no row has status 'ok' ({n_before} rows dropped)")

    # Defaults for single-domain data: each row is an expert evaluated on its own (only) domain.
    if "expert_domain" not in df.columns:
        df["expert_domain"] = df["eval_domain"] if "eval_domain" in df.columns else SINGLE_DOMAIN
    if "eval_domain" not in df.columns:
        df["eval_domain"] = df["expert_domain"]
    df["expert_domain"] = df["expert_domain"].fillna(SINGLE_DOMAIN).astype(str)
    df["eval_domain"] = df["eval_domain"].fillna(df["expert_domain"]).astype(str)
    if "mixture_weight" not in df.columns:
        df["mixture_weight"] = np.nan
    # A lone domain is the whole mixture; the 'mixture' eval is the whole mixture by definition.
    lone = df["eval_domain"].nunique() == 1
    fill = np.where((df["eval_domain"] == MIXTURE) | lone, 1.0, np.nan)
    df["mixture_weight"] = pd.to_numeric(df["mixture_weight"], errors="coerce").fillna(pd.Series(fill, index=df.index))

    for col in ("n_params", "pretrain_tokens", "special_tokens", "eval_loss", "mixture_weight"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if "recall_accuracy" in df.columns:
        df["recall_accuracy"] = pd.to_numeric(df["recall_accuracy"], errors="coerce").astype(float)

    _check(df, where)

    if "run_id" not in df.columns or df["run_id"].isna().any():
        # "A trained model" when no run_id is recorded: its size, its two token counts, its domain.
        key = (df["n_params"].map(repr) + "|" + df["pretrain_tokens"].map(repr) + "|"
               + df["special_tokens"].map(repr) + "|" + df["expert_domain"])
        df["run_id"] = df["run_id"].fillna(key) if "run_id" in df.columns else key
    df["run_id"] = df["run_id"].astype(str)
    df["budget_tokens"] = df["pretrain_tokens"] + df["special_tokens"]
    df["pretrain_fraction"] = df["pretrain_tokens"] / df["budget_tokens"]
    df = df.reset_index(drop=True)
    df.attrs["dropped_status"] = int(dropped)
    df.attrs["source"] = where
    return df


def _name_rows(df: pd.DataFrame, mask, col: str, limit: int = 8) -> str:
    bad = df[mask]
    parts = []
    for _, r in bad.head(limit).iterrows():
        ident = f"run_id={r['run_id']}, " if "run_id" in bad.columns and isinstance(r.get("run_id"), str) else ""
        parts.append(f"row {int(r['source_row'])} ({ident}eval_domain={r['eval_domain']}): {col}={r[col]!r}")
    more = f" ... and {len(bad) - limit} more" if len(bad) > limit else ""
    return "; ".join(parts) + more


def _check(df: pd.DataFrame, where: str) -> None:
    loss = df["eval_loss"]
    bad = ~np.isfinite(loss) | (loss <= 0)
    if bad.any():
        raise AnalysisError(f"{where}: {int(bad.sum())} row(s) with NaN, infinite, zero or negative eval_loss: "
                            + _name_rows(df, bad, "eval_loss"))
    n = df["n_params"]
    bad = ~np.isfinite(n) | (n <= 0)
    if bad.any():
        raise AnalysisError(f"{where}: n_params must be a positive number: " + _name_rows(df, bad, "n_params"))
    for col in ("pretrain_tokens", "special_tokens"):
        t = df[col]
        bad = ~np.isfinite(t) | (t < 0)
        if bad.any():
            raise AnalysisError(f"{where}: {col} must be a number >= 0: " + _name_rows(df, bad, col))
    bad = (df["pretrain_tokens"] + df["special_tokens"]) <= 0
    if bad.any():
        raise AnalysisError(f"{where}: rows trained on zero tokens (pretrain_tokens + special_tokens = 0): "
                            + _name_rows(df, bad, "pretrain_tokens"))
    w = df["mixture_weight"]
    bad = ~np.isfinite(w) | (w <= 0) | (w > 1)
    if bad.any():
        raise AnalysisError(f"{where}: mixture_weight must be in (0, 1] (needed for every domain eval row "
                            "of multi-domain data): " + _name_rows(df, bad, "mixture_weight"))


def select_rows(df: pd.DataFrame, selection: str = DEFAULT_SELECTION) -> pd.DataFrame:
    """The rows a law is fitted on (see SELECTIONS); single-domain data is used whole."""
    if selection not in SELECTIONS:
        raise AnalysisError(f"unknown row selection {selection!r}; choose one of {', '.join(SELECTIONS)}")
    ev, ex = df["eval_domain"], df["expert_domain"]
    if selection == "all-domains":
        keep = ev != MIXTURE
    elif selection == "own":
        keep = (ev != MIXTURE) & (ex == ev)
    else:
        keep = (ev != MIXTURE) & ((ex == ev) | (ex == MIXTURE))
    if not keep.any() and (ev == MIXTURE).all():
        # Only whole-mixture evals (e.g. the baseline alone): fit what there is.
        keep = ev == MIXTURE
    out = df[keep].reset_index(drop=True)
    if len(out) == 0:
        raise AnalysisError(f"no rows left after the row selection {selection!r} ({SELECTIONS[selection]})")
    out.attrs.update(df.attrs)
    out.attrs["selection"] = selection
    return out


def batch_tokens_of(df: pd.DataFrame, batch_tokens: int | None = None) -> int | None:
    """Tokens in one optimizer step: the argument if given, else the table's `batch_tokens` column."""
    if batch_tokens is not None:
        return int(batch_tokens)
    if "batch_tokens" in df.columns:
        vals = pd.to_numeric(df["batch_tokens"], errors="coerce").dropna()
        if len(vals):
            return int(vals.max())
    return None


def domain_weights(df: pd.DataFrame) -> dict[str, float]:
    """Each individual domain's mixture weight (mean over its eval rows)."""
    dom = df[df["eval_domain"] != MIXTURE]
    if len(dom) == 0:
        dom = df
    w = dom.groupby("eval_domain")["mixture_weight"].mean()
    return {str(k): float(v) for k, v in w.items() if math.isfinite(v)}
