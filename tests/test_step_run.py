"""A step runs from the config that planned it, and only that step: a seed, an expert, a prepared data set, a
report. run() on a done step does no work; a config planning another step is refused before any work."""
from __future__ import annotations

import json

import pytest

from analysis.laws import LAWS
from analysis.report import build_report
from analysis.synthetic import TRUE_PARAMS, make_sweep
from helpers import compose_cfg
from splitsweep.identity import signature
from splitsweep.layout import SweepLayout
from splitsweep.plan import make_plan
from splitsweep.records import read_rows
from splitsweep.status import report_line
from splitsweep.steps import PreparedData, ReportStep, StepMismatch

T = 4 * 32 * 4  # four optimizer steps of the tiny config


def test_a_prepared_data_set_keeps_the_key_it_was_recorded_under():
    """PreparedData's identity is the directory name data/prepare.py always gave a prepared data set."""
    step = PreparedData(1, {"path": "json", "files": [["a.jsonl", 10, 1.0]]}, {"field": "domain"}, ["x", "y"],
                        {"file": "0123"}, 4096, 0)
    assert step.identity == signature({"v": 1, "source": {"path": "json", "files": [["a.jsonl", 10, 1.0]]},
                                       "labels": {"field": "domain"}, "domains": ["x", "y"],
                                       "tokenizer": {"file": "0123"}, "heldout_tokens": 4096, "data_seed": 0})


def test_seed_and_expert_steps_run_from_their_own_config_only(tmp_path):
    cfg = compose_cfg(tmp_path, f"split.pretrain_tokens={T}", f"split.special_tokens={T}", "split.expert_domain=d0")
    other = compose_cfg(tmp_path, f"split.pretrain_tokens={2 * T}", f"split.special_tokens={T}",
                        "split.expert_domain=d0")
    expert = make_plan(cfg).expert
    store, sweep = tmp_path / "store", tmp_path / "sweeps" / "test"
    with pytest.raises(StepMismatch, match=expert.identity):
        expert.run(other)
    with pytest.raises(StepMismatch, match=expert.seed.identity):
        expert.seed.run(other)
    assert not (store / "seeds").exists() and not SweepLayout(sweep).runs.exists()  # refused before any work

    assert not expert.seed.done(store)
    assert expert.seed.run(cfg) == expert.seed.output(store) and expert.seed.done(store)
    rows = expert.run(cfg)
    assert expert.done(sweep) and {r["run_id"] for r in rows} == {expert.identity}
    assert expert.run(cfg) == rows and len(read_rows(sweep)) == len(rows)  # done: recorded once


def test_a_report_is_built_once_per_inputs(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    table = make_sweep(LAWS["two_source"], TRUE_PARAMS["two_source"], seed=3, n_values=(1e6, 4e6),
                       tokens_per_param=(10, 40), fractions=(0.3, 1))
    (sweep / "results.jsonl").write_text(table.to_json(orient="records", lines=True))
    layout = SweepLayout(sweep)
    step = ReportStep.of(sweep, None, 4)
    assert not step.done(sweep)
    assert step.run(sweep, progress=False) == str(layout.report_file) and step.done(sweep)
    mark = json.loads(layout.report_step.read_text())
    assert mark["identity"] == step.identity and mark["built"]
    built_at = layout.report_file.stat().st_mtime_ns
    assert ReportStep.of(sweep, None, 4) == step  # same records, same settings, same code: the same report
    step.run(sweep, progress=False)
    assert layout.report_file.stat().st_mtime_ns == built_at  # done: not rebuilt

    assert report_line(sweep) == f"report: {layout.report_file} (built from the records as they are)"

    # Another setting, or another record, is another report.
    assert ReportStep.of(sweep, None, 8) != step and ReportStep.of(sweep, 1e9, 4) != step
    with open(sweep / "results.jsonl", "a") as f:
        f.write(table.iloc[:1].to_json(orient="records", lines=True))
    assert ReportStep.of(sweep, None, 4).results != step.results
    assert "older than the records" in report_line(sweep)
    (sweep / "results.jsonl").write_text(table.to_json(orient="records", lines=True))
    assert step.done(sweep)
    # A report built on demand since (other settings) is not the step's: the step builds it again.
    build_report(sweep, layout.report, n_bootstrap=5, progress=False)
    assert not step.done(sweep)
    step.run(sweep, progress=False)
    assert step.done(sweep)


def test_records_analysis_refuses_are_a_report_step_that_says_so(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    table = make_sweep(LAWS["two_source"], TRUE_PARAMS["two_source"], seed=3, n_values=(1e6, 4e6),
                       tokens_per_param=(10,), fractions=(0.5,))
    table["accounting"] = ["per_path", "shared_seed"] * (len(table) // 2) + ["per_path"] * (len(table) % 2)
    (sweep / "results.jsonl").write_text(table.to_json(orient="records", lines=True))
    step = ReportStep.of(sweep, None, 4)
    out = step.run(sweep, progress=False)
    assert out.startswith("no report: ") and "mix accountings" in out and step.done(sweep)
    assert SweepLayout(sweep).no_report.read_text().strip() == out
    assert step.run(sweep, progress=False) == out
