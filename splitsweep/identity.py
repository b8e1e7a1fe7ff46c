"""Where identity is computed: one hash, one way to declare what determines an output, one exclusion rule.

Every output of splitsweep is named by the hash of what determines it:
- a step (steps.py: the seed trajectory, a seed, an expert run, a downstream evaluation) declares the fields that
  determine its output with `defining(...)`, next to the fields; `identity(step)` hashes exactly those, and a
  field holding another step contributes that step's identity (a run is keyed by its trajectory's id);
- a job's whole config is hashed by `config_hash` (its provenance in every row), a sweep's shared settings by
  `sweep_identity.defining_config`.

The exclusion rule, one for all of them: a setting is left out when it only says where outputs go or how they
are reported (VOLATILE), and a setting added after records existed is left out while it is at the value that
was the behaviour before it existed (ADDED_AT_DEFAULT), so an identity recorded before the setting existed stays
the same. The sweep's identity also leaves out what changes how fast a result is computed, never the result
(NOT_DEFINING: threads, device, micro-batching, checkpoint cadence...); `config_hash` keeps those, because a
row records the exact config that trained it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

VOLATILE = ("paths", "logger", "report")
# Settings that do not change what a grid point measures: left out of a sweep's identity and of the name of a
# grid point's Hydra job directory (job_dir_overrides).
NOT_DEFINING = (*VOLATILE, "hydra", "eval", "sweep_name", "train.threads", "train.device", "train.micro_batch",
                "train.progress_every_s", "train.checkpoint_every_steps", "train.lock_stale_s",
                "train.handle_signals", "data.progress", "data.num_proc", "train.compile",
                "train.activation_checkpointing", "train.sync_every_steps")
# Settings added after sweeps and runs were recorded: at this value a setting is the old behaviour, so it is
# left out, and what was recorded keeps its identity.
ADDED_AT_DEFAULT = {
    "split.accounting": "per_path", "split.n_experts": None, "split.tokens_per_param": None,
    "split.budget_step_multiple": 1, "train.eval_scope": "all", "train.precision": "fp32",
    "train.compile": False, "train.activation_checkpointing": "none", "train.sync_every_steps": 10,
    "data.num_proc": 1, "data.heldout_max_overlap": None,
}

# The grid's own file: its name is the sweep's (sweep_name), never a grid point's.
SWEEP_FILE_GROUP = "sweeps"

_ALWAYS = object()  # a defining field that is never left out


def _override_key(line: str) -> str:
    """`+a.b=1` -> `a.b`, `hydra/launcher=slurm` -> `hydra/launcher`, `~x` -> `x`."""
    return line.split("=", 1)[0].lstrip("+~")


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".") or key.startswith(prefix + "/")


def job_dir_overrides(overrides) -> list:
    """The override lines that name a grid point's Hydra job directory (`jobs/<lines>`, app.job_dirname):
    the grid point's overrides without the settings and config groups under NOT_DEFINING and without the
    sweep file's group, sorted. Two grid points that differ only in what is left out are the same run, and
    share a job directory as they share runs/<run_id>."""
    excluded = (*NOT_DEFINING, SWEEP_FILE_GROUP)
    lines = [str(line) for line in overrides]
    return sorted(line for line in lines if not any(_under(_override_key(line), p) for p in excluded))


def signature(payload: dict, length: int = 16) -> str:
    """Stable hash of a JSON-able description of what determines an output."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def defining(*, key: str | None = None, omitted_at: Any = _ALWAYS, doc: str = "", **field_kwargs) -> Any:
    """A dataclass field that determines the step's output, so its identity. `key`: its name in the hashed
    payload when that differs from the field's (names recorded before the field was renamed); `omitted_at`:
    left out of the payload at this value (ADDED_AT_DEFAULT's rule, for a field added after ids were recorded)."""
    return dataclasses.field(metadata={"defining": True, "key": key, "omitted_at": omitted_at, "doc": doc},
                             **field_kwargs)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return identity(value) if getattr(value, "is_step", False) else payload(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def payload(obj: Any) -> dict:
    """What `identity(obj)` hashes: the defining fields of `obj` under their keys, a step's dependencies as
    their identities, nested declarations as their payloads."""
    out = {}
    for f in dataclasses.fields(obj):
        meta = f.metadata
        if not meta.get("defining"):
            continue
        value = getattr(obj, f.name)
        if meta["omitted_at"] is not _ALWAYS and value == meta["omitted_at"]:
            continue
        out[meta["key"] or f.name] = _plain(value)
    return out


def identity(obj: Any) -> str:
    """The hash of `obj`'s defining fields: the name of its output."""
    return signature(payload(obj))


def pop_added_at_default(resolved: dict) -> dict:
    """A nested config without the settings at their added-at-default value (in place)."""
    for dotted, default in ADDED_AT_DEFAULT.items():
        *parents, leaf = dotted.split(".")
        node = resolved
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and node[leaf] == default:
            node.pop(leaf)
    return resolved


def without_added_at_default(flat: dict) -> dict:
    """The same on a flattened config (dotted keys)."""
    return {k: v for k, v in flat.items() if not (k in ADDED_AT_DEFAULT and v == ADDED_AT_DEFAULT[k])}


def config_hash(cfg) -> str:
    """Hash of a job's resolved config (a DictConfig), without VOLATILE settings and the added ones at their
    default."""
    from omegaconf import OmegaConf  # imported here: status.py reads identities without loading a config stack

    resolved = OmegaConf.to_container(cfg, resolve=True)
    for volatile in VOLATILE:
        resolved.pop(volatile, None)
    return signature(pop_added_at_default(resolved))
