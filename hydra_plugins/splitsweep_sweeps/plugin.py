"""Makes the repository's `sweeps/` folder the config group `sweeps` (`python -m splitsweep -m sweeps=NAME`)."""
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class SplitsweepSweeps(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="splitsweep-sweeps", path=f"file://{Path(__file__).resolve().parents[2]}")
