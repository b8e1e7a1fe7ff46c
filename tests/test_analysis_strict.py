"""Issue #11, defect 11: the analysis refuses what it cannot trust, and says where.

Duplicate rows, garbage lines and non-numbers are refused with the file, the line and the value; a torn
last line is skipped with a warning; too few rows is one clear error in every verb; a report written over
an earlier one leaves none of the earlier outputs behind (and no file the report does not own is touched).
"""
import json
import sys
import warnings

import pandas as pd
import pytest

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))  # repo root
from analysis import pipeline
from analysis.cli import main
from analysis.errors import AnalysisError
from analysis.io import load_results
from analysis.pipeline import Analysis, analyze
from analysis.report import build_report
from analysis.synthetic import phonebook_table
from test_analysis_inputs import minimal


def records():
    """150 rows of one sweep: run_id and eval_domain identify each row."""
    return phonebook_table().to_dict("records")


def write_jsonl(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def refused(source, *fragments):
    with pytest.raises(AnalysisError) as e:
        load_results(source)
    msg = str(e.value)
    for f in fragments:
        assert f in msg, (f, msg)
    assert "\n" not in msg
    return msg


def test_duplicate_rows_are_refused_identical_or_conflicting(tmp_path):
    rows = records()
    # A results file appended twice: line 151 repeats line 6 exactly.
    path = write_jsonl(tmp_path / "dup.jsonl", rows + [rows[5]])
    refused(path, str(path), "line 6", "line 151", "identical", f"run_id={rows[5]['run_id']}",
            f"eval_domain={rows[5]['eval_domain']}")
    # The same (run_id, eval_domain) measured twice with different results: name what differs.
    other = dict(rows[7], eval_loss=rows[7]["eval_loss"] + 0.5, recall_accuracy=0.123)
    path = write_jsonl(tmp_path / "conflict.jsonl", rows[:20] + [other] + rows[20:])
    msg = refused(path, str(path), "line 8", "line 21", "conflicting", "eval_loss", "recall_accuracy")
    assert "identical" not in msg
    # Without run_id (a foreign table) a row is identified by (N, D, D', expert_domain, eval_domain).
    t = minimal()
    csv = tmp_path / "foreign.csv"
    pd.concat([t, t.iloc[[3]]]).to_csv(csv, index=False)
    refused(csv, str(csv), "line 5", "line 14", "identical")
    t2 = pd.concat([t, t.iloc[[3]].assign(eval_loss=9.0)])
    refused(t2, "conflicting", "eval_loss", "run_id")  # the fix: give replicates their own run_id
    assert len(load_results(t)) == len(t)  # the same table without the repeat is valid


def test_garbage_line_in_a_jsonl_is_refused_a_torn_last_line_skipped_with_a_warning(tmp_path):
    rows = records()
    lines = [json.dumps(r) for r in rows]
    bad = tmp_path / "garbage.jsonl"
    bad.write_text("\n".join(lines[:3] + ["<<<garbage>>>"] + lines[3:]) + "\n")
    refused(bad, str(bad), "line 4", "<<<garbage>>>")
    # Valid JSON that is not an object is garbage too.
    bad.write_text("\n".join(lines[:9] + ["[1, 2]"] + lines[9:]) + "\n")
    refused(bad, str(bad), "line 10", "[1, 2]")
    # A complete (newline-terminated) unparseable last line is not a torn append: refused.
    bad.write_text("\n".join(lines + ['{"run_id": 1,']) + "\n")
    refused(bad, str(bad), f"line {len(lines) + 1}")
    # A torn last line (no newline: a writer killed mid-append) is skipped, and says so.
    torn = write_jsonl(tmp_path / "torn.jsonl", rows, tail='{"run_id": "x", "eval_lo')
    with pytest.warns(UserWarning, match=rf"{torn}.*line {len(rows) + 1}.*skipped"):
        df = load_results(torn)
    assert len(df) == len(rows)
    assert df.attrs["torn_last_line"] == len(rows) + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact file warns about nothing
        load_results(write_jsonl(tmp_path / "ok.jsonl", rows))


@pytest.mark.parametrize("col, value", [("eval_loss", True), ("n_params", "1000000.0"), ("pretrain_tokens", True),
                                        ("special_tokens", False), ("eval_loss", "3.5"), ("special_tokens", "0")])
def test_booleans_and_strings_are_not_numbers(tmp_path, col, value):
    rows = records()
    rows[30] = dict(rows[30], **{col: value})  # D and D' both > 0 there: False is no zero-token run
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    refused(path, str(path), "line 31", f"{col}={value!r}", "number")
    # The same check on a DataFrame (no lines: rows are counted from 0).
    refused(pd.DataFrame(rows), "row 30", f"{col}={value!r}")


@pytest.mark.parametrize("verb", ["fit", "split", "report"])
def test_too_few_rows_is_one_clear_error_in_every_verb(tmp_path, capsys, verb):
    path = write_jsonl(tmp_path / "one.jsonl", [{"n_params": 1e6, "pretrain_tokens": 1e7, "special_tokens": 0.0,
                                                  "eval_loss": 3.0}])
    out = tmp_path / "out"
    extra = ["--n-params", "1e6", "--budget-tokens", "1e7"] if verb != "fit" else []
    assert main([verb, str(path), "--law", "auto", "--out", str(out), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "too few" in err and "1 row" in err and "1 trained model" in err and "needs at least 2" in err, err
    assert not out.exists()


def test_no_law_fitted_is_an_analysis_error_not_a_key_error():
    rows = load_results(minimal())
    with pytest.raises(AnalysisError, match="too few.*1 row.*1 trained model.*needs at least 2"):
        analyze(rows.head(1), "auto")
    with pytest.raises(AnalysisError, match="no law could be fitted: chinchilla: boom"):
        Analysis(rows=rows, failures={"chinchilla": "boom"}).fit_json()


def test_report_over_an_earlier_report_leaves_no_stale_outputs(tmp_path, monkeypatch):
    out = tmp_path / "rep"
    out.mkdir()
    stale = ["fit.json", "split.json", "split_curve.png", "fraction_vs_n.png", "fraction_vs_budget.png",
             "heldout.png", "loss_vs_special.png", "measured_vs_predicted.png", "downstream.png",
             ".fit.json.abc123.tmp"]
    for name in stale:
        (out / name).write_text("from an earlier report")
    (out / "report.md").write_text("# old report")
    mine = ["notes.txt", "my_plot.png", "fit.json.bak"]  # not the report's: never deleted
    for name in mine:
        (out / name).write_text("the user's")

    def no_start(rows, law, **kw):
        raise AnalysisError(f"law {law.name!r}: no start gave a finite loss on these data")
    monkeypatch.setattr(pipeline, "fit_law", no_start)
    path = build_report(phonebook_table(), out, n_bootstrap=0, progress=False)
    assert "No law could be fitted" in path.read_text()
    left = {p.name for p in out.iterdir()}
    assert left == {"report.md", "report.html", "measured_loss.png", "measured_recall.png", *mine}, left
    for name in mine:
        assert (out / name).read_text() == "the user's"
