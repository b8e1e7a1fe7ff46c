"""The Hydra app: `python -m splitsweep [-m] [overrides]`. One call of `task` is one grid point."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .identity import job_dir_overrides, signature
from .sweep_identity import check_sweep


def job_dirname(overrides) -> str:
    """A grid point's directory name: its defining overrides (identity.job_dir_overrides of
    hydra.overrides.task), readable, deterministic, short enough for a filesystem."""
    overrides = ",".join(job_dir_overrides(overrides))
    name = overrides.replace("/", "_") or "defaults"
    if len(name) <= 120:
        return name
    return f"{name[:90]}...{signature({'overrides': overrides}, 12)}"


OmegaConf.register_new_resolver("ss_dirname", job_dirname, replace=True)


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("SPLITSWEEP_FULL_ERROR") == "1"


def task(cfg: DictConfig):
    from .distributed import allocated_threads  # torch and torchtitan: imported by a job, not by --help
    from .plan import check_config, make_plan
    from .train import Preempted, TrainingDiverged

    try:
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN:  # a grid's launcher checked it
            check_config(cfg)  # first: a bad value is never recorded as what the sweep is
            check_sweep(cfg.paths.sweep_dir, str(cfg.sweep_name), cfg)
        import torch

        torch.set_num_threads(allocated_threads(cfg.train.threads))
        rows = make_plan(cfg).expert.run(cfg)  # the grid point's run: its seed, training, evaluation, rows
    except ConfigError as err:
        # A configuration mistake: say what is wrong, without a traceback, before any compute.
        print(f"splitsweep: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except TrainingDiverged as err:
        # Expected, and its message says what to change; a grid's launcher reports it with the others.
        if _full_error() or not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN):
            raise
        print(f"splitsweep: error: {err} (nothing was recorded; HYDRA_FULL_ERROR=1 for the traceback)",
              file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except Preempted as err:
        # The checkpoint is saved. Hand the signal to the handler our StopFlag replaced: inside a submitit
        # job that is submitit's, which resubmits this grid point and requeues it (rank 0; it exits
        # here); outside, the default action ends the process by the signal.
        print(f"splitsweep: {err}", file=sys.stderr, flush=True)
        if err.stop is not None:
            err.stop.hand_over(err.signum)
        raise SystemExit(128 + int(err.signum or 15)) from None  # the handler returned: stop anyway
    keep = ("eval_domain", "eval_loss", "expert_domain", "recall_accuracy", "model", "pretrain_tokens",
            "special_tokens", "budget_tokens")
    return [{k: r.get(k) for k in keep} for r in rows]  # what the launcher's line per grid point shows


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"), config_name="config")
def main(cfg: DictConfig):
    return task(cfg)
