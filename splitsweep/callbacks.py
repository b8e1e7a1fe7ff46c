"""Hydra callback: when a multirun ends, say where the records are and build the splitting report."""
from __future__ import annotations

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .layout import SweepLayout
from .records import read_rows


class SweepReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = SweepLayout(config.paths.sweep_dir)
        results = sweep.results
        rows = read_rows(results)
        print(f"\nsplitsweep: {len(rows)} result rows in {results}", flush=True)
        offline = sorted(sweep.wandb.glob("offline-run-*"))
        if offline:  # one W&B run per training process (splitsweep/logger.py): a plain sync keeps every step
            print(f"splitsweep: {len(offline)} offline W&B runs; upload them with: "
                  f"wandb sync {sweep.wandb}/offline-run-*", flush=True)
        if not config.report.enabled or not rows:
            return
        if not OmegaConf.select(config, "hydra.launcher.wait", default=True):  # submitted and not waited for: a report job builds it
            return
        try:
            from analysis.report import build_report
        except ImportError as err:  # the analysis package is optional for training
            print(f"splitsweep: report skipped ({err})", flush=True)
            return
        from analysis.errors import AnalysisError

        try:
            out = build_report(results, sweep.report, budget_tokens=config.report.budget_tokens,
                               n_bootstrap=int(config.report.n_bootstrap))
        except AnalysisError as err:  # too few runs for a law, a table analysis refuses: say so, keep the rows
            print(f"splitsweep: no report: {err}", flush=True)
            return
        print(f"splitsweep: report in {out}", flush=True)
