"""pytest plugin: a real single-node SLURM cluster for the tests, and a 2-node one (see tests/slurm/README.md).

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.slurm_cluster"]``; then any test can ask
for the session-scoped ``slurm_cluster`` fixture and should be marked ``@pytest.mark.slurm``.

The fixture runs ``tests/slurm/start.sh`` (which installs the Debian packages when they are missing, and
reuses a cluster that already runs healthy); when no other live pytest session uses that cluster, it
cancels every job still queued (left by a session that was killed) and waits until they are gone. It
exports ``SLURM_CONF`` into ``os.environ`` for the session (so submitit's and Hydra's ``sbatch``/``sacct``
calls find the cluster), and yields a :class:`SlurmCluster`. At the end of the session it stops the daemons
by PID (``tests/slurm/stop.sh``) only if this session started them, and only when no other pytest session
on the machine is still using the same cluster. Sessions are tracked as root only, by marks holding each
pytest process's boot id and start time (a killed session's mark counts for nothing, even once its PID is
reused); as another user the fixture only uses a running cluster and cancels nothing.

The module-scoped ``slurm_cluster_2nodes`` fixture does the same for a 2-node cluster (``start.sh`` with
``SPLITSWEEP_SLURM_NODES=2``: each node a network namespace with its own address and slurmd), in its own state
dir (``$SPLITSWEEP_SLURM_DIR-2nodes``) on its own ports (the single-node base + 10), and always stops it at
the end (the last session using it stops it; namespaces, veths and bridge are removed), also when it failed
to start.

Environment:
  SPLITSWEEP_SLURM=0        skip every ``slurm`` test without trying to start anything
  SPLITSWEEP_SLURM_KEEP=1   leave the cluster running at the end (fast reruns while developing)
  SPLITSWEEP_SLURM_DIR, SPLITSWEEP_SLURM_PARTITION, SPLITSWEEP_SLURM_CPUS, ...: passed to start.sh
When the cluster cannot be started here (not root, not Linux, no apt-get, its ports taken by another
program: set SPLITSWEEP_SLURM_PORT_BASE) the ``slurm`` tests are skipped with the reason, except under
``CI=true`` (or ``SPLITSWEEP_SLURM=1``), where that is an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

import pytest

SLURM_DIR = Path(__file__).resolve().parent / "slurm"
REPO_ROOT = SLURM_DIR.parents[1]
START_TIMEOUT_S = 900  # a cold install on a slow mirror; a warm start takes seconds
DEFAULT_DIR = "/tmp/splitsweep-slurm"
DEFAULT_PORT_BASE = 16817


@dataclasses.dataclass
class SlurmCluster:
    """A running cluster, as described by ``$state_dir/cluster.json``."""

    state_dir: Path
    partition: str
    cpus: int  # CPUs of each node
    mem_mb: int  # RealMemory of each node
    def_mem_per_cpu_mb: int  # what a job gets per CPU when it does not ask for memory
    cluster_name: str
    node: str
    env: dict[str, str]  # client environment: SLURM_CONF (already exported into os.environ by the fixture)
    slurm_version: str
    started: bool  # True if this session started the daemons (and will stop them)
    install_s: float
    start_s: float
    nodes: list[str] = dataclasses.field(default_factory=list)  # ["localhost"], or ["node1", "node2"]
    addresses: dict[str, str] = dataclasses.field(default_factory=dict)  # node -> NodeAddr
    network_namespaces: dict[str, str] = dataclasses.field(default_factory=dict)  # node -> netns ({} on 1 node)

    @property
    def mem_gb(self) -> float:
        return self.mem_mb / 1024

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @classmethod
    def from_state_dir(cls, state_dir: Path, started: bool) -> "SlurmCluster":
        info = json.loads((state_dir / "cluster.json").read_text())
        return cls(
            state_dir=state_dir,
            partition=info["partition"],
            cpus=int(info["cpus"]),
            mem_mb=int(info["mem_mb"]),
            def_mem_per_cpu_mb=int(info["def_mem_per_cpu_mb"]),
            cluster_name=info["cluster_name"],
            node=info["node"],
            env=dict(info["env"]),
            slurm_version=info["slurm_version"],
            started=started,
            install_s=info["install_ms"] / 1000 if started else 0.0,
            start_s=info["start_ms"] / 1000 if started else 0.0,
            nodes=list(info.get("nodes", [info["node"]])),
            addresses=dict(info.get("addresses", {})),
            network_namespaces=dict(info.get("network_namespaces", {})),
        )

    # ---------------------------------------------------------------- helpers for tests
    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a SLURM client command (``squeue``, ``sacct``, ``scancel``, ``scontrol``...) on this cluster."""
        return subprocess.run(
            list(cmd), env={**os.environ, **self.env}, check=check, timeout=timeout, capture_output=True, text=True
        )

    def executor(self, folder: tp.Union[str, Path], **slurm_params: tp.Any):
        """A submitit ``AutoExecutor`` forced onto this cluster (never the local fallback).

        Defaults: this partition, 1 task, 1 CPU, 1 GB, 10 min, and a setup line that puts the repository
        root on the job's PYTHONPATH (so ``splitsweep`` imports whatever directory pytest was started
        from); ``slurm_params`` are passed to
        ``update_parameters`` (generic names like ``timeout_min`` or ``slurm_*`` ones) and override them.
        ``slurm_max_num_timeout`` (requeues allowed after preemption/timeout) goes to the constructor.
        """
        import submitit

        ctor = {k: slurm_params.pop(k) for k in ("slurm_max_num_timeout", "slurm_python") if k in slurm_params}
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm", **ctor)
        params: dict[str, tp.Any] = dict(
            slurm_partition=self.partition, nodes=1, tasks_per_node=1, cpus_per_task=1, mem_gb=1, timeout_min=10,
            slurm_setup=[f'export PYTHONPATH="{REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"'],
        )
        params.update(slurm_params)
        ex.update_parameters(**params)
        return ex

    def hydra_launcher_overrides(self, submitit_folder: tp.Union[str, Path, None] = None) -> list[str]:
        """Command-line overrides that point hydra-submitit-launcher's ``submitit_slurm`` at this cluster."""
        out = [
            "hydra/launcher=submitit_slurm",
            f"hydra.launcher.partition={self.partition}",
            "hydra.launcher.nodes=1",
            "hydra.launcher.mem_gb=1",
            "hydra.launcher.cpus_per_task=1",
        ]
        if submitit_folder is not None:
            out.append(f"hydra.launcher.submitit_folder={submitit_folder}")
        return out

    def job_ids(self, states: str = "PD,R,CG,S,RQ") -> list[str]:
        """Ids of the jobs in the queue in the given states (all users)."""
        out = self.run("squeue", "-h", "-t", states, "-o", "%i", check=False).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def sacct_state(self, job_id: tp.Union[str, int]) -> str:
        """The accounting state of a job (``COMPLETED``, ``CANCELLED by 0``, ``FAILED``...), '' if unknown."""
        out = self.run("sacct", "-X", "-n", "-P", "-j", str(job_id), "-o", "State", check=False).stdout
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def wait_for_state(self, job_id: tp.Union[str, int], prefixes: tp.Iterable[str], timeout: float = 60) -> str:
        """Poll ``squeue``/``sacct`` until the job's state starts with one of ``prefixes``; returns the state."""
        prefixes = tuple(prefixes)
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            out = self.run("squeue", "-h", "-j", str(job_id), "-o", "%T", check=False).stdout.strip()
            state = out or self.sacct_state(job_id)
            if state.startswith(prefixes):
                return state
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still {state!r} after {timeout}s, wanted {prefixes}")

    def logs_tail(self, lines: int = 30) -> str:
        """Tails of the daemons' logs, for failure messages."""
        parts = []
        slurmds = ["slurmd.log", *sorted(p.name for p in self.log_dir.glob("slurmd-*.log"))]  # one per node
        for name in ("slurmctld.log", *slurmds, "slurmdbd.log"):
            path = self.log_dir / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"---- {path}\n" + "\n".join(text))
        return "\n".join(parts)


