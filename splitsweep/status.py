"""`python -m splitsweep.status SWEEP_DIR`: every grid point of a sweep as done, running, pending or failed.

The grid is the one the launches planned: every splitsweep launcher (the default sequential one and the
submitit ones) writes each launch's grid points (index, overrides, job directory, run id) to
`launches.jsonl` before it runs or submits them, so a point not started yet is listed, as pending, and each
point is labelled with its own overrides. Its state comes from, in the order they decide:
  1. the records (`results.jsonl`): a grid point with rows is done;
  2. the scheduler: the job of the grid point's latest launch, asked through `squeue`/`sacct` (queued,
     requeued, running, failed, cancelled...);
  3. the launching process (the sequential launcher runs the points in turn in that process), the run
     directory (`runs/<run_id>/status.json`, progress checkpoints) and the Hydra job directory (`jobs/*/.hydra`,
     its log).
Read-only: nothing is planned and no data is read (sweeps from before launches.jsonl listed every launch
are matched to their run directories by config hash). Every failure comes with the path of its log.
Re-running the sweep's command re-launches only the grid points without records.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .fsio import read_jsonl
from .layout import SweepLayout
from .records import read_rows
from .steps import file_digest

STATES = ("done", "running", "pending", "failed")
# squeue(1) states in which a job may still run: submitit's incomplete SLURM states plus the held/stopped it misses.
ALIVE = {"PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending",
         "RESV_DEL_HOLD": "pending", "SPECIAL_EXIT": "pending", "PREEMPTED": "pending", "SUSPENDED": "pending",
         "STOPPED": "pending", "CONFIGURING": "running", "RUNNING": "running", "COMPLETING": "running",
         "RESIZING": "running", "STAGE_OUT": "running", "SIGNALING": "running"}


def is_alive(state: str) -> bool:
    """A scheduler state (sacct/squeue text, e.g. "REQUEUE_HOLD" or "CANCELLED by 0") in which the job may still
    run: the one list both the launcher and status read."""
    words = str(state or "").split()
    return bool(words) and words[0] in ALIVE


STALE_S = 600.0  # without a scheduler: a run dir / job log untouched this long is not running any more


@dataclass
class PointStatus:
    state: str
    run_id: str
    label: str
    job_id: str | None = None
    scheduler_state: str = ""
    detail: str = ""
    log: str | None = None
    step: int | None = None
    sources: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- scheduler
def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def scheduler_states(job_ids) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} from squeue (live jobs, array tasks one by one), then sacct (finished ones)."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    out: dict[str, tuple[str, str]] = {}
    queue = _run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(ids)])
    for line in (queue or "").splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0] in ids:
            out[parts[0]] = (parts[1], parts[2])
    rest = [j for j in ids if j not in out]
    if rest:
        acct = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Reason", "-j", ",".join(rest)])
        for line in (acct or "").splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2 and parts[0] in rest:
                out[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")  # the last line wins (requeues)
    return out


# ---------------------------------------------------------------------- launches and directories
def launches(sweep_dir: Path) -> list[dict]:
    """Every launch of the sweep, oldest first (a line that is not a launch, e.g. a torn one, is skipped)."""
    return read_jsonl(SweepLayout(sweep_dir).launches)


def latest_jobs(sweep_dir: Path) -> dict[str, dict]:
    """run_id -> the grid point's entry of the latest launch that gave it a job."""
    out: dict[str, dict] = {}
    for launch in launches(sweep_dir):
        for point in launch.get("points", []):
            if point.get("job_id"):
                out[point["run_id"]] = {**point, "launcher": launch.get("launcher")}
    return out


