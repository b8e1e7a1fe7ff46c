"""What a seeds-first launch submits, decided without a scheduler: grid points -> submissions -> edges.

A grid point needs its seed (trajectory, D) before its expert runs. Seeds are deduplicated by (trajectory, D)
and trained shortest first, since a longer D extends the trajectory from the shorter one's checkpoint:
  chained (SLURM): one seed job per missing D, each waiting for the previous one of its trajectory;
  grouped (local): one seed job per trajectory, training its Ds in order.
Experts: chained, one array per seed submission they wait for (points whose seed is stored wait for nothing);
grouped, one array after every seed job (a local executor has no dependencies: the launcher waits for the seeds).
A seed whose job an earlier launch left live in the queue (chained only) is that job: nothing is submitted for it,
and its experts and the next D of its trajectory wait for it.
The launcher (`slurm.py`) carries the submissions out; `tests/test_launch_plan.py` checks the decisions with a
fake backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from .status import is_alive


@dataclass(frozen=True)
class Submission:
    key: str                      # unique in the plan; `after` names these
    kind: str                     # "seed" or "experts"
    points: tuple[int, ...]       # grid point indices: the points whose D a seed job trains, or the experts
    after: tuple[str, ...] = ()   # keys of the submissions that must succeed first
    trajectory_id: str = ""       # seeds: the trajectory; experts: the trajectory of the seed they wait for
    tokens: tuple[int, ...] = ()  # seeds: the D trained, in order
    name: str = ""                # the scheduler's job name
    queued_as: str = ""           # seeds: the job of an earlier launch that is this submission (nothing to submit)


class PointLike(Protocol):
    idx: int
    run_id: str
    trajectory_id: str
    seed_tokens: int
    seed_ready: bool
    done: bool
    attached: bool


def launch_plan(todo: Sequence[PointLike], chained: bool, expert_name: str = "splitsweep",
                queued: Mapping[tuple[str, int], str] | None = None) -> list[Submission]:
    """The submissions of the grid points in `todo` (points neither recorded nor still queued), in the order
    to submit them: every submission comes after those it waits for. `queued` (chained only): (trajectory, D) ->
    the id of a live seed job of an earlier launch, which becomes that seed's submission (`queued_as`)."""
    queued = queued or {}
    chains: dict[str, dict[int, int]] = {}  # trajectory -> D -> the first point needing it
    for p in todo:
        if not p.seed_ready:
            chains.setdefault(p.trajectory_id, {}).setdefault(p.seed_tokens, p.idx)
    plan: list[Submission] = []
    seed_of: dict[tuple[str, int], str] = {}
    for trajectory, by_tokens in chains.items():
        tokens = sorted(by_tokens)
        if chained:
            previous: tuple[str, ...] = ()
            for d in tokens:
                key, job_id = f"seed:{trajectory}:{d}", queued.get((trajectory, d), "")
                plan.append(Submission(key, "seed", (by_tokens[d],), () if job_id else previous, trajectory, (d,),
                                       f"seed-{trajectory[:8]}-D{d}", queued_as=job_id))
                seed_of[(trajectory, d)] = key
                previous = (key,)
        else:
            key = f"seed:{trajectory}"
            plan.append(Submission(key, "seed", tuple(by_tokens[d] for d in tokens), (), trajectory, tuple(tokens),
                                   f"seed-{trajectory[:8]}"))
            for d in tokens:
                seed_of[(trajectory, d)] = key
    if not chained:
        if todo:
            plan.append(Submission("experts", "experts", tuple(p.idx for p in todo), tuple(s.key for s in plan),
                                   name=expert_name))
        return plan
    groups: dict[str, list[int]] = {}
    for p in todo:
        groups.setdefault(seed_of.get((p.trajectory_id, p.seed_tokens), ""), []).append(p.idx)
    trajectory_of = {s.key: s.trajectory_id for s in plan}
    for seed_key, points in groups.items():
        plan.append(Submission(f"experts:{seed_key}", "experts", tuple(points), (seed_key,) if seed_key else (),
                               trajectory_of.get(seed_key, ""), name=expert_name))
    return plan


def still_queued(points: Sequence[PointLike], latest: dict[str, dict], states: dict[str, tuple]) -> list[tuple]:
    """(point, its earlier launch entry, scheduler state) of the points whose earlier job SLURM still holds in a
    live state (status.ALIVE: pending, requeued, held, running...): those are waited for, never submitted again."""
    out = []
    for p in points:
        entry = latest.get(p.run_id)
        state = states.get(entry["job_id"], ("", ""))[0] if entry else ""
        if not p.done and is_alive(state):
            out.append((p, entry, state))
    return out


def live_seeds(points: Sequence[PointLike], latest: dict[tuple[str, int], dict],
               states: dict[str, tuple]) -> dict[tuple[str, int], tuple[dict, str]]:
    """(trajectory, D) -> (its seed job's entry from an earlier launch, scheduler state) for the seeds that points
    still to submit need and whose job SLURM still holds in a live state (status.ALIVE) with a dependency that can
    still be met: the experts wait for that job, no second seed job is submitted."""
    out = {}
    for p in points:
        key = (p.trajectory_id, p.seed_tokens)
        entry = latest.get(key)
        if p.done or p.attached or p.seed_ready or entry is None or key in out:
            continue
        state, reason = states.get(str(entry["job_id"]), ("", ""))
        if is_alive(state) and "DependencyNeverSatisfied" not in reason:
            out[key] = (entry, state)
    return out
