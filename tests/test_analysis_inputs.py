"""Bad input gets a clear error; valid minimal inputs are accepted."""
import sys
import json

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))  # repo root
from analysis.errors import AnalysisError
from analysis.fit import fit_law
from analysis.io import load_results, select_rows
from analysis.laws import LAWS
from analysis.split import check_budget


def minimal(n=12):
    rng = np.random.default_rng(0)
    N = np.repeat([1e6, 4e6, 16e6], n // 3)
    D = np.tile(np.geomspace(1e7, 1e9, n // 3), 3)
    return pd.DataFrame({"n_params": N, "pretrain_tokens": D, "special_tokens": 0.0,
                         "eval_loss": 1.8 + 100 * N ** -0.34 + 200 * D ** -0.3 + 0.001 * rng.standard_normal(n)})


def test_minimal_file_is_single_domain(tmp_path):
    path = tmp_path / "r.csv"
    minimal().to_csv(path, index=False)
    df = load_results(path)
    assert set(df["expert_domain"]) == set(df["eval_domain"]) == {"all"}
    assert (df["mixture_weight"] == 1.0).all()
    assert df["run_id"].nunique() == len(df)  # one trained model per (N, D, D', domain)
    assert len(select_rows(df)) == len(df)


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_reads_every_format_and_sweep_dir(tmp_path, suffix):
    t = minimal().assign(status=["ok"] * 11 + ["failed"])
    path = tmp_path / f"results.{suffix}"
    {"jsonl": lambda: path.write_text("".join(json.dumps(r) + "\n" for r in t.to_dict("records")) + '{"torn'),
     "csv": lambda: t.to_csv(path, index=False), "parquet": lambda: t.to_parquet(path)}[suffix]()
    df = load_results(tmp_path if suffix == "jsonl" else path)  # a sweep dir reads its results.jsonl
    assert len(df) == 11 and df.attrs["dropped_status"] == 1


def test_missing_columns_are_named():
    with pytest.raises(AnalysisError, match="missing required column.*special_tokens, eval_loss"):
        load_results(minimal().drop(columns=["special_tokens", "eval_loss"]))


@pytest.mark.parametrize("bad", [np.nan, 0.0, -1.0])
def test_bad_losses_name_the_rows(bad):
    t = minimal()
    t.loc[[2, 7], "eval_loss"] = bad
    with pytest.raises(AnalysisError) as e:
        load_results(t)
    msg = str(e.value)
    assert "row 2 " in msg and "row 7 " in msg and "eval_loss" in msg and "2 row(s)" in msg


def test_negative_tokens_and_missing_mixture_weight():
    t = minimal()
    t.loc[3, "pretrain_tokens"] = -5
    with pytest.raises(AnalysisError, match="row 3 .*pretrain_tokens"):
        load_results(t)
    t = minimal().assign(expert_domain=["a", "b"] * 6)
    with pytest.raises(AnalysisError, match="mixture_weight"):
        load_results(t)


def test_too_few_points_says_how_many_needed():
    df = load_results(minimal().head(4).assign(n_params=[1e6, 2e6, 1e6, 2e6], pretrain_tokens=[1e7, 1e7, 2e7, 2e7]))
    with pytest.raises(AnalysisError, match=r"5 free parameters and needs at least 6 distinct .* the data have 4"):
        fit_law(df, LAWS["chinchilla"])


def test_no_ok_rows_and_unknown_law():
    with pytest.raises(AnalysisError, match="no row has status 'ok'"):
        load_results(minimal().assign(status="failed"))
    from analysis.laws import get_law
    with pytest.raises(AnalysisError, match="unknown law 'nope'"):
        get_law("nope")


def test_budget_smaller_than_one_batch():
    with pytest.raises(AnalysisError, match="smaller than one batch"):
        check_budget(1000, 4096, "per-path", 4)
    with pytest.raises(AnalysisError, match="for each of 4 experts"):
        check_budget(10_000, 4096, "shared-seed", 4)
    with pytest.raises(AnalysisError, match="positive"):
        check_budget(0, None, "per-path", 1)
    check_budget(10_000, 4096, "per-path", 4)
    check_budget(10_000, None, "per-path", 4)


def test_columns_used_exist_in_the_records_contract():
    records = pytest.importorskip("splitsweep.records")
    from analysis.io import REQUIRED, RESULTS_FILE
    used = set(REQUIRED) | {"run_id", "expert_domain", "eval_domain", "mixture_weight", "recall_accuracy", "status"}
    assert used <= set(records.COLUMNS)
    assert RESULTS_FILE == records.RESULTS_FILE
