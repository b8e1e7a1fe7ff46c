"""Content-addressed outputs: atomic publication, build-once under a lock, and locks that survive dead holders
(the identities that name the outputs are computed in identity.py)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

from .fsio import write_atomic


def write_json_atomic(path: str | os.PathLike, obj, durable: bool = True) -> None:
    """Readers see the old file or the new one, never a part (fsio.write_atomic). durable=False skips the fsync
    (a file rewritten often, whose loss in a machine crash costs little)."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), durable=durable)


def fsync_tree(root: Path) -> None:
    """Flush every file under `root`, and the directories themselves, to disk."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writer_tag() -> str:
    """Names a temporary file or directory by its writer: `<host>-<pid>-<random>`."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def private_tmp(final: Path) -> Path:
    """A build directory beside `final` that no other writer uses (two writers of one output never share one)."""
    return final.with_name(f".{final.name}.tmp-{writer_tag()}")


def is_debris(path: Path, max_age_s: float = 86400.0) -> bool:
    """Whether a temporary named by `writer_tag` belongs to a writer that is gone: a dead process of this host,
    or (another host's, which cannot be asked) one older than `max_age_s`. Names without a tag are debris."""
    try:
        host, pid, _ = path.name.rsplit("tmp-", 1)[1].rsplit("-", 2)
        pid = int(pid)
    except (IndexError, ValueError):
        return True
    if host == socket.gethostname():
        return _pid_gone(pid)
    try:
        return time.time() - path.stat().st_mtime > max_age_s
    except FileNotFoundError:
        return False


def publish_dir(tmp: Path, final: Path) -> bool:
    """Make a fully written directory visible under its final name in one rename.

    Returns False (and removes `tmp`) when another writer published the same identity first: keep theirs.
    """
    fsync_tree(tmp)
    try:
        os.rename(tmp, final)  # fails on an existing non-empty directory: never replaces a published one
    except OSError as err:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        del err
        return False
    _fsync_dir(final.parent)
    return True


class StaleLockError(RuntimeError):
    pass


class LeaseLost(RuntimeError):
    """The lock this process held was broken by another (it was stopped or unreachable past `stale_s`)."""


def _host_id() -> str:
    # PIDs are comparable only inside one PID namespace of one host.
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = 0
    return f"{socket.gethostname()}/{ns}"


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child not yet reaped is a zombie: gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class FileLock:
    """A lease: a lock file holding its owner's token, kept fresh by a heartbeat thread.

    Creation is atomic (the token is written to a private file, then hard-linked to the lock's name,
    which fails if it exists; both are atomic on local disks and on NFSv3+ shared by cluster nodes, where
    flock is not reliable), so a lock file always names its holder. A lock is broken when its heartbeat
    is older than `stale_s`, or at once when its holder is a process of this host that no longer exists.
    Breaking renames the exact file inspected away and restores it if it turned out to be a fresh one.
    A holder whose lock was broken (stopped past `stale_s`, then resumed) sees it at its next
    heartbeat or `check()`: it must stop, not publish (`check()` raises LeaseLost).
    """

    def __init__(self, path: str | os.PathLike, stale_s: float = 120.0, poll_s: float = 0.5,
                 on_wait=None, should_stop=None):
        if not stale_s > 0:
            raise ValueError(f"lock stale_s={stale_s} must be positive")
        self.path = Path(path)
        self.stale_s, self.poll_s, self.on_wait, self.should_stop = stale_s, poll_s, on_wait, should_stop
        self.heartbeat_s = max(stale_s / 4, 0.05)
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self.token = json.dumps({"host": _host_id(), "pid": os.getpid(), "id": uuid.uuid4().hex})

    def _try_create(self) -> bool:
        mine = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.new")
        mine.write_text(self.token)
        try:
            os.link(mine, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            mine.unlink()

    def _stale(self, text: str, age: float) -> bool:
        if age > self.stale_s:
            return True
        try:
            holder = json.loads(text)
        except ValueError:
            return False
        return holder.get("host") == _host_id() and isinstance(holder.get("pid"), int) and _pid_gone(holder["pid"])

    def _break(self, inode: int) -> None:
        """Remove the lock file with inode `inode`, and only that one."""
        aside = self.path.with_name(f"{self.path.name}.broken-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if os.stat(aside).st_ino != inode:  # a fresh lock was made since we looked: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass  # yet another lock exists now; the fresh one's holder sees its loss at check()
        aside.unlink()

    def acquire(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        waited_since = time.monotonic()
        while not self._try_create():
            try:
                st = os.stat(self.path)
                text = self.path.read_text()
            except FileNotFoundError:
                continue
            if self._stale(text, time.time() - st.st_mtime):
                self._break(st.st_ino)
                continue
            if self.should_stop is not None:
                self.should_stop()  # raises to abandon the wait (e.g. on a preemption signal)
            if self.on_wait is not None:
                self.on_wait(time.monotonic() - waited_since)
            time.sleep(self.poll_s)
        self._stop.clear()
        self._lost.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def held(self) -> bool:
        try:
            return self.path.read_text() == self.token
        except FileNotFoundError:
            return False

    def _beat(self):
        while not self._stop.wait(self.heartbeat_s):
            if not self.held():
                self._lost.set()
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass

    def check(self) -> None:
        """Raise LeaseLost unless this process still holds the lock: call it before publishing anything."""
        if self._lost.is_set() or not self.held():
            self._lost.set()
            raise LeaseLost(f"lock {self.path} was taken over by another job while this one was stopped")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.held():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def build_once(final: Path, build, *, is_built=None, lock: Path | None = None) -> Path:
    """`final` (a file or a directory), built by `build(tmp)` once across processes and cluster nodes.

    Already built (`is_built(final)`, default: it exists): returned as it is. Else, under a FileLock (`lock`,
    default `.<name>.lock` beside it) the check is made again, then `build` writes a private temporary beside
    `final` -- a file or a directory, as it likes -- and one rename publishes it. A reader never sees a half-built
    output; a crashed builder leaves only its temporary, which is removed here.
    """
    final = Path(final)
    is_built = is_built or (lambda p: p.exists())
    if is_built(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock or final.with_name(f".{final.name}.lock")):
        if is_built(final):
            return final
        tmp = private_tmp(final)
        try:
            build(tmp)
            if tmp.is_dir():
                publish_dir(tmp, final)
            else:
                os.replace(tmp, final)
                _fsync_dir(final.parent)
        finally:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()
    return final