def latest_seed_jobs(sweep_dir: Path) -> dict[tuple[str, int], dict]:
    """(trajectory_id, D) -> the seed job of the latest SLURM launch that submitted one for it, with that launch's
    submitit folder as `folder` (a local launch's seed jobs are subprocesses of their launch: not listed)."""
    out: dict[tuple[str, int], dict] = {}
    for launch in launches(sweep_dir):
        if launch.get("launcher") != "slurm" or not launch.get("submitit_folder"):
            continue
        for seed in launch.get("seeds", []):
            if seed.get("job_id") and isinstance(seed.get("tokens"), int):  # SLURM: one job per D
                out[(seed["trajectory_id"], seed["tokens"])] = {**seed, "folder": launch["submitit_folder"]}
    return out


def _hydra_job_dirs(sweep_dir: Path) -> dict[str, dict]:
    """dirname (jobs/...) -> {label, log, job_dir, started} for the Hydra job directories of the sweep.
    `started`: when the job last started (Hydra writes .hydra/config.yaml at every start)."""
    from omegaconf import OmegaConf

    out: dict[str, dict] = {}
    for hydra_dir in sorted(SweepLayout(sweep_dir).jobs.glob("*/.hydra")):
        job_dir = hydra_dir.parent
        label = job_dir.name
        try:
            label = " ".join(str(o) for o in OmegaConf.load(hydra_dir / "overrides.yaml"))
        except Exception:  # noqa: BLE001 (a broken or foreign job dir: show it, do not crash)
            pass
        logs = sorted(job_dir.glob("*.log"))
        out[str(job_dir.relative_to(sweep_dir))] = {
            "label": label, "log": str(logs[0]) if logs else None, "job_dir": str(job_dir),
            "started": _mtime(hydra_dir / "config.yaml")}
    return out


def _legacy_run_id(info: dict, run_hashes: dict[str, str]) -> str:
    """The run of a job directory no launch listed: the run dir with the same config hash (computed from
    .hydra/config.yaml, nothing planned), else the job directory's own name."""
    from omegaconf import OmegaConf

    from .identity import config_hash

    try:
        return run_hashes[config_hash(OmegaConf.load(Path(info["job_dir"]) / ".hydra" / "config.yaml"))]
    except Exception:  # noqa: BLE001 (unresolvable, or no run dir yet)
        return f"?{Path(info['job_dir']).name}"


def _run_hashes(sweep_dir: Path) -> dict[str, str]:
    """config_hash -> run_id of the run directories."""
    out = {}
    for run_json in sorted(SweepLayout(sweep_dir).runs.glob("*/run.json")):
        identity = _read_json(run_json)
        if identity.get("config_hash"):
            out[identity["config_hash"]] = run_json.parent.name
    return out


def _mtime(path) -> float | None:
    try:
        return Path(path).stat().st_mtime
    except (OSError, TypeError):
        return None


