"""Checkpoints as torch.distributed.checkpoint (DCP) directories: published atomically, verified on load.

A checkpoint is a directory of DCP shards of {"model", "optim"} plus `meta.json`, written last, with the size
and CRC-32 of every file. Each writer builds it in a private temporary sibling, flushes it to disk and renames
it into place, so a reader sees a whole checkpoint or none, and two writers never share a file.

Two kinds of places hold checkpoints:
- a *fixed* checkpoint (`tokens_<D>` of a seed, `final` of an expert) is written once; a second writer of the
  same identity keeps the first one;
- a *slot* (`progress`) is refreshed during training: its versions are write-once directories `step_<n>-<id>`
  inside it, and `LATEST` names the current one (replaced atomically, old versions removed only after it moved).
  A reader follows `LATEST` and never sees a version change under it.

DCP reshards on load, so a seed trained on 2 ranks continues on 1 and the other way round.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
import zlib
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from .distributed import DistEnv

# DCP warns at every save and load of a single process that it assumes a single process: that is the intent
# here (one code path for 1 and N ranks), and the line was a quarter of a sweep's log.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized",
                        category=UserWarning, module="torch.distributed.checkpoint")
from .store import is_debris, private_tmp, publish_dir, write_json_atomic, writer_tag

META = "meta.json"
LATEST = "LATEST"


class CorruptCheckpoint(RuntimeError):
    """A checkpoint's files do not match the sizes and checksums its meta.json recorded."""


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _manifest(root: Path) -> dict[str, list[int]]:
    return {str(p.relative_to(root)): [p.stat().st_size, _crc32(p)]
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != META}


def resolve(path: Path) -> Path | None:
    """The directory holding the checkpoint at `path` (a fixed checkpoint, or a slot's current version)."""
    path = Path(path)
    pointer = path / LATEST
    if pointer.exists():
        try:
            version = path / json.loads(pointer.read_text())["version"]
        except (ValueError, KeyError, OSError):
            return None
        return version if (version / META).exists() else None
    return path if (path / META).exists() else None


def is_complete(path: Path) -> bool:
    return resolve(path) is not None


def read_meta(path: Path) -> dict:
    where = resolve(path)
    if where is None:
        raise FileNotFoundError(f"no complete checkpoint at {path}")
    return json.loads((where / META).read_text())


def verify(path: Path) -> None:
    """Raise CorruptCheckpoint unless every file matches its recorded size and CRC-32.

    Checkpoints written before checksums were recorded are accepted as they are.
    """
    where = resolve(path)
    if where is None:
        raise CorruptCheckpoint(f"no complete checkpoint at {path}")
    try:
        expected = json.loads((where / META).read_text()).get("files")
    except ValueError as err:
        raise CorruptCheckpoint(f"{where / META} is not valid JSON: {err}") from None
    if expected is None:
        return
    for name, (size, crc) in expected.items():
        f = where / name
        if not f.is_file():
            raise CorruptCheckpoint(f"{f} is missing")
        if f.stat().st_size != size:
            raise CorruptCheckpoint(f"{f} has {f.stat().st_size:,} bytes, {size:,} were written")
        if _crc32(f) != crc:
            raise CorruptCheckpoint(f"{f} does not match its checksum")


def is_good(path: Path) -> bool:
    try:
        verify(path)
        return True
    except CorruptCheckpoint:
        return False


def quarantine(path: Path) -> Path:
    """Move a corrupt checkpoint (or slot) aside, so it is rebuilt; returns where it went."""
    aside = path.with_name(f".{path.name}.corrupt-{uuid.uuid4().hex[:8]}")
    os.rename(path, aside)
    return aside


def save(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, meta: dict,
         env: DistEnv, slot: bool = False, before_publish=None) -> None:
    """Write a checkpoint at `path` (a fixed checkpoint, or with `slot=True` a new version of a slot).

    `before_publish()` runs on rank 0 just before the checkpoint becomes visible (e.g. a lease check that
    raises when this writer lost its lock): nothing is published if it raises.
    """
    path = Path(path)
    if slot:
        if env.is_main and (path / META).exists():  # a slot of the layout before versions: start afresh
            remove(path)
        tmp_name = f".tmp-{writer_tag()}" if env.is_main else None
        tmp_name = env.broadcast(tmp_name)
        tmp = path / tmp_name
    else:
        tmp = env.broadcast(private_tmp(path) if env.is_main else None)
    if env.is_main:
        tmp.mkdir(parents=True)
    env.barrier()
    if optimizer is not None:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
    else:
        state = {"model": get_model_state_dict(model)}
    try:
        dcp.save(state, checkpoint_id=str(tmp))
    except (Exception, CheckpointException):
        if env.is_main and before_publish is not None:
            before_publish()  # a writer that lost its lock had its files cleared by the new holder: say that
        raise
    env.barrier()
    error = None
    if env.is_main:
        try:
            write_json_atomic(tmp / META, {**meta, "has_optimizer": optimizer is not None, "files": _manifest(tmp)})
            if before_publish is not None:
                before_publish()
            if slot:
                _publish_version(path, tmp, int(meta["step"]))
            else:
                publish_dir(tmp, path)
        except BaseException as err:  # noqa: BLE001 - every rank must learn of it, then it is re-raised
            shutil.rmtree(tmp, ignore_errors=True)
            error = err
    error = env.broadcast(error)  # every rank raises rank 0's error (a lost lease, a full disk)
    if error is not None:
        raise error


def _publish_version(slot: Path, tmp: Path, step: int) -> None:
    version = slot / f"step_{step:012d}-{uuid.uuid4().hex[:8]}"
    publish_dir(tmp, version)
    write_json_atomic(slot / LATEST, {"version": version.name})
    for old in slot.iterdir():  # older versions, and debris of writers killed mid-write
        if old.name not in (version.name, LATEST) and old.is_dir() and not old.name.startswith(".tmp-"):
            remove(old)


def clear_debris(slot: Path) -> None:
    """Remove half-written versions of dead writers; call it holding the slot's lock."""
    if slot.is_dir():
        for tmp in slot.glob(".tmp-*"):
            if is_debris(tmp):
                shutil.rmtree(tmp, ignore_errors=True)


def remove(path: Path) -> None:
    """Remove a checkpoint or a slot with all its versions."""
    aside = path.with_name(f".{path.name.lstrip('.')}.removed-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)  # one rename: a reader never sees a half-removed checkpoint
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Verify, then load weights (and optimizer state if `optimizer` is given and was saved); returns meta.

    Raises CorruptCheckpoint when a file does not match what was written. A slot's version that is
    replaced while it is read (a writer refreshing it) is read again at the new version.
    """
    for attempt in range(1000):
        where = resolve(path)
        if where is None:
            if (path / LATEST).exists():
                continue  # LATEST named a version that was replaced as we looked
            raise FileNotFoundError(f"no complete checkpoint at {path}")
        try:
            return _load_version(where, model, optimizer)
        except (Exception, CheckpointException):  # DCP's error is a BaseException
            if where.exists():
                raise
            # the version was removed after LATEST moved on: read the new one
    raise RuntimeError(f"{path} changed under every one of 1000 reads")


def _load_version(where: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    verify(where)
    meta = json.loads((where / META).read_text())
    if optimizer is not None and meta.get("has_optimizer"):
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(where))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    else:
        state = {"model": get_model_state_dict(model)}
        dcp.load(state, checkpoint_id=str(where))
        set_model_state_dict(model, state["model"], options=StateDictOptions(strict=True))
    return meta
