"""Checkpoints as torch.distributed.checkpoint (DCP) directories, published atomically.

A checkpoint is `<dir>/` with DCP shards of {"model", "optim"} plus `meta.json`. It is written into a
temporary sibling and renamed into place, so a reader sees a whole checkpoint or none; DCP reshards on
load, so a seed trained on 2 ranks continues on 1 and the other way round.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from .distributed import DistEnv
from .store import publish_dir, write_json_atomic

META = "meta.json"


def is_complete(path: Path) -> bool:
    return (path / META).exists()


def read_meta(path: Path) -> dict:
    return json.loads((path / META).read_text())


def save(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, meta: dict,
         env: DistEnv, tag: str) -> None:
    """Write a checkpoint; `tag` must be equal on all ranks and unique to this writer."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{tag}.tmp")
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    env.barrier()
    if optimizer is not None:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
    else:
        state = {"model": get_model_state_dict(model)}
    dcp.save(state, checkpoint_id=str(tmp))
    env.barrier()
    if env.is_main:
        write_json_atomic(tmp / META, {**meta, "has_optimizer": optimizer is not None})
        if path.exists():  # a periodic checkpoint slot being refreshed
            old = path.with_name(f".{path.name}.{tag}.old")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            publish_dir(tmp, path)
    env.barrier()


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Load weights (and optimizer state if `optimizer` is given and was saved); returns meta."""
    meta = read_meta(path)
    if optimizer is not None and meta.get("has_optimizer"):
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(path))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    else:
        state = {"model": get_model_state_dict(model)}
        dcp.load(state, checkpoint_id=str(path))
        set_model_state_dict(model, state["model"], options=StateDictOptions(strict=True))
    return meta
