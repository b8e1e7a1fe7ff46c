"""`hydra/sweeper=points`: a multirun over an explicit list of points instead of a grid.

Hydra's basic sweeper runs the cartesian product of its params; a proposal of next runs (`python -m analysis
next`) is a set of points that is no product. With `hydra.sweeper.points` (a list of override lists) this sweeper
runs exactly those points, each with the command line's own overrides; the params grid is not used. Everything
else (batches, the launcher, multirun.yaml) is the basic sweeper's.
"""
from __future__ import annotations

from typing import List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override


class PointsSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params=None, points: Optional[list] = None):
        super().__init__(max_batch_size=max_batch_size, params=None)
        self.points = [[str(o) for o in point] for point in (points or [])]
        if not self.points:
            raise ValueError("hydra/sweeper=points needs hydra.sweeper.points: a list of override lists")

    def split_arguments(self, overrides: List[Override], max_batch_size: Optional[int]) -> List[List[List[str]]]:
        for o in overrides:
            if o.is_sweep_override():
                raise ValueError(f"hydra/sweeper=points runs its listed points; the command line sweeps "
                                 f"{o.input_line!r}: give one value, or add points")
        batches = []
        for point in self.points:
            keys = {p.split("=", 1)[0].lstrip("+~") for p in point}
            common = [o.input_line for o in overrides if o.get_key_element().lstrip("+~") not in keys]
            batches.append(common + point)
        n = max_batch_size or len(batches)
        return [batches[i:i + n] for i in range(0, len(batches), n)]
