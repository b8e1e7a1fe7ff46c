"""Files written whole: the one atomic write, the one appender of JSON lines and the one tolerant JSONL reader.

splitsweep and `analysis` both write through these (analysis/atomic.py keeps its strict JSON on top of
`write_atomic`; `store.build_once` publishes whole files and directories). Standard library only: status and
analysis import it without torch.

- `write_atomic`: readers, and a crash, see the old file or the new one, never a part of it.
- `append_lines`: whole lines or nothing, in one write to the end of the file (no rewrite). A full disk cuts the
  file back to where it was and raises AppendError. A line torn by a writer killed mid-write stays a line of its
  own: the next append starts on a new line.
- `read_jsonl`: the JSON objects of a file; what is not one (a torn last line of a killed writer or of one still
  writing, a foreign or garbled line, a list) is skipped without a word. analysis/io.py is the strict reader.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = True, mode: int | None = None) -> Path:
    """Write `data` to a temporary file beside `path` (`.<name>.<hex>.tmp`), then os.replace it over `path`.

    durable=False skips the fsync (a file rewritten often, whose loss in a machine crash costs little). `mode`:
    the permissions the file gets (default: those a new file gets under the umask). A failed write removes its
    temporary and leaves `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_jsonl(path: str | os.PathLike, *, missing_ok: bool = True) -> list[dict]:
    """The JSON objects of a JSON-lines file, in order ([] when there is no file, unless missing_ok=False).
    Tolerant: a line that is not a whole JSON object is skipped silently."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")  # a torn multi-byte character: no error
    except FileNotFoundError:
        if not missing_ok:
            raise
        return []
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


class AppendError(OSError):
    """Lines could not be appended whole (e.g. a full disk); the file was cut back to where it was.
    The error that stopped the write is its __cause__."""


@contextlib.contextmanager
def locked(path: str | os.PathLike):
    """An exclusive flock on `<path without its suffix>.lock` beside `path`, held for the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError("write returned 0 bytes")
        view = view[n:]


def append_lines(path: str | os.PathLike, payload: bytes, *, lock: bool = True) -> int:
    """Append `payload` (whole lines, each ending in a newline) to `path`, creating it, and fsync it.

    lock=True holds `locked(path)` for the append; lock=False is for a caller that already serialises the writers
    of `path` (its own `locked(path)`, or a lease). Returns the offset at which `payload` starts. Raises
    AppendError, with the file cut back to its old size, when not every byte could be written."""
    path = Path(path)
    with locked(path) if lock else contextlib.nullcontext():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            # A line torn by a killed writer is ended first: never glued to the first new line.
            sep = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
            try:
                _write_all(fd, sep + payload)
                os.fsync(fd)
            except OSError as err:
                os.ftruncate(fd, size)  # whole lines or nothing
                os.fsync(fd)
                raise AppendError(err.errno, f"could not append to {path}: {err.strerror or err}") from err
        finally:
            os.close(fd)
    return size + len(sep)


def append_jsonl(path: str | os.PathLike, objs, *, lock: bool = True, **dumps) -> int:
    """Append one JSON line per object of `objs` (json.dumps(obj, **dumps)), as `append_lines` does."""
    return append_lines(path, "".join(json.dumps(o, **dumps) + "\n" for o in objs).encode(), lock=lock)
