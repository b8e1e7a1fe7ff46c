"""Whole-or-nothing writes: every output goes to a temp file in its own directory, then os.replace.

os.replace within one directory is atomic on POSIX, so a reader (or a crash) sees either the old
file or the complete new one, never a half-written one.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
