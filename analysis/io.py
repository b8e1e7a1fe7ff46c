"""Read a results table and make it tidy: one row per (trained model, evaluated domain).

Sources: a sweep directory (its `results.jsonl`, written by splitsweep/records.py), or one file
(.jsonl / .json / .csv / .parquet). Column names are the contract in splitsweep/records.py COLUMNS.
Only n_params, pretrain_tokens, special_tokens and eval_loss are required; a table with just those is
single-domain data (every row an expert on its own, only, domain with mixture weight 1).

What is refused (an AnalysisError naming the file, the line and the value), because a fit on it would be
silently wrong:
- a line of a .jsonl that is not a JSON object. Only a torn last line (no trailing newline and
  unparseable: a writer killed mid-append) is skipped, with a warning and attrs['torn_last_line'];
- a boolean, a string or any other non-number where a number is required (n_params, pretrain_tokens,
  special_tokens, eval_loss, mixture_weight): JSON `true` is not 1.0. Missing values are refused by the
  range checks (eval_loss must be finite and > 0, n_params > 0, token counts >= 0);
- duplicate rows: one row per (trained model, evaluated domain). A trained model is its run_id; a row
  without run_id (a foreign table) is identified by (n_params, pretrain_tokens, special_tokens,
  expert_domain, eval_domain), so replicates of one grid point (e.g. seeds) need their own run_ids.
  Identical duplicates (a file appended twice) and conflicting ones (the same model recorded twice with
  different values) are both refused, and the message says which. Only rows with status 'ok' count.
"""
from __future__ import annotations

import json
import math
import numbers
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import AnalysisError
from .roles import BASELINE, CROSS, MIXTURE, OWN, role

RESULTS_FILE = "results.jsonl"  # same name as splitsweep.records.RESULTS_FILE
REQUIRED = ("n_params", "pretrain_tokens", "special_tokens", "eval_loss")
NUMBERS = REQUIRED + ("mixture_weight",)  # columns whose values must be numbers (or missing)
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
        raw = read_table(source)
        where = raw.attrs.get("path", str(source))  # the file itself, also when given a sweep dir
    return tidy(raw, where)


