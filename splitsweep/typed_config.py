"""One conversion of a plain config section into a typed dataclass: `typed(name, value, Kind)`.

Each module that owns a config section declares its dataclass (train_args.TrainArgs, downstream.EvalArgs,
model.ModelSpec) with each key's type and meaning; the config files keep the defaults. `typed` is the one place a
value is converted: a whole number where an int is declared (never a bool, never 2.5), any number where a real
is, true or false for a switch, else a ConfigError naming the key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import ClassVar

from omegaconf import OmegaConf

from .errors import ConfigError


def plain(node) -> dict:
    """A config node (resolved) as plain Python."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


class Section:
    """Base of a typed config section: `Kind.of(cfg.<section>)` (or of a Kind already: returned as it is)."""
    section: ClassVar[str]  # its key in the config: named in every error

    @classmethod
    def of(cls, node):
        return node if isinstance(node, cls) else typed(cls.section, plain(node), cls)


def typed(name: str, value, kind):
    """`value` as `kind`: a dataclass (every field from the mapping), int, float, bool, str, dict, object (as
    it is), tuple[X, Y] or tuple[X, ...], or X | None."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{name}={value!r} must be a mapping of {', '.join(f.name for f in dataclasses.fields(kind))}")
        hints = typing.get_type_hints(kind)
        missing = [f.name for f in dataclasses.fields(kind) if f.name not in value]
        if missing:
            raise ConfigError(f"{name} has no {', '.join(missing)}: the config files declare every key; was one "
                              f"removed with ~{name}.{missing[0]}?")
        return kind(**{f.name: typed(f"{name}.{f.name}", value[f.name], hints[f.name])
                       for f in dataclasses.fields(kind)})
    if kind is object:  # any value (the key's own check decides)
        return value
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return typed(name, value, inner)
    if typing.get_origin(kind) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any number of X
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{name}={value!r} must be a list")
            return tuple(typed(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{name}={value!r} must be a list of {len(args)} values")
        return tuple(typed(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if kind is list or typing.get_origin(kind) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name}={value!r} must be a list")
        return value
    if kind is dict or typing.get_origin(kind) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}={value!r} must be a mapping")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ConfigError(f"{name}={value!r} must be a whole number")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}={value!r} must be a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} must be a string")
        return value
    raise TypeError(f"{name}: no conversion to {kind!r}")
