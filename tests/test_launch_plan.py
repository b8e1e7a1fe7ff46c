"""The seeds-first launch plan, decided without a scheduler (splitsweep/launch_plan.py), and the SLURM launcher
carrying it out against a fake submitit executor: dependencies, deduplication, order."""
from __future__ import annotations

from dataclasses import dataclass, field

from splitsweep.launch_plan import launch_plan
from splitsweep.slurm import Point, SlurmLauncher, plan_point, point_done


def point(idx, trajectory, tokens, ready=False):
    return Point(idx, [f"p={idx}"], f"p{idx}", f"run{idx}", trajectory, tokens, ready, done=False)


def grid():
    return [point(0, "A", 4), point(1, "A", 2), point(2, "A", 4), point(3, "B", 8), point(4, "A", 8, ready=True),
            point(5, "C", 0, ready=True)]


class FakeBackend:
    """Runs a plan the way a scheduler would: a submission starts only after what it waits for has run."""

    def __init__(self):
        self.ran, self.trained = [], {}

    def run(self, plan, points):
        by_idx = {p.idx: p for p in points}
        for sub in plan:
            assert all(k in self.ran for k in sub.after), f"{sub.key} submitted before {sub.after}"
            self.ran.append(sub.key)
            if sub.kind == "seed":
                for d in sub.tokens:
                    assert d > self.trained.get(sub.trajectory_id, 0), "a seed trained twice or out of order"
                    self.trained[sub.trajectory_id] = d
            else:
                for i in sub.points:  # an expert runs only when its seed exists
                    p = by_idx[i]
                    assert p.seed_ready or self.trained.get(p.trajectory_id, 0) >= p.seed_tokens, sub.key


def test_chained_one_seed_job_per_missing_d_shortest_first_experts_after_their_own_seed():
    plan = launch_plan(grid(), chained=True)
    seeds = [s for s in plan if s.kind == "seed"]
    assert [(s.trajectory_id, s.tokens) for s in seeds] == [("A", (2,)), ("A", (4,)), ("B", (8,))]
    assert seeds[1].after == (seeds[0].key,) and seeds[0].after == () and seeds[2].after == ()
    experts = {s.key: s for s in plan if s.kind == "experts"}
    assert experts["experts:seed:A:4"].points == (0, 2) and experts["experts:seed:A:4"].after == ("seed:A:4",)
    assert experts["experts:seed:A:2"].points == (1,)
    assert experts["experts:"].points == (4, 5) and experts["experts:"].after == ()  # seeds already stored
    assert sorted(i for s in experts.values() for i in s.points) == [0, 1, 2, 3, 4, 5]  # every point once
    FakeBackend().run(plan, grid())


def test_grouped_one_seed_job_per_trajectory_then_every_expert():
    plan = launch_plan(grid(), chained=False)
    seeds = [s for s in plan if s.kind == "seed"]
    assert [(s.trajectory_id, s.tokens, s.points) for s in seeds] == [("A", (2, 4), (1, 0)), ("B", (8,), (3,))]
    (experts,) = [s for s in plan if s.kind == "experts"]
    assert experts.points == (0, 1, 2, 3, 4, 5) and set(experts.after) == {s.key for s in seeds}
    FakeBackend().run(plan, grid())


def test_nothing_to_do_and_only_stored_seeds():
    assert launch_plan([], chained=True) == [] and launch_plan([], chained=False) == []
    plan = launch_plan([point(0, "A", 4, ready=True)], chained=True)
    assert [(s.kind, s.after) for s in plan] == [("experts", ())]


@dataclass
class FakeJob:
    job_id: str
    paths: object = None


@dataclass
class FakeExecutor:
    """submitit's executor interface as the launcher uses it: parameters, submit, map_array."""
    calls: list = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def update_parameters(self, **kw):
        self.params.update(kw)

    def submit(self, task):
        job = FakeJob(str(100 + len(self.calls)))
        self.calls.append(("submit", job.job_id, dict(self.params), [o for o in task.overrides]))
        return job

    def map_array(self, fn, *columns):
        jobs = [FakeJob(f"{200 + len(self.calls)}_{i}") for i in range(len(columns[0]))]
        self.calls.append(("array", [j.job_id for j in jobs], dict(self.params), list(columns[2])))
        return jobs


def test_the_slurm_launcher_submits_the_plan_with_its_dependencies():
    launcher = object.__new__(SlurmLauncher)  # no Hydra context needed to submit
    launcher.params = {"name": "sweep"}
    executor, points = FakeExecutor(), grid()
    seed_jobs, records = launcher._submit(executor, points, state={}, submitted=[])
    kinds = [c[0] for c in executor.calls]
    assert kinds == ["submit", "submit", "submit", "array", "array", "array", "array"]
    seed_a2, seed_a4, seed_b8 = (c[1] for c in executor.calls[:3])
    assert "dependency" not in executor.calls[0][2]["slurm_additional_parameters"]
    assert executor.calls[1][2]["slurm_additional_parameters"]["dependency"] == f"afterok:{seed_a2}"
    dependency = {tuple(c[3]): c[2]["slurm_additional_parameters"].get("dependency") for c in executor.calls[3:]}
    assert dependency == {(0, 2): f"afterok:{seed_a4}", (1,): f"afterok:{seed_a2}", (3,): f"afterok:{seed_b8}",
                          (4, 5): None}
    assert {k: j.job_id for k, j in seed_jobs.items()} == {("A", 2): seed_a2, ("A", 4): seed_a4, ("B", 8): seed_b8}
    assert [(r["trajectory_id"], r["tokens"]) for r in records] == [("A", 2), ("A", 4), ("B", 8)]
    assert all(p.job is not None for p in points)
    assert points[0].seed_job.job_id == seed_a4 and points[4].seed_job is None


