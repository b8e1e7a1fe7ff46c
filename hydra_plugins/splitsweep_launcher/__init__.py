"""Hydra only instantiates launchers defined under the `hydra_plugins` package: these names are what
conf/hydra/launcher/{sequential,submitit_slurm,submitit_local}.yaml point at. The code is in `splitsweep.slurm`
(`plan_grid` and `write_launch` are shared by all three)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher as _BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurmLauncher
from splitsweep.slurm import LocalLauncher as _LocalLauncher
from splitsweep.slurm import SlurmLauncher as _SlurmLauncher
from splitsweep.slurm import SplitsweepSlurmConf
from splitsweep.console import point_line
from splitsweep.slurm import plan_grid, write_launch


class SlurmLauncher(_SlurmLauncher):
    """splitsweep's seeds-first submitit launcher on SLURM (see splitsweep/slurm.py)."""


def _store_launcher_schema() -> None:
    """The schema of conf/hydra/launcher/submitit_slurm.yaml: submitit's, with splitsweep's launcher and `wait`.
    Stored over the submitit plugin's own of the same name, after Hydra has scanned (and executed) every plugin
    module, in whatever order the search path gave them (ExpectedSchemaMatch below calls it)."""
    ConfigStore.instance().store(group="hydra/launcher", name="submitit_slurm", node=SplitsweepSlurmConf(),
                                 provider="splitsweep")


_store_launcher_schema()


class SubmititSlurmLauncher(_SubmititSlurmLauncher):
    """hydra-submitit-launcher's own SLURM launcher (every grid point submitted at once, no seeds first), taking
    splitsweep's launcher config (its `wait` is splitsweep's): the baseline tests/test_slurm_sweep.py measures
    the seeds-first launcher against."""

    def __init__(self, **params) -> None:
        params.pop("wait", None)
        super().__init__(**params)


class LocalLauncher(_LocalLauncher):
    """splitsweep's seeds-first submitit launcher for local processes (see splitsweep/slurm.py)."""


class SequentialLauncher(_BasicLauncher):
    """The default (`hydra/launcher=sequential`): Hydra's basic launcher, grid points one after another in
    this process, after planning every one of them. A bad value anywhere in the grid stops the launch before
    any compute (exit 2), and the planned grid is written to launches.jsonl for `python -m splitsweep.status`."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.hydra_context is not None and self.config is not None
        points = plan_grid(self.hydra_context, self.config, job_overrides, initial_job_idx, "run")
        done = sum(p.done for p in points)
        print(f"splitsweep: {len(points)} grid points checked: {done} already recorded, "
              f"{len(points) - done} to run", flush=True)
        if int(os.environ.get("RANK", "0") or 0) == 0:  # under torchrun every rank launches; rank 0 records it
            by_dir: dict[str, list] = {}
            for p in points:
                by_dir.setdefault(p.sweep_dir, []).append(p)
            for sweep_dir, group in by_dir.items():
                write_launch(Path(sweep_dir), "sequential", group, to_run="queued")
        returns, trained_s = [], []
        for i, p in enumerate(points):
            started = time.monotonic()
            ret = super().launch([p.overrides], initial_job_idx + i)
            returns += ret
            took = time.monotonic() - started
            if not p.done:
                trained_s.append(took)
            left = sum(not q.done for q in points[i + 1:])
            eta = left * sum(trained_s) / len(trained_s) if trained_s else None
            rows = ret[0].return_value if ret and ret[0].status == JobStatus.COMPLETED else None
            print("splitsweep: " + point_line(i + 1, len(points), rows, took, p.done, eta), flush=True)
        return returns


class CheckSweepName(Callback):
    """sweep_name names a directory: refuse a bad one before Hydra makes any directory from it (the run
    directory, or the sweep directory and its multirun.yaml, exist before a job or launcher could check)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _check_sweep_name(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _check_sweep_name(config)


def _check_sweep_name(config: DictConfig) -> None:
    from splitsweep.errors import ConfigError
    from splitsweep.plan import check_sweep_name

    try:
        check_sweep_name(config.get("sweep_name"))
    except ConfigError as err:
        print(f"splitsweep: error: {err}\nsplitsweep: nothing was run", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


import warnings as _warnings

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class ExpectedSchemaMatch(SearchPathPlugin):
    """Adds no search path; stores splitsweep's launcher schema (above). conf/hydra/launcher/submitit_{slurm,local}.yaml take the place of the plugin's
    configs of the same name on purpose (so `hydra/launcher=submitit_slurm` runs splitsweep's launcher);
    Hydra validates them against the plugin's schema and warns that matching by name is deprecated. This
    hook runs before composition (filters set while Hydra imports plugins are discarded) and silences
    exactly that warning."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        _store_launcher_schema()
        _warnings.filterwarnings(
            "ignore", message=r"\s*'hydra/launcher/submitit_(slurm|local)' is validated against ConfigStore schema")
