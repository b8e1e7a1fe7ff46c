"""Hydra only instantiates launchers defined under the `hydra_plugins` package: these names are what
conf/hydra/launcher/submitit_{slurm,local}.yaml point at. The code is in `splitsweep.slurm`."""
from splitsweep.slurm import LocalLauncher as _LocalLauncher
from splitsweep.slurm import SlurmLauncher as _SlurmLauncher


class SlurmLauncher(_SlurmLauncher):
    """splitsweep's seeds-first submitit launcher on SLURM (see splitsweep/slurm.py)."""


class LocalLauncher(_LocalLauncher):
    """splitsweep's seeds-first submitit launcher for local processes (see splitsweep/slurm.py)."""


import warnings as _warnings

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class ExpectedSchemaMatch(SearchPathPlugin):
    """Adds no search path. conf/hydra/launcher/submitit_{slurm,local}.yaml take the place of the plugin's
    configs of the same name on purpose (so `hydra/launcher=submitit_slurm` runs splitsweep's launcher);
    Hydra validates them against the plugin's schema and warns that matching by name is deprecated. This
    hook runs before composition (filters set while Hydra imports plugins are discarded) and silences
    exactly that warning."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        _warnings.filterwarnings(
            "ignore", message=r"\s*'hydra/launcher/submitit_(slurm|local)' is validated against ConfigStore schema")