def read_table(source) -> pd.DataFrame:
    """The raw rows of a results file. attrs: 'path' (the file read), 'source_lines' (each row's line in
    it, for text formats) and 'torn_last_line' (the line skipped as a torn append, else None)."""
    path = Path(source)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        raise AnalysisError(f"no results at {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        raw = _read_jsonl(path)
    elif suffix == ".csv":
        raw = _read_csv(path)
    elif suffix in (".parquet", ".pq"):
        raw = pd.read_parquet(path)
    else:
        raise AnalysisError(f"{path}: unknown results format {suffix!r} (use .jsonl, .csv or .parquet, or a sweep dir)")
    raw.attrs["path"] = str(path)
    return raw


def _clip(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _read_jsonl(path: Path) -> pd.DataFrame:
    text = path.read_text()
    lines = text.split("\n")  # JSON lines end in \n only (splitlines would also split at \x1c, \u2028, ...)
    rows, numbers_, torn = [], [], None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            # A writer killed mid-append leaves one unfinished last line, without its newline (as
            # splitsweep.records.read_rows assumes): skip that one. Anything else is corruption.
            if i == len(lines):
                torn = i
                continue
            raise AnalysisError(f"{path}: line {i} is not JSON ({e.msg}): {_clip(line)}; a results file holds "
                                "one JSON object per line: repair or remove that line")
        if not isinstance(row, dict):
            raise AnalysisError(f"{path}: line {i} is a JSON {type(row).__name__}, not an object: {_clip(line)}; "
                                "a results file holds one JSON object (one row) per line")
        rows.append(row)
        numbers_.append(i)
    raw = pd.DataFrame(rows)
    raw.attrs["source_lines"] = numbers_  # a list: pandas compares attrs (e.g. in concat), arrays cannot be
    raw.attrs["torn_last_line"] = torn
    if torn is not None:
        warnings.warn(f"{path}: line {torn}, the last, is unfinished JSON without a newline (a writer killed "
                      f"mid-append?): skipped: {_clip(lines[torn - 1])}", stacklevel=3)
    return raw


def _read_csv(path: Path) -> pd.DataFrame:
    # Blank lines are kept, then dropped, so that row i is line i + 2 (the header is line 1).
    raw = pd.read_csv(path, skip_blank_lines=False)
    blank = raw.isna().all(axis=1).to_numpy()
    raw = raw[~blank].reset_index(drop=True)
    for col in NUMBERS:
        if col in raw.columns and not pd.api.types.is_numeric_dtype(raw[col]):
            # Every CSV cell is text; one non-number leaves the whole column text, so parse the numbers
            # here and leave only the real non-numbers for tidy to refuse.
            raw[col] = raw[col].map(_csv_number).astype(object)
    raw.attrs["source_lines"] = ((np.arange(len(blank)) + 2)[~blank]).tolist()
    raw.attrs["torn_last_line"] = None
    return raw


def _csv_number(v):
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def tidy(raw: pd.DataFrame, where: str = "<table>") -> pd.DataFrame:
    if len(raw) == 0:
        raise AnalysisError(f"{where}: the results table is empty")
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise AnalysisError(f"{where}: missing required column(s) {', '.join(missing)} "
                            f"(have: {', '.join(map(str, raw.columns))})")
    df = raw.copy()
    lines = df.attrs.pop("source_lines", None)
    torn = df.attrs.pop("torn_last_line", None)
    df["source_row"] = np.arange(len(df))  # position in the source, to name rows in errors
    if lines is not None and len(lines) == len(df):
        df["source_line"] = lines  # line in the source file: what an error should point at
    n_before = len(df)
    if "status" in df.columns:
        df = df[df["status"].fillna("ok").astype(str) == "ok"]
    dropped = n_before - len(df)
    if len(df) == 0:
        raise AnalysisError(f"{where}: no row has status 'ok' ({n_before} rows dropped)")
    _check_types(df, where)

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

    derived = _derive_run_ids(df)
    _check_duplicates(df, derived, where)
    df["budget_tokens"] = df["pretrain_tokens"] + df["special_tokens"]
    df["pretrain_fraction"] = df["pretrain_tokens"] / df["budget_tokens"]
    df = df.reset_index(drop=True)
    df.attrs["dropped_status"] = int(dropped)
    df.attrs["source"] = where
    df.attrs["torn_last_line"] = torn
    return df


def _derive_run_ids(df: pd.DataFrame) -> pd.Series:
    """Fill run_id where none is recorded; returns the mask of the rows whose run_id was derived."""
    derived = df["run_id"].isna() if "run_id" in df.columns else pd.Series(True, index=df.index)
    if derived.any():
        # "A trained model" when no run_id is recorded: its size, its two token counts, its domain.
        key = (df["n_params"].map(repr) + "|" + df["pretrain_tokens"].map(repr) + "|"
               + df["special_tokens"].map(repr) + "|" + df["expert_domain"])
        df["run_id"] = df["run_id"].fillna(key) if "run_id" in df.columns else key
    df["run_id"] = df["run_id"].astype(str)
    return derived


def _show(v) -> str:
    return repr(v.item() if isinstance(v, np.generic) else v)  # 1.5, not np.float64(1.5)


def _place(r) -> str:
    """Where a row is in its source: the file's line if known, else its position (from 0)."""
    line = r.get("source_line")
    return f"line {int(line)}" if line is not None and pd.notna(line) else f"row {int(r['source_row'])}"


def _name_rows(df: pd.DataFrame, mask, col: str, limit: int = 8) -> str:
    bad = df[mask]
    parts = []
    for _, r in bad.head(limit).iterrows():
        ident = f"run_id={r['run_id']}, " if "run_id" in bad.columns and isinstance(r.get("run_id"), str) else ""
        eval_domain = r.get("eval_domain", r.get("expert_domain", SINGLE_DOMAIN))
        if not isinstance(eval_domain, str):
            eval_domain = SINGLE_DOMAIN  # single-domain data, before tidy fills the column in
        parts.append(f"{_place(r)} ({ident}eval_domain={eval_domain}): {col}={_show(r[col])}")
    more = f" ... and {len(bad) - limit} more" if len(bad) > limit else ""
    return "; ".join(parts) + more


def _is_number_or_missing(v) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False  # a bool is an int to Python, so JSON true would pass as 1.0
    if isinstance(v, numbers.Real):
        return True
    return v is None or v is pd.NA  # missing: the range checks in _check name it


def _check_types(df: pd.DataFrame, where: str) -> None:
    """Refuse booleans, text and other non-numbers where a number is required (before any coercion)."""
    for col in NUMBERS:
        if col not in df.columns:
            continue
        values = df[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            continue  # a numeric column holds numbers or NaN only
        bad = ~values.map(_is_number_or_missing).astype(bool)
        if bad.any():
            raise AnalysisError(f"{where}: {col} must be a number, not a boolean or text: {int(bad.sum())} "
                                "row(s): " + _name_rows(df, bad, col) + "; write the number itself")


def _check_duplicates(df: pd.DataFrame, derived: pd.Series, where: str, limit: int = 8) -> None:
    """One row per (trained model, evaluated domain): a repeat is a file appended twice, or a model
    recorded twice; a fit would count it twice (or fit two answers to one question)."""
    dup = df.duplicated(["run_id", "eval_domain"], keep=False)
    if not dup.any():
        return
    compared = [c for c in df.columns if c not in ("source_row", "source_line")]
    groups = list(df[dup].groupby(["run_id", "eval_domain"], sort=False))
    parts = []
    for (run_id, eval_domain), g in groups[:limit]:
        first = g.iloc[0]
        ident = (f"n_params={_show(first['n_params'])}, pretrain_tokens={_show(first['pretrain_tokens'])}, "
                 f"special_tokens={_show(first['special_tokens'])}, expert_domain={first['expert_domain']}, "
                 f"no run_id" if derived[g.index].all() else f"run_id={run_id}")
        at = " and ".join(_place(r) for _, r in g.iterrows()) + f" ({ident}, eval_domain={eval_domain})"
        differ = {c: list(dict.fromkeys(g[c].map(_show))) for c in compared}
        differ = {c: v for c, v in differ.items() if len(v) > 1}
        if differ:
            parts.append(f"{at} have conflicting values: "
                         + ", ".join(f"{c} {' vs '.join(v)}" for c, v in differ.items()))
        else:
            parts.append(f"{at} are identical duplicates")
    more = f" ... and {len(groups) - limit} more" if len(groups) > limit else ""
    fix = ("remove the repeated rows (a results file appended twice?)"
           + ("; rows without run_id are told apart by (n_params, pretrain_tokens, special_tokens, "
              "expert_domain, eval_domain): give replicates (e.g. seeds) their own run_id" if derived[dup].any() else ""))
    raise AnalysisError(f"{where}: {len(groups)} (trained model, eval_domain) pair(s) appear more than once, "
                        "one row each is expected: " + "; ".join(parts) + more + "; " + fix)


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
    ev, r = df["eval_domain"], role(df)
    if selection == "all-domains":
        keep = ev != MIXTURE
    elif selection == "own":
        keep = (ev != MIXTURE) & (r == OWN)
    else:
        keep = (ev != MIXTURE) & (r != CROSS)
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


def budget_of(rows: pd.DataFrame, accounting: str | None = None, k: int | None = None) -> pd.Series:
    """Each row's budget in its accounting, what splitsweep/records.py records as budget_tokens (which
    tidy replaces by D + D'): T = D + D' under per-path; under shared-seed C = D + K·D' for an expert path
    and C = D + D' for the mixture baseline (one model of C tokens), rounded to 10 significant digits so
    that the runs of one C compare equal.

    accounting: 'per-path' / 'shared-seed' (or the rows' names per_path / shared_seed) for every row; None
    reads each row's `accounting` column (per_path where missing, as for older tables). k: K for every
    row; None reads the rows' `n_experts` (where missing, the number of individual domains).
    """
    d, dp = rows["pretrain_tokens"].astype(float), rows["special_tokens"].astype(float)
    if accounting is not None:
        shared = pd.Series(str(accounting).replace("_", "-") == "shared-seed", index=rows.index)
    elif "accounting" in rows.columns:
        shared = rows["accounting"].astype(object).where(rows["accounting"].notna(), "per_path") \
            .astype(str).str.replace("_", "-") == "shared-seed"
    else:
        shared = pd.Series(False, index=rows.index)
    if not shared.any():
        return d + dp
    if k is not None:
        kk = pd.Series(float(k), index=rows.index)
    else:
        n_dom = max(1, int(rows.loc[rows["eval_domain"] != MIXTURE, "eval_domain"].nunique())) \
            if "eval_domain" in rows.columns else 1
        kk = (pd.to_numeric(rows["n_experts"], errors="coerce") if "n_experts" in rows.columns
              else pd.Series(np.nan, index=rows.index)).fillna(float(n_dom)).astype(float)
    expert = (role(rows) != BASELINE) if "expert_domain" in rows.columns else pd.Series(True, index=rows.index)
    c = d + dp * np.where(expert, kk, 1.0)
    c = c.map(lambda v: float(f"{v:.10g}"))
    return (d + dp).where(~shared, c)


def budget_label(rows: pd.DataFrame, accounting: str | None = None) -> str:
    """How budget_of's budget is written: "C" when every row is shared-seed, else "D + D'"."""
    if accounting is not None:
        return "C" if str(accounting).replace("_", "-") == "shared-seed" else "D + D'"
    if "accounting" not in rows.columns or rows["accounting"].isna().any():
        return "D + D'"
    return "C" if (rows["accounting"].astype(str).str.replace("_", "-") == "shared-seed").all() else "D + D'"
