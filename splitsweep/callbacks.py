"""Hydra callback: when a multirun ends, say where the records are and build the splitting report."""
from __future__ import annotations

import importlib.util

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .layout import SweepLayout
from .records import read_rows
from .steps import ReportStep


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
        if importlib.util.find_spec("analysis") is None:  # the analysis package is optional for training
            print("splitsweep: report skipped (the analysis package is not installed)", flush=True)
            return
        step = ReportStep.of(sweep.root, config.report.budget_tokens, config.report.n_bootstrap)
        if step.done(sweep.root):
            print(f"splitsweep: report in {sweep.report_file} (built before from these records; up to date)",
                  flush=True)
            return
        out = step.run(sweep.root)
        # too few runs for a law, a table analysis refuses: said, and the rows are kept
        print(f"splitsweep: {out}" if out.startswith("no report") else f"splitsweep: report in {out}", flush=True)
