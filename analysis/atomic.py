"""Whole-or-nothing writes: every output goes to a temp file in its own directory, then os.replace.

os.replace within one directory is atomic on POSIX, so a reader (or a crash) sees either the old
file or the complete new one, never a half-written one. The write itself is splitsweep's one atomic
write (splitsweep/fsio.py: temp files `.<name>.<hex>.tmp`, fsynced); what is this module's own is the
strict JSON below and the mode (0644) of what the analysis writes.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from splitsweep.fsio import write_atomic


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, data, durable=True, mode=0o644)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> Path:
    """Strict JSON: NaN/inf become null (a folded or unfitted parameter), numpy values become Python."""
    return write_text(path, json.dumps(to_plain(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def to_plain(x):
    if isinstance(x, dict):
        return {str(k): to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    if hasattr(x, "tolist"):  # numpy scalar or array
        return to_plain(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
