"""The report shows lm-eval accuracy beside the losses: by split fraction and by compute, with stderr."""
import json

import numpy as np

from analysis.report import build_report
from analysis.synthetic import phonebook_table


def test_report_has_downstream_accuracy_from_the_sweep_dir(tmp_path):
    table = phonebook_table()
    (tmp_path / "results.jsonl").write_text(table.to_json(orient="records", lines=True))
    rng = np.random.default_rng(0)
    runs = table.drop_duplicates("run_id") if "run_id" in table else table.drop_duplicates(
        ["pretrain_tokens", "special_tokens", "expert_domain"])
    rows = []
    for _, r in runs.iterrows():
        for task in ("phonebook_mc_d0", "arc_easy"):
            rows.append({"run_id": r.get("run_id", "x"), "n_params": r["n_params"], "pretrain_tokens": r["pretrain_tokens"],
                         "special_tokens": r["special_tokens"], "expert_domain": r["expert_domain"],
                         "flops": 6 * r["n_params"] * (r["pretrain_tokens"] + r["special_tokens"]),
                         "task": task, "is_group": False, "metric": "acc", "value": float(rng.uniform(0.25, 1)),
                         "stderr": 0.05, "n_examples": 40, "status": "ok"})
    (tmp_path / "downstream.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = build_report(tmp_path, tmp_path / "report", n_bootstrap=0, progress=False)
    text = report.read_text()
    assert "## Downstream accuracy" in text and "arc_easy" in text and "phonebook_mc_d0" in text
    assert "±" in text
    assert (tmp_path / "report" / "downstream.png").stat().st_size > 1000
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Downstream accuracy" in html


def test_report_without_downstream_says_how_to_get_it(tmp_path):
    (tmp_path / "results.jsonl").write_text(phonebook_table().to_json(orient="records", lines=True))
    text = build_report(tmp_path, tmp_path / "report", n_bootstrap=0, progress=False).read_text()
    assert "## Downstream accuracy" in text and "eval=phonebook_mc" in text


def test_a_torn_last_line_of_downstream_jsonl_is_skipped(tmp_path):
    """A job killed mid-append leaves a torn last line starting with `{`: the report reads the whole rows."""
    from analysis.report import _downstream_rows
    from splitsweep.layout import SweepLayout

    rows = [{"run_id": f"r{i}", "task": "arc_easy", "metric": "acc", "value": 0.5, "pretrain_tokens": 100 * i,
             "special_tokens": 100, "status": "ok"} for i in range(3)]
    (tmp_path / "results.jsonl").write_text("")
    SweepLayout(tmp_path).downstream.write_text("".join(json.dumps(r) + "\n" for r in rows)
                                                + '{"run_id": "r3", "task": "arc_e')
    for results, downstream in ((tmp_path, None), (tmp_path / "results.jsonl", None),
                                (tmp_path, SweepLayout(tmp_path).downstream)):
        df = _downstream_rows(results, downstream)
        assert sorted(df["run_id"]) == ["r0", "r1", "r2"]
        assert list(df.sort_values("run_id")["pretrain_fraction"]) == [0.0, 0.5, 2 / 3]
