"""Content-addressed outputs: identities, atomic publication, and locks that survive dead holders."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path


def signature(payload: dict, length: int = 16) -> str:
    """Stable hash of a JSON-able description of what determines an output."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def publish_dir(tmp: Path, final: Path) -> None:
    """Make a fully written directory visible under its final name in one rename."""
    if final.exists():
        # Someone else published the same content first (same identity): keep theirs.
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, final)


class StaleLockError(RuntimeError):
    pass


class FileLock:
    """A lock file created with O_EXCL, kept fresh by a heartbeat thread.

    O_EXCL creation is atomic on local disks and on NFSv3+ shared by cluster nodes (flock is not
    reliable there). A holder that dies stops touching the file; after `stale_s` without a heartbeat any
    waiter may break the lock.
    """

    def __init__(self, path: str | os.PathLike, stale_s: float = 120.0, poll_s: float = 0.5,
                 on_wait=None):
        self.path = Path(path)
        self.stale_s, self.poll_s, self.on_wait = stale_s, poll_s, on_wait
        self.heartbeat_s = max(stale_s / 4, 0.05)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self.token)
        return True

    def acquire(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        waited_since = time.monotonic()
        while not self._try_create():
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age > self.stale_s:
                # Break a stale lock by renaming it away: only one breaker's rename succeeds.
                try:
                    os.rename(self.path, self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}"))
                except FileNotFoundError:
                    pass
                continue
            if self.on_wait is not None:
                self.on_wait(time.monotonic() - waited_since)
            time.sleep(self.poll_s)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def _beat(self):
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self.path.read_text() == self.token:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