def test_the_local_submitit_launcher_trains_each_seed_once_then_the_experts(tmp_path):
    """The same plan carried out by submitit's local executor (real subprocesses): 2 trajectories' Ds, one seed
    job per trajectory, every point recorded once, and a re-run submits nothing."""
    from splitsweep.records import read_rows
    from tests.helpers import TINY, TOKENS_PER_STEP as T, run_cli

    grid = ["-m", "hydra/launcher=local", *TINY, "model=llama_27k,llama_38k", f"split.budget_tokens={8 * T}",
            "split.pretrain_fraction=0.25,0.5", "split.expert_domain=d0", "report.enabled=false",
            "logger.mode=disabled"]
    first = run_cli(tmp_path, *grid, env={"OMP_NUM_THREADS": "1"})
    assert first.stdout.count("submitted first") == 2, first.stdout  # one seed job per trajectory
    rows = read_rows(tmp_path / "sweeps" / "test")
    assert len({r["run_id"] for r in rows}) == 4
    segments = sorted((tmp_path / "store" / "seeds").glob("*/segments.jsonl"))
    assert len(segments) == 2 and all(len(s.read_text().splitlines()) == 2 for s in segments)  # 0..2, 2..4
    again = run_cli(tmp_path, *grid, env={"OMP_NUM_THREADS": "1"})
    assert "4 already recorded" in again.stdout and "submitted first" not in again.stdout
    assert read_rows(tmp_path / "sweeps" / "test") == rows


def test_a_live_seed_job_of_an_earlier_launch_is_that_seed_not_a_second_job():
    # (A, 2) is still queued as job 77: its submission is that job (nothing to submit, no edge of its own), and
    # the experts of A at D=2 and the seed of A at D=4 wait for it.
    plan = launch_plan(grid(), chained=True, queued={("A", 2): "77"})
    subs = {s.key: s for s in plan}
    assert subs["seed:A:2"].queued_as == "77" and subs["seed:A:2"].after == ()
    assert subs["seed:A:4"].queued_as == "" and subs["seed:A:4"].after == ("seed:A:2",)
    assert subs["experts:seed:A:2"].after == ("seed:A:2",) and subs["seed:B:8"].queued_as == ""
    FakeBackend().run(plan, grid())


def test_the_slurm_launcher_reuses_a_held_seed_job_as_the_dependency(tmp_path, monkeypatch):
    """A re-run while the earlier launch's seed job is held (REQUEUE_HOLD) and its experts were cancelled: the
    experts are submitted after that job and no second seed job is submitted for it. A seed job whose dependency
    can never be met, or that ended, is submitted again; a local launch's seed jobs are never attached."""
    import json

    from splitsweep import status as st

    folder = str(tmp_path / ".submitit" / "%j")
    seeds = [{"trajectory_id": "A", "tokens": 2, "job_id": "77"}, {"trajectory_id": "A", "tokens": 4, "job_id": "78"},
             {"trajectory_id": "B", "tokens": 8, "job_id": "79"}]
    history = [{"launcher": "slurm", "submitit_folder": folder, "seeds": [dict(seeds[0], job_id="70")], "points": []},
               {"launcher": "slurm", "submitit_folder": folder, "seeds": seeds, "points": []},
               {"launcher": "local", "submitit_folder": folder, "points": [],
                "seeds": [{"trajectory_id": "B", "tokens": [8], "job_id": "80"}]}]
    (tmp_path / "launches.jsonl").write_text("".join(json.dumps(launch) + "\n" for launch in history))
    monkeypatch.setattr(st, "scheduler_states", lambda ids: {
        "70": ("COMPLETED", "None"), "77": ("REQUEUE_HOLD", "JobHeldUser"),
        "78": ("PENDING", "DependencyNeverSatisfied"), "79": ("CANCELLED by 0", "None"), "80": ("RUNNING", "None")})
    launcher = object.__new__(SlurmLauncher)
    launcher.params = {"name": "sweep"}
    points = grid()
    queued = launcher.backend.attach(tmp_path, points)
    assert {k: j.job_id for k, j in queued.items()} == {("A", 2): "77"}
    assert str(queued[("A", 2)].paths.folder) == str(tmp_path / ".submitit" / "77")
    executor = FakeExecutor()
    seed_jobs, records = launcher._submit(executor, points, state={}, submitted=[], queued_seeds=queued)
    submitted = [c for c in executor.calls if c[0] == "submit"]
    assert [c[3] for c in submitted] == [[["p=0"]], [["p=3"]]]  # A at D=4 and B at D=8; A at D=2 is job 77
    assert submitted[0][2]["slurm_additional_parameters"]["dependency"] == "afterok:77"
    dependency = {tuple(c[3]): c[2]["slurm_additional_parameters"].get("dependency")
                  for c in executor.calls if c[0] == "array"}
    assert dependency[(1,)] == "afterok:77" and dependency[(0, 2)] == f"afterok:{submitted[0][1]}"
    assert points[1].seed_job.job_id == "77" and seed_jobs[("A", 2)].job_id == "77"
    assert [(r["trajectory_id"], r["tokens"]) for r in records] == [("A", 4), ("B", 8)]  # 77 is in its own launch


