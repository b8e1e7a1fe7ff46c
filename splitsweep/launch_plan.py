"""What a seeds-first launch submits, decided without a scheduler: grid points -> submissions -> edges.

A grid point needs its seed (trajectory, D) before its expert runs. Seeds are deduplicated by (trajectory, D)
and trained shortest first, since a longer D extends the trajectory from the shorter one's checkpoint:
  chained (SLURM): one seed job per missing D, each waiting for the previous one of its trajectory;
  grouped (local): one seed job per trajectory, training its Ds in order.
Experts: chained, one array per seed submission they wait for (points whose seed is stored wait for nothing);
grouped, one array after every seed job (a local executor has no dependencies: the launcher waits for the seeds).
The launcher (`slurm.py`) carries the submissions out; `tests/test_launch_plan.py` checks the decisions with a
fake backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Submission:
    key: str                      # unique in the plan; `after` names these
    kind: str                     # "seed" or "experts"
    points: tuple[int, ...]       # grid point indices: the points whose D a seed job trains, or the experts
    after: tuple[str, ...] = ()   # keys of the submissions that must succeed first
    trajectory_id: str = ""       # seeds: the trajectory; experts: the trajectory of the seed they wait for
    tokens: tuple[int, ...] = ()  # seeds: the D trained, in order
    name: str = ""                # the scheduler's job name


class PointLike(Protocol):
    idx: int
    trajectory_id: str
    seed_tokens: int
    seed_ready: bool


def launch_plan(todo: Sequence[PointLike], chained: bool, expert_name: str = "splitsweep") -> list[Submission]:
    """The submissions of the grid points in `todo` (points neither recorded nor still queued), in the order
    to submit them: every submission comes after those it waits for."""
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
                key = f"seed:{trajectory}:{d}"
                plan.append(Submission(key, "seed", (by_tokens[d],), previous, trajectory, (d,),
                                       f"seed-{trajectory[:8]}-D{d}"))
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