def _alive(launch: dict) -> bool | None:
    """Whether the process that made this launch still runs; None when that cannot be told from here."""
    pid = launch.get("pid")
    if not isinstance(pid, int) or launch.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _progress(run_dir: Path) -> tuple[int | None, float]:
    """(step of the newest progress checkpoint or None, newest mtime under the run dir)."""
    step, newest = None, 0.0
    meta = run_dir / "progress" / "meta.json"  # a slot of the layout before versions
    latest = run_dir / "progress" / "LATEST"  # checkpoint.LATEST, read here without importing torch
    if latest.exists():
        try:
            meta = run_dir / "progress" / json.loads(latest.read_text())["version"] / "meta.json"
        except (ValueError, KeyError, OSError):
            pass
    if meta.exists():
        try:
            step = int(json.loads(meta.read_text())["step"])
        except (ValueError, KeyError, json.JSONDecodeError):
            pass
    for path in [run_dir, *run_dir.glob("*"), *run_dir.glob("*/*")]:
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:
            pass
    return step, newest


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# ---------------------------------------------------------------------- the decision
def collect(sweep_dir: str | os.PathLike, scheduler: bool = True, stale_s: float = STALE_S) -> list[PointStatus]:
    sweep_dir = Path(sweep_dir)
    sweep = SweepLayout(sweep_dir)
    history = launches(sweep_dir)
    points: dict[str, dict] = {}  # run_id -> what we know
    by_dirname: dict[str, str] = {}
    for launch in history:
        for p in launch.get("points", []):
            known = points.setdefault(p["run_id"], {"sources": set()})
            known["sources"].add("launch")
            known["label"] = " ".join(p.get("overrides") or []) or p.get("dirname", "")
            known["dirname"] = p.get("dirname")
            known["launch"] = launch  # the latest launch of this grid point
            if p.get("dirname"):
                by_dirname[p["dirname"]] = p["run_id"]
            if p.get("job_id"):
                known["job"] = {**p, "launcher": launch.get("launcher")}
                known.pop("not_submitted", None)
            elif p.get("state_at_launch") == "submitted":
                known["not_submitted"] = True
            elif p.get("state_at_launch") == "queued":  # run by the launching process itself, not a job
                known.pop("job", None)
                known.pop("not_submitted", None)
    job_dirs = _hydra_job_dirs(sweep_dir)
    run_hashes = None
    for dirname, info in job_dirs.items():
        run_id = by_dirname.get(dirname)
        if run_id is None:
            run_hashes = _run_hashes(sweep_dir) if run_hashes is None else run_hashes
            run_id = _legacy_run_id(info, run_hashes)
        known = points.setdefault(run_id, {"sources": set()})
        known["sources"].add("hydra")
        known.setdefault("label", info["label"])
        known.setdefault("dirname", dirname)
        known["hydra"] = info
    for run_json in sorted(sweep.runs.glob("*/run.json")):
        run_id = run_json.parent.name
        known = points.setdefault(run_id, {"sources": set()})
        known["sources"].add("run_dir")
        if "label" not in known:
            split = _read_json(run_json).get("config", {}).get("split", {})
            known["label"] = " ".join(f"split.{k}={v}" for k, v in sorted(split.items()) if v is not None)
    current = _current_points(history, points, sweep_dir)

    job_ids = [k["job"]["job_id"] for k in points.values() if "job" in k and k["job"].get("launcher") == "slurm"]
    seed_jobs = {}
    for launch in history:
        for s in launch.get("seeds", []):
            seed_jobs[str(s["job_id"])] = s
    states = scheduler_states(job_ids + list(seed_jobs)) if scheduler else {}
    rows = read_rows(sweep_dir)  # after the scheduler: a job that ended just now has its rows already
    for row in rows:
        known = points.setdefault(row["run_id"], {"sources": set()})
        known["sources"].add("records")
        known.setdefault("label", f"{row.get('model')} D={row.get('pretrain_tokens')} "
                                  f"D'={row.get('special_tokens')} {row.get('expert_domain')}")
    recorded: dict[str, int] = {}
    for row in rows:
        recorded[row["run_id"]] = recorded.get(row["run_id"], 0) + 1

    now = time.time()
    out = []
    for run_id, known in points.items():
        st = PointStatus("pending", run_id, known.get("label", ""), sources=sorted(known["sources"]))
        run_dir = sweep.run(run_id)
        st.step, touched = _progress(run_dir)
        run_status = _read_json(run_dir / "status.json")
        job = known.get("job")
        hydra = known.get("hydra") or {}
        launch = known.get("launch") or {}
        # The sequential launcher runs its grid points in turn in the launching process: while that process
        # lives, a point it has not started yet is pending, the one it started last is running, and an
        # earlier one without records failed. None: not such a launch, or its process is on another host.
        alive = _alive(launch) if launch.get("launcher") == "sequential" and not job else None
        began = _started(known, run_dir) >= float(launch.get("time") or 0) - 1.0
        if hydra.get("started") and float(run_status.get("time") or hydra["started"]) < hydra["started"]:
            run_status = {}  # written by an earlier attempt: the job started again since
        if job:
            st.job_id = str(job["job_id"])
        stderr = job.get("stderr") if job else None
        log = stderr if stderr and Path(stderr).exists() else hydra.get("log") or stderr
        sched = states.get(st.job_id or "", None)
        at = f" (checkpoint at step {st.step})" if st.step is not None else ""
        if run_id in recorded:
            st.state, st.detail = "done", f"{recorded[run_id]} rows"
        elif sched is not None:
            state, reason = sched
            st.scheduler_state = state
            word = state.split()[0] if state else ""
            if is_alive(state):
                st.state = ALIVE[word]
                if "DependencyNeverSatisfied" in reason or "Dependency" in reason and "Never" in reason:
                    st.state = "failed"
                    seed = seed_jobs.get(str(job.get("seed_job_id")))
                    st.detail = f"its seed job {job.get('seed_job_id')} failed"
                    st.log = (seed or {}).get("stderr") or log
                elif word.startswith("REQUEUE") or word == "REQUEUED":
                    st.detail = f"requeued{at}"
                elif st.state == "pending":
                    st.detail = f"queued ({reason})" if reason and reason != "None" else "queued"
                    if reason == "Dependency" and job.get("seed_job_id"):
                        st.detail = f"waits for seed job {job['seed_job_id']}"
                else:
                    st.detail = f"step {st.step}" if st.step is not None else "started"
            elif word == "COMPLETED":
                st.state, st.detail, st.log = "failed", "job completed without writing records", log
            else:
                st.state, st.log = "failed", log
                st.detail = f"{state}{at}" + (f": {run_status.get('message')}" if run_status.get("message") else "")
        elif alive and not began:
            st.detail = f"not started yet: its launch (pid {launch['pid']}) runs the grid points in turn"
        elif run_status.get("status") == "failed":
            st.state, st.detail, st.log = "failed", run_status.get("message", "failed"), log
        elif run_status.get("status") == "preempted" and now - touched > 60:
            st.state, st.log = "failed", log
            st.detail = f"stopped by a signal{at}; re-launching resumes from the checkpoint"
        elif alive is not None and began:
            if alive and current.get(id(launch)) == run_id:
                st.state, st.detail = "running", (f"step {st.step}" if st.step is not None else "started")
            else:
                st.state, st.log = "failed", log
                st.detail = ("started, no records; its launch went on to the next grid point" if alive else
                             f"started, no records; its launch (pid {launch['pid']}) has ended") + at
        elif hydra or run_dir.exists():
            log_touched = max([touched] + [Path(p).stat().st_mtime for p in [hydra.get("log")] if p and Path(p).exists()])
            if now - log_touched < stale_s:
                st.state, st.detail = "running", (f"step {st.step}" if st.step is not None else "started")
            else:
                st.state, st.log = "failed", log
                st.detail = f"started, no records, nothing written for {now - log_touched:.0f}s{at}"
        elif known.get("not_submitted"):
            st.detail = "not submitted"
        elif alive is False:
            st.detail = f"not started: its launch (pid {launch['pid']}) ended first"
        elif launch:
            st.detail = "not started"
        out.append(st)
    order = {s: i for i, s in enumerate(("failed", "running", "pending", "done"))}
    return sorted(out, key=lambda s: (order[s.state], s.label))