def test_a_recorded_point_is_done_only_once_its_downstream_evaluation_is_recorded(tmp_path):
    """Adding eval tasks to a recorded sweep, or changing eval.num_fewshot, leaves something to run under every
    launcher: a point is done when its result rows are recorded and, with eval enabled, its downstream rows under
    this evaluation's eval_id (the one the Job writes, DownstreamEval.eval_id)."""
    from splitsweep.downstream import DownstreamEval, append_downstream
    from splitsweep.records import append_rows
    from tests.helpers import compose_cfg

    sweep, plain, evaluated = tmp_path / "sweep", compose_cfg(tmp_path), compose_cfg(tmp_path, "eval=phonebook_mc")
    assert not point_done(sweep, "r1", plain) and not point_done(sweep, "r1", evaluated)
    append_rows(sweep, [{"run_id": "r1", "eval_domain": "d0", "eval_loss": 1.0}])
    assert point_done(sweep, "r1", plain) and not point_done(sweep, "r1", evaluated)
    written = DownstreamEval(evaluated.eval, list(evaluated.eval.tasks), [], False, None, 32).eval_id("r1")
    append_downstream(sweep, [{"run_id": "r1", "eval_id": written, "task": "phonebook_mc", "value": 1.0}])
    assert point_done(sweep, "r1", evaluated) and point_done(sweep, "r1", plain)
    for changed in ("eval.num_fewshot=1", "eval.tasks=[phonebook_mc,phonebook_mc_d0]", "eval.limit=4"):
        assert not point_done(sweep, "r1", compose_cfg(tmp_path, "eval=phonebook_mc", changed)), changed
    append_downstream(tmp_path / "other", [{"run_id": "r2", "eval_id": written, "task": "phonebook_mc"}])
    assert not point_done(tmp_path / "other", "r2", evaluated)  # downstream rows without results: not done


def test_plan_point_submits_a_recorded_point_with_a_new_evaluation_and_needs_no_seed_for_it(tmp_path):
    """plan_point, as every launcher calls it: a recorded point with eval turned on is not done, and its seed is
    not needed (a seed job for it would train for nothing: its job evaluates runs/<run_id>/final)."""
    import importlib
    from types import SimpleNamespace

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from splitsweep.records import append_rows
    from tests.helpers import REPO, TINY, TOKENS_PER_STEP as T

    grid_point = [f"paths.root={tmp_path}", *TINY, f"split.pretrain_tokens={4 * T}", f"split.special_tokens={2 * T}",
                  "split.expert_domain=d0"]
    importlib.import_module("splitsweep.app")  # registers ${ss_dirname:...} (the job dirs), as in a launch
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", overrides=grid_point, run_mode=RunMode.MULTIRUN)
        context = SimpleNamespace(config_loader=loader)
        fresh = plan_point(context, master, 0, [*grid_point, "eval=phonebook_mc"])
        assert not fresh.done and not fresh.seed_ready  # nothing recorded, no seed in the store
        append_rows(fresh.sweep_dir, [{"run_id": fresh.run_id, "eval_domain": "d0", "eval_loss": 1.0}])
        assert plan_point(context, master, 0, grid_point).done  # eval=none: recorded is done
        again = plan_point(context, master, 0, [*grid_point, "eval=phonebook_mc"])
    assert again.run_id == fresh.run_id and not again.done
    assert again.seed_ready  # its job evaluates the final checkpoint: no seed job is submitted for it
    assert not (tmp_path / "store").exists()  # planning prepared nothing


def test_a_launch_is_appended_as_one_line_after_a_torn_one(tmp_path):
    """write_launch appends its line (no rewrite of the manifest); a line torn by a killed launcher stays apart."""
    from splitsweep.slurm import write_launch
    from splitsweep.status import launches

    write_launch(tmp_path, "local", grid()[:2])
    manifest = tmp_path / "launches.jsonl"
    inode = manifest.stat().st_ino
    with open(manifest, "a") as f:
        f.write('{"launcher": "slurm", "poi')  # a launcher killed mid-write
    write_launch(tmp_path, "slurm", grid()[2:])
    assert manifest.stat().st_ino == inode  # appended in place, not replaced
    assert [(x["launcher"], len(x["points"])) for x in launches(tmp_path)] == [("local", 2), ("slurm", 4)]
    assert manifest.read_text().splitlines()[1] == '{"launcher": "slurm", "poi'
