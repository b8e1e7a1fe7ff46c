"""ReportStep.run: the splitting report of a sweep's records, built by `analysis.report` unless the report there
was built from the same inputs, then marked with its identity (`report/step.json`)."""
from __future__ import annotations

import time
from pathlib import Path

from .layout import SweepLayout
from .steps import ReportStep, file_digest
from .store import write_json_atomic


def run_report(step: ReportStep, sweep_dir: str | Path, progress: bool = True) -> str:
    """The report's path, or "no report: <why>" (too few runs for a law, a table analysis refuses)."""
    from analysis.errors import AnalysisError
    from analysis.report import build_report

    sweep = SweepLayout(sweep_dir)
    if step.done(sweep_dir):
        return str(sweep.report_file) if sweep.report_file.exists() else sweep.no_report.read_text().strip()
    sweep.report_step.unlink(missing_ok=True)  # whatever happens below, the old mark no longer says what is there
    try:
        out = build_report(sweep.results, sweep.report, budget_tokens=step.budget_tokens,
                           n_bootstrap=step.n_bootstrap, progress=progress)
        answer, written, built = str(out), Path(out), True
    except AnalysisError as err:
        sweep.report.mkdir(parents=True, exist_ok=True)
        sweep.no_report.write_text(f"no report: {err}\n")
        answer, written, built = f"no report: {err}", sweep.no_report, False
    if built:
        sweep.no_report.unlink(missing_ok=True)
    write_json_atomic(sweep.report_step, {"identity": step.identity, "built": built, "written": file_digest(written),
                                          "inputs": {"results": step.results, "downstream": step.downstream,
                                                     "budget_tokens": step.budget_tokens,
                                                     "n_bootstrap": step.n_bootstrap, "analysis": step.analysis},
                                          "time": time.time()})
    return answer