# -------------------------------------------------------------------- pytest plugin hooks and fixture
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slurm: runs jobs on the real local SLURM cluster (tests/slurm); deselect with -m 'not slurm'"
    )


_SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    for line in _SUMMARY:
        terminalreporter.write_line(line)


def _truthy(value: tp.Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _required() -> bool:
    """In CI (or when asked) a cluster that cannot start is an error, not a skip."""
    return _truthy(os.environ.get("CI")) or _truthy(os.environ.get("SPLITSWEEP_SLURM"))


def _process_identity(pid: int) -> tp.Optional[str]:
    """``<boot id>:<start time>`` of a live process: a PID alone may since name another process (PIDs are
    reused, and a machine may have rebooted with /tmp kept). None when no such process lives (or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except (OSError, IndexError):
        return None
    if len(fields) < 20 or fields[0] == "Z":  # a zombie is not a user
        return None
    return f"{boot}:{fields[19]}"  # field 22 of stat: start time in clock ticks after boot


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _Sessions:
    """Which pytest processes use the cluster, so that the last one out stops what a session started.

    ``$state_dir/sessions/<pid>`` marks a user; it holds that process's identity (boot id and start time),
    so a mark left by a killed session counts for nothing even once its PID is reused, and is removed.
    ``sessions/stop-when-idle`` means "a session that started the daemons has ended while others still used
    them: the last user stops them". All under a flock.
    """

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "sessions"
        self.lock = state_dir / "sessions.lock"
        self.me = self.dir / str(os.getpid())
        self.stop_flag = self.dir / "stop-when-idle"

    @staticmethod
    def _live(mark: Path, pid: int) -> bool:
        identity = _process_identity(pid)
        if identity is None:
            return False
        try:
            recorded = json.loads(mark.read_text() or "{}").get("process")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded:
            return recorded == identity
        return b"pytest" in _cmdline(pid) or b"py.test" in _cmdline(pid)  # a mark written before identities

    def others(self) -> list[int]:
        """PIDs of the other live sessions; the marks of sessions that are gone are removed."""
        live = []
        for mark in sorted(self.dir.glob("[0-9]*")) if self.dir.exists() else []:
            try:
                pid = int(mark.name)
            except ValueError:
                continue
            if pid == os.getpid():
                continue
            if self._live(mark, pid):
                live.append(pid)
            else:
                mark.unlink(missing_ok=True)
        return live

    def join(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.me.write_text(json.dumps({"pid": os.getpid(), "process": _process_identity(os.getpid()),
                                       "argv": sys.argv[:8]}) + "\n")
        self.stop_flag.unlink(missing_ok=True)  # someone uses it again: whoever started it still owns it


def _cancel_leftover_jobs(state_dir: Path, timeout: float = 90) -> tp.Optional[str]:
    """Cancel every job in the queue (called when no other session uses the cluster: what is there was left
    by a session that was killed, and would hold the node's CPUs and memory) and wait until the node is
    free. Returns a line for the summary, or None when the queue was empty."""
    env = {**os.environ, "SLURM_CONF": str(state_dir / "etc" / "slurm.conf")}

    def queued() -> list[str]:
        # squeue's default filter: every job not finished yet, completing ones included (as stop.sh uses it)
        out = subprocess.run(["squeue", "-h", "-o", "%A"], env=env, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            pytest.fail(f"slurm_cluster: squeue failed ({out.returncode}): {out.stderr.strip()}")
        return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()}, key=lambda j: (len(j), j))

    jobs = queued()
    if not jobs:
        return None
    t0 = time.monotonic()
    subprocess.run(["scancel", *jobs], env=env, capture_output=True, text=True, timeout=60)
    left = jobs
    while left and time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        left = queued()
    if left:
        pytest.fail(f"slurm_cluster: jobs {' '.join(left)}, left by an earlier session, are still in the queue "
                    f"{timeout:.0f}s after scancel; see {state_dir / 'log'}")
    return f"slurm_cluster: cancelled {len(jobs)} job(s) left by an earlier session ({' '.join(jobs)}) in " \
           f"{time.monotonic() - t0:.1f}s"


def _run_script(name: str, *args: str, timeout: float, env: tp.Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SLURM_DIR / name), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> tp.Iterator[SlurmCluster]:
    """Session-wide real SLURM cluster; see the module docstring."""
    state_dir = Path(os.environ.get("SPLITSWEEP_SLURM_DIR", DEFAULT_DIR))
    yield from _cluster(state_dir, {}, always_stop=False)


@pytest.fixture(scope="module")
def slurm_cluster_2nodes() -> tp.Iterator[SlurmCluster]:
    """A 2-node cluster (node1, node2: one network namespace, address and slurmd each), for the module."""
    state_dir = Path(os.environ.get("SPLITSWEEP_SLURM_DIR", DEFAULT_DIR).rstrip("/") + "-2nodes")
    port_base = int(os.environ.get("SPLITSWEEP_SLURM_PORT_BASE", "") or DEFAULT_PORT_BASE) + 10
    script_env = {"SPLITSWEEP_SLURM_DIR": str(state_dir), "SPLITSWEEP_SLURM_PORT_BASE": str(port_base),
                  "SPLITSWEEP_SLURM_NODES": "2"}
    yield from _cluster(state_dir, script_env, always_stop=True)


def _cluster(state_dir: Path, script_env: dict[str, str], always_stop: bool) -> tp.Iterator[SlurmCluster]:
    """Start (or reuse) the cluster of ``state_dir`` with ``start.sh`` run under ``script_env``, yield it with
    SLURM_CONF exported, and stop it at the end: if this session started it (or ``always_stop``), once no
    other session uses it. With ``always_stop`` a failed start is cleaned up too (namespaces included)."""
    if os.environ.get("SPLITSWEEP_SLURM", "").strip().lower() in ("0", "false", "no", "off"):
        pytest.skip("SLURM tests disabled by SPLITSWEEP_SLURM=0")
    sessions = _Sessions(state_dir)

    started = False
    if os.geteuid() != 0:
        # Not root (a laptop): use a cluster started with `sudo tests/slurm/start.sh`, never start or stop one.
        ping = subprocess.run(
            ["scontrol", "ping"], env={**os.environ, "SLURM_CONF": str(state_dir / "etc/slurm.conf")},
            capture_output=True, text=True,
        ) if (state_dir / "cluster.json").exists() else None
        if ping is None or "UP" not in ping.stdout:
            settings = "".join(f"{k}={v} " for k, v in script_env.items())
            msg = f"no SLURM cluster runs in {state_dir}; start one with: sudo {settings}{SLURM_DIR}/start.sh"
            if _required():
                pytest.fail(msg)
            pytest.skip(msg)
    else:
        with _locked(sessions.lock):
            t0 = time.monotonic()
            try:
                proc = _run_script("start.sh", timeout=START_TIMEOUT_S, env=script_env)
            except subprocess.TimeoutExpired as e:
                if always_stop and not sessions.others():
                    _run_script("stop.sh", "--quiet", timeout=120, env=script_env)
                pytest.fail(f"tests/slurm/start.sh did not finish in {START_TIMEOUT_S}s:\n{e.stdout}\n{e.stderr}")
            report = f"tests/slurm/start.sh exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            if proc.returncode != 0 and always_stop and not sessions.others():  # leave nothing half-made
                stopped = _run_script("stop.sh", timeout=120, env=script_env)
                report += f"\ntests/slurm/stop.sh (cleanup):\n{stopped.stdout}\n{stopped.stderr}"
            if proc.returncode == 2 and not _required():
                pytest.skip(f"no SLURM cluster here: {proc.stderr.strip()}")
            if proc.returncode != 0:
                pytest.fail(report)
            started = proc.stdout.rstrip().endswith("SPLITSWEEP_SLURM_STARTED=1")
            if not sessions.others():  # nobody else uses it: whatever is queued was left by a killed session
                cancelled = _cancel_leftover_jobs(state_dir)
                if cancelled:
                    _SUMMARY.append(cancelled)
            sessions.join()
        _SUMMARY.append(
            f"slurm_cluster: {'started' if started else 'reused'} the cluster in {state_dir} in "
            f"{time.monotonic() - t0:.1f}s ({proc.stdout.strip().splitlines()[-2] if started else 'already running'})"
        )

    saved: dict[str, tp.Optional[str]] = {}
    try:
        cluster = SlurmCluster.from_state_dir(state_dir, started=started)
        saved = {k: os.environ.get(k) for k in cluster.env}
        os.environ.update(cluster.env)
        yield cluster
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if os.geteuid() == 0:
            _leave(sessions, started or always_stop, script_env)


def _leave(sessions: _Sessions, started: bool, script_env: tp.Optional[dict] = None) -> None:
    keep = _truthy(os.environ.get("SPLITSWEEP_SLURM_KEEP"))
    with _locked(sessions.lock):
        sessions.me.unlink(missing_ok=True)
        must_stop = started or sessions.stop_flag.exists()
        if not must_stop or keep:
            return
        if sessions.others():  # still in use by another pytest session: the last one out stops it
            sessions.stop_flag.touch()
            return
        sessions.stop_flag.unlink(missing_ok=True)
        t0 = time.monotonic()
        proc = _run_script("stop.sh", timeout=120, env=script_env)
        _SUMMARY.append(f"slurm_cluster: stopped the cluster in {sessions.dir.parent} in {time.monotonic() - t0:.1f}s")
        if proc.returncode != 0:
            sys.stderr.write(f"[slurm_cluster] tests/slurm/stop.sh failed:\n{proc.stdout}\n{proc.stderr}\n")