def _started(known: dict, run_dir: Path) -> float:
    """When the grid point's job last started: its Hydra job dir's config (written at every start), else the
    last write to its run dir; 0 when it never did."""
    return (known.get("hydra") or {}).get("started") or _progress(run_dir)[1]


def _current_points(history: list[dict], points: dict[str, dict], sweep_dir: Path) -> dict[int, str]:
    """id(launch) -> run_id of the grid point a sequential launch started last (since the launch began)."""
    out, sweep = {}, SweepLayout(sweep_dir)
    for launch in history:
        if launch.get("launcher") != "sequential":
            continue
        since, latest = float(launch.get("time") or 0) - 1.0, None
        for p in launch.get("points", []):
            started = _started(points.get(p["run_id"], {}), sweep.run(p["run_id"]))
            if started >= since and (latest is None or started > latest[0]):
                latest = (started, p["run_id"])
        if latest:
            out[id(launch)] = latest[1]
    return out


def format_table(statuses: list[PointStatus], sweep_dir: Path, scheduler: bool = True) -> str:
    counts = {s: sum(p.state == s for p in statuses) for s in STATES}
    lines = [f"{'STATE':8} {'RUN_ID':16} {'JOB':10} GRID POINT / DETAIL"]
    for p in statuses:
        lines.append(f"{p.state:8} {p.run_id:16} {(p.job_id or '-'):10} {p.label}")
        detail = p.detail + (f"; log: {p.log}" if p.log and p.state == "failed" else "")
        if detail:
            lines.append(f"{'':37} {detail}")
    lines.append(f"{len(statuses)} grid points: " + ", ".join(f"{counts[s]} {s}" for s in STATES))
    history = launches(sweep_dir)
    if counts["failed"]:
        argv = history[-1].get("argv") if history else None
        again = f"`python -m splitsweep {' '.join(argv[1:])}`" if argv else "the sweep's command"
        lines.append(f"re-run {again} to re-launch only the grid points without records")
    elif statuses and counts["done"] == len(statuses):
        lines.append("all grid points are recorded")
    store = history[-1].get("store") if history else None
    if store and not Path(store).exists():  # said, not rebuilt: a read-only query never prepares data
        lines.append(f"store {store}: missing (its seeds and prepared data are gone; re-running the sweep's "
                     "command rebuilds what a grid point without records needs)")
    report = history[-1].get("report_job") if history else None
    if report:  # a launch that did not wait queued the report after its jobs
        state = report_state(sweep_dir, report, scheduler)
        lines.append(f"report: job {report['job_id']} {state}; when it ends: {SweepLayout(sweep_dir).report_file}")
    elif report_line(sweep_dir):
        lines.append(report_line(sweep_dir))
    return "\n".join(lines)


