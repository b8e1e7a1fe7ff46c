"""Put a splitting report into W&B beside the sweep's training runs.

One analysis run per (sweep, results content) in the sweep's project and group: fitted parameters and
held-out errors in its summary, the split table and the records as `wandb.Table`s, the plots as images,
the HTML report as an artifact. Online it also builds a W&B Report (wandb-workspaces) with the sweep's
loss curves and the analysis panels and prints its URL; offline everything waits in `dir` for `wandb sync`.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from .errors import AnalysisError


def _flat(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float, str, bool)) or value is None:
        out[prefix] = value
    elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        out[prefix] = value


def summary_of(out_dir: Path) -> dict:
    """Summary keys: chosen law, its parameters and intervals, held-out errors of every law, the split."""
    summary: dict = {}
    fit_path, split_path = out_dir / "fit.json", out_dir / "split.json"
    if fit_path.exists():
        fit = json.loads(fit_path.read_text())
        summary["law"] = fit.get("law")
        _flat("params", fit.get("params", {}), summary)
        _flat("interval_95", fit.get("interval_95", {}), summary)
        for name, law in fit.get("all_laws", {}).items():
            _flat(f"heldout/{name}", law.get("heldout", {}), summary)
    if split_path.exists():
        _flat("split", json.loads(split_path.read_text()), summary)
    return summary


def log_report(out_dir, table: pd.DataFrame, *, project: str = "splitsweep", entity: str | None = None,
               group: str | None = None, mode: str = "offline", wandb_dir=None) -> dict:
    """Log the report in `out_dir` (already written) as a W&B run; returns {'run_id', 'dir', 'report_url'}."""
    import wandb

    from splitsweep.logger import check_logger, resolve_mode

    out_dir = Path(out_dir)
    if not (out_dir / "report.md").exists():
        raise AnalysisError(f"no report in {out_dir}: build it first")
    mode = resolve_mode(mode)
    if mode == "disabled":
        return {"run_id": None, "dir": None, "report_url": None}
    try:
        from omegaconf import OmegaConf

        check_logger(OmegaConf.create({"mode": mode}))
    except ValueError as err:
        raise AnalysisError(str(err)) from None
    group = group or (str(table["sweep"].iloc[0]) if "sweep" in table and len(table) else "analysis")
    digest = hashlib.sha256(pd.util.hash_pandas_object(table.astype(str), index=False).values.tobytes())
    run_id = f"analysis-{group}-{digest.hexdigest()[:10]}"
    wandb_dir = Path(wandb_dir or out_dir)
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_CACHE_DIR", str(wandb_dir / ".cache"))
    os.environ.setdefault("WANDB_CONFIG_DIR", str(wandb_dir / ".config"))
    run = wandb.init(project=project, entity=entity, group=group, job_type="analysis", id=run_id,
                     name=f"analysis {group}", dir=str(wandb_dir), mode=mode, resume="allow",
                     reinit="create_new", settings=wandb.Settings(console="off", x_disable_stats=True))
    try:
        for key, value in summary_of(out_dir).items():
            run.summary[key] = value
        records = table.astype(object).where(table.notna(), None)
        run.log({"records": wandb.Table(dataframe=records.astype(str))})
        split_path = out_dir / "split.json"
        if split_path.exists():
            split = json.loads(split_path.read_text())
            scalar = {k: v for k, v in split.items() if isinstance(v, (int, float, str, bool))}
            run.log({"split": wandb.Table(columns=list(scalar), data=[list(scalar.values())])})
        images = {f"plots/{p.stem}": wandb.Image(str(p)) for p in sorted(out_dir.glob("*.png"))}
        if images:
            run.log(images)
        artifact = wandb.Artifact(f"report-{group}", type="splitting-report")
        for name in ("report.html", "report.md", "fit.json", "split.json"):
            if (out_dir / name).exists():
                artifact.add_file(str(out_dir / name))
        run.log_artifact(artifact)
        url = _report_online(run, project, entity, group, sorted(images)) if mode == "online" else None
    finally:
        run.finish()
    return {"run_id": run_id, "dir": str(wandb_dir), "report_url": url}


def _report_online(run, project, entity, group, image_keys) -> str:
    """A W&B Report: the sweep's training curves and the analysis panels (needs the online API)."""
    import wandb_workspaces.reports.v2 as wr

    runs = wr.Runset(entity=run.entity, project=project, filters=f"Config('group') == '{group}'")
    report = wr.Report(entity=run.entity, project=project, title=f"Splitting report: {group}",
                       description="Loss curves of the sweep's seeds and experts, and the fitted split.")
    report.blocks = [
        wr.H1(f"Sweep {group}"),
        wr.PanelGrid(runsets=[runs], panels=[wr.LinePlot(x="train/tokens", y=["train/loss"]),
                                             wr.LinePlot(x="train/tokens", y=["train/lr"])]),
        wr.H1("Analysis"),
        wr.PanelGrid(runsets=[wr.Runset(entity=run.entity, project=project,
                                        filters="Config('job_type') == 'analysis'")],
                     panels=[wr.MediaBrowser(media_keys=image_keys), wr.RunComparer()]),
    ]
    report.save()
    print(f"W&B report: {report.url}")
    return report.url
