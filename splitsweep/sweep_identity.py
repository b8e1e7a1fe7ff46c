"""A sweep knows its experiment: the settings every one of its grid points shares.

`<sweep_dir>/sweep.json` records them when the sweep is first launched: the whole resolved config except the
grid's axes and the settings that do not change a result (identity.NOT_DEFINING: paths, logging, the report,
threads, checkpoint cadence...). The axes are `split.*` (the coordinates of a point: D, D', T, D/T, the expert domain) and every key
a launch varies across its grid points or names in its sweeper's params; each launch adds its axes. A later
launch, or a single run, into the same sweep must agree on everything else, or it is refused before any
compute: the rows of another experiment would silently join this one's table and its report.
"""
from __future__ import annotations

import fcntl
import json
import re
from pathlib import Path
from typing import Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .layout import SweepLayout
from .identity import NOT_DEFINING, without_added_at_default
from .store import write_json_atomic

POINT_AXES = ("split",)
# ...except how a budget is read: one sweep, one accounting.
DEFINING_SPLIT = ("split.accounting", "split.n_experts")


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: obj}


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _mentions(expression: str, axes: Iterable[str]) -> bool:
    return any(re.search(r"\$\{" + re.escape(a) + r"[}.,]", expression) for a in axes)


def defining_config(cfg: DictConfig, axes: Iterable[str] = ()) -> dict:
    """The flattened settings that define the experiment (axes included; they are removed when comparing).
    A setting interpolated from an axis (`train.lr: ${ss_by_n:${model},...}`) is recorded as its rule: the
    rule defines the experiment, its value at one grid point follows from the point."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    flat = _flatten(resolved)
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra", None)
    axes = list(axes)
    for k, v in _flatten(raw).items():
        if isinstance(v, str) and "${" in v and _mentions(v, axes):
            flat[k] = v
    return without_added_at_default({k: v for k, v in flat.items() if not _under(k, NOT_DEFINING)})


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~").replace("/", ".")


def launch_axes(job_overrides: Sequence[Sequence[str]], sweeper_params: Iterable[str] = ()) -> set[str]:
    """Keys whose values differ across the grid points of one launch, and the sweeper's own params."""
    points = [dict((_key(o), o.split("=", 1)[1]) for o in overrides if "=" in o) for overrides in job_overrides]
    keys = set().union(*points) if points else set()
    varying = {k for k in keys if len({p.get(k) for p in points}) > 1}  # a missing key counts as a value
    return varying | {_key(str(p)) for p in sweeper_params}


def check_sweep(sweep_dir: str | Path, sweep_name: str, cfg: DictConfig, axes: Iterable[str] = ()) -> None:
    """Refuse `cfg` when it defines another experiment than the one recorded in the sweep; else record it."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".sweep.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = SweepLayout(sweep_dir).identity
        recorded = json.loads(path.read_text()) if path.exists() else None
        axes = set(axes) | set((recorded or {}).get("axes", []))
        mine = defining_config(cfg, axes)
        if recorded is not None:
            allowed = axes | set(POINT_AXES)
            theirs = without_added_at_default(recorded["config"])
            differ = sorted(k for k in set(theirs) | set(mine)
                            if (not _under(k, allowed) or k in DEFINING_SPLIT)
                            and theirs.get(k, "<unset>") != mine.get(k, "<unset>"))
            if differ:
                shown = "; ".join(f"{k}: {theirs.get(k, '<unset>')!r} recorded, {mine.get(k, '<unset>')!r} now"
                                  for k in differ[:6])
                more = f" (and {len(differ) - 6} more)" if len(differ) > 6 else ""
                raise ConfigError(
                    f"sweep {sweep_name!r} in {sweep_dir} is another experiment: {shown}{more}. Its rows would "
                    f"join that sweep's table and report. Name a new sweep (sweep_name=<name>), or launch with "
                    f"the sweep's settings; to vary a setting within one sweep, launch it as a grid (-m).")
            if axes <= set(recorded.get("axes", [])):
                return
        write_json_atomic(path, {"sweep_name": sweep_name, "axes": sorted(axes),
                                 "config": recorded["config"] if recorded else mine})