def report_line(sweep_dir: Path) -> str | None:
    """Whether the sweep's report step (steps.ReportStep, report/step.json) was built from the records as they
    are now; None when no report was built."""
    sweep = SweepLayout(sweep_dir)
    try:
        mark = json.loads(sweep.report_step.read_text())
    except (OSError, ValueError):
        return f"report: {sweep.report_file} (built on demand)" if sweep.report_file.exists() else None
    inputs = mark.get("inputs") or {}
    fresh = (inputs.get("results"), inputs.get("downstream")) == (file_digest(sweep.results),
                                                                  file_digest(sweep.downstream))
    where = sweep.report_file if mark.get("built") else sweep.no_report
    return f"report: {where} (" + ("built from the records as they are)" if fresh else
                                   "older than the records: re-running the sweep's command rebuilds it)")


def report_state(sweep_dir: Path, report: dict, scheduler: bool = True) -> str:
    """The report job's scheduler state (pending, running, completed, ...), or whether its report exists."""
    if scheduler:
        state = scheduler_states([report["job_id"]]).get(str(report["job_id"]), ("", ""))[0]
        if state:
            return state.split()[0].lower()
    return "done" if SweepLayout(sweep_dir).report_file.exists() else "not seen by the scheduler"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m splitsweep.status", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory (paths.sweep_dir, e.g. outputs/sweeps/NAME)")
    parser.add_argument("--json", action="store_true", help="one JSON object per grid point")
    parser.add_argument("--no-scheduler", action="store_true", help="do not call squeue/sacct")
    parser.add_argument("--stale-s", type=float, default=STALE_S,
                        help="without a scheduler, a grid point whose files are untouched this long is not running")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"splitsweep.status: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    statuses = collect(args.sweep_dir, scheduler=not args.no_scheduler, stale_s=args.stale_s)
    if args.json:
        for p in statuses:
            print(json.dumps(asdict(p)))
    else:
        print(format_table(statuses, args.sweep_dir, scheduler=not args.no_scheduler))
    return 0


def console_main() -> None:
    """The `splitsweep-status` command."""
    raise SystemExit(main())


if __name__ == "__main__":
    sys.exit(main())
