"""Where a grid point becomes steps: the units of work, each a frozen object named by its identity.

  PreparedData    a real-text data set read, labeled, tokenized, split   <data.cache_dir>/<identity>
  Trajectory      the seed models' training path: model, data, batch, optimizer, schedule, RNG seed
  SeedStep        a checkpoint of a trajectory at D tokens          store/seeds/<trajectory>/tokens_<D>
  ExpertStep      a grid point's run: from the seed at D, D' tokens on a domain, evaluated and recorded
                                                                    sweeps/<name>/runs/<run_id>, rows in results.jsonl
  DownstreamStep  lm-eval tasks on an expert's final model          rows in downstream.jsonl, keyed by eval_id
  ReportStep      the splitting report of a sweep's records         sweeps/<name>/report/

The fields that determine a step's output are declared `defining` next to them; `identity.identity` hashes
those (and a dependency as its own identity), and the output's path follows from it (layout.py). `done()` reads
the step's output, never its config: a finished step is not run again. plan.make_plan builds a grid point's
steps from its config (all checks before any compute). `run()` does the work: a step that trains runs from the
job config that planned it (`run(cfg)`: it refuses a config that plans another step), in the module that owns
that work (data/prepare.py, seed_store.py, job.py, report_step.py); this module imports none of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .identity import defining, identity
from .layout import DOWNSTREAM_FILE, MANIFEST, DataLayout, StoreLayout, SweepLayout


class _Step:
    is_step: ClassVar[bool] = True  # a field holding a step enters an identity as the step's identity

    @property
    def identity(self) -> str:
        return identity(self)


class StepMismatch(ValueError):
    """`step.run(cfg)` with a config that plans another step: running it would write another step's output."""


def check_planned(step: _Step, planned: _Step | None) -> None:
    if planned != step:
        got = planned.identity if planned is not None else "nothing of this kind"
        raise StepMismatch(f"this config plans {type(step).__name__} {got}, not {step.identity}: run a step "
                           f"with the config that planned it")


@dataclass(frozen=True)
class PreparedData(_Step):
    """A real-text data set prepared once (data/prepare.py): its documents read, labeled with their domain,
    tokenized and split into training and held-out text by document. Its packed sequences
    (`packed-L<seq_len>/`) are built inside it, once per sequence length."""
    version: int = defining(key="v", doc="prepare.PREP_VERSION")
    source: dict = defining(doc="what is read: a hub id or local files (with their sizes and times)")
    labels: dict = defining(doc="how a document's domain is decided: a column, or a clustering")
    domains: list | None = defining(doc="the domains kept, in order")
    tokenizer: dict = defining(doc="the tokenizer file's digest, or the recipe it was trained by")
    heldout_tokens: int = defining()
    data_seed: int = defining(doc="the RNG seed of the document order and the held-out split")
    heldout_overlap: dict | None = defining(
        omitted_at=None, default=None,
        doc="held-out decontamination: {max: share, ngram: n}; only documents with at most that share of their "
            "n-token spans found in another document are held out (None: any document)")

    def output(self, cache_dir: str | Path) -> Path:
        return DataLayout(cache_dir).prepared(self.identity)

    def done(self, cache_dir: str | Path) -> bool:
        return (self.output(cache_dir) / MANIFEST).exists()

    def run(self, data_cfg) -> Path:
        """Prepare it from the data config (`cfg.data`) that describes it; returns its directory."""
        from .data.prepare import prepare

        return prepare(data_cfg, expect=self)


@dataclass(frozen=True)
class TrajectorySchedule:
    """The learning-rate schedule as far as the seed trajectory depends on it."""
    name: str = defining()
    peak_lr: float = defining()
    warmup_steps: int = defining()
    # Only for a schedule whose seed depends on its length (cosine): then every D is its own trajectory.
    min_lr_factor: float | None = defining(omitted_at=None, default=None)
    seed_steps: int | None = defining(omitted_at=None, default=None)


@dataclass(frozen=True)
class Trajectory(_Step):
    """One seed trajectory: every checkpoint of it at any D is the same model at a different length."""
    version: int = defining(doc="STORE_VERSION: bumped when training semantics change")
    model: dict = defining(doc="the ModelSpec's fields")
    vocab_size: int = defining()
    data: dict = defining(doc="the token source's identity (the data set, its tokenizer, its split)")
    seq_len: int = defining()
    global_batch: int = defining()
    optimizer: dict = defining()
    grad_clip: float = defining()
    seed: int = defining(doc="the RNG seed of initialization and data order (not the seed model)")
    schedule: TrajectorySchedule = defining()
    mixture_counts: list = defining(doc="training sequences per domain: the mixture's weights")
    precision: str = defining(omitted_at="fp32", default="fp32")

    def output(self, store: str | Path) -> Path:
        return StoreLayout(store).trajectory(self.identity)


@dataclass(frozen=True)
class SeedStep(_Step):
    """The seed checkpoint of `trajectory` after `steps` optimizer steps (D = steps x tokens per step)."""
    trajectory: Trajectory = defining()
    steps: int = defining()

    @property
    def tokens(self) -> int:
        return self.steps * self.trajectory.seq_len * self.trajectory.global_batch

    def output(self, store: str | Path) -> Path:
        return StoreLayout(store).seed(self.trajectory.identity, self.tokens)

    def done(self, store: str | Path) -> bool:
        from . import checkpoint as ckpt  # torch: only when a checkpoint is inspected

        path = self.output(store)
        return ckpt.is_complete(path) and ckpt.is_good(path)

    def run(self, cfg, env=None) -> Path:
        """Train this seed, or extend its trajectory from the checkpoint below it (seed_store.py), from the job
        config of a grid point that needs it; returns the checkpoint."""
        from .seed_store import run_seed

        return run_seed(self, cfg, env)


@dataclass(frozen=True)
class ExpertStep(_Step):
    """A grid point's run: the trajectory to `seed_steps`, then `expert_steps` on `expert_domain` (the mixture
    for the baseline; an annealed pretraining-only run decays on the mixture for its last
    `pretrain_only_cooldown_steps` of D)."""
    trajectory: Trajectory = defining()
    seed_steps: int = defining()
    expert_steps: int = defining()
    expert_domain: str = defining()
    min_lr_factor: float = defining()
    decay_fraction: float = defining()
    version: int = defining()
    pretrain_only_cooldown_steps: int = defining(omitted_at=0, default=0)

    @property
    def seed(self) -> SeedStep | None:
        """The step this one continues from (None from scratch: D = 0)."""
        return SeedStep(self.trajectory, self.seed_steps) if self.seed_steps else None

    def output(self, sweep_dir: str | Path) -> Path:
        return SweepLayout(sweep_dir).run(self.identity)

    def done(self, sweep_dir: str | Path) -> bool:
        from .records import is_recorded

        return is_recorded(sweep_dir, self.identity)

    def run(self, cfg, env=None) -> list[dict]:
        """Its seed first, then train, evaluate and record this run (job.py), with its downstream evaluation;
        returns its rows (those recorded before, if it is done)."""
        from .job import run_expert

        return run_expert(self, cfg, env)


@dataclass(frozen=True)
class DownstreamStep(_Step):
    """lm-eval's tasks on one run's final model: what decides its numbers (so new tasks, another few-shot or
    another lm-eval version on a recorded sweep are a new step, and an unchanged one is not run again)."""
    run_id: str = defining(doc="the ExpertStep evaluated")
    tasks: tuple = defining(doc="sorted task names")
    num_fewshot: int | None = defining()
    limit: float | None = defining()
    seed: int = defining()
    bootstrap_iters: int = defining()
    local_datasets: object = defining()
    lm_eval: str = defining(doc="lm-eval's version")

    def done(self, sweep_dir: str | Path) -> bool:
        from .records import is_recorded

        return is_recorded(sweep_dir, self.identity, DOWNSTREAM_FILE, key="eval_id")

    def run(self, cfg, env=None) -> list[dict]:
        """Evaluate the recorded run's final model (job.py) and record the rows; returns them ([] if done)."""
        from .job import run_downstream

        return run_downstream(self, cfg, env)


@dataclass(frozen=True)
class ReportStep(_Step):
    """The splitting report of a sweep: the records it reads and how it is built. Re-running a finished sweep
    does not rebuild it; a new row, another setting or another version of `analysis/` is a new report."""
    results: str | None = defining(doc="digest of the results table (None: there is none yet)")
    downstream: str | None = defining(doc="digest of the downstream table (None: there is none)")
    budget_tokens: float | None = defining(doc="the budget asked about (None: the largest measured)")
    n_bootstrap: int = defining()
    analysis: str = defining(doc="digest of the analysis package's code")

    @classmethod
    def of(cls, sweep_dir: str | Path, budget_tokens: float | None, n_bootstrap: int) -> "ReportStep":
        """The report step of the sweep's records as they are now."""
        sweep = SweepLayout(sweep_dir)
        return cls(file_digest(sweep.results), file_digest(sweep.downstream),
                   None if budget_tokens is None else float(budget_tokens), int(n_bootstrap), analysis_digest())

    def output(self, sweep_dir: str | Path) -> Path:
        return SweepLayout(sweep_dir).report

    def done(self, sweep_dir: str | Path) -> bool:
        """Built from these inputs, and what it wrote is still what is there (a report built on demand with
        other settings since is not this one)."""
        import json

        sweep = SweepLayout(sweep_dir)
        try:
            status = json.loads(sweep.report_step.read_text())
        except (OSError, ValueError):
            return False
        written = sweep.report_file if status.get("built") else sweep.no_report
        return (status.get("identity") == self.identity and written.exists()
                and status.get("written") == file_digest(written))

    def run(self, sweep_dir: str | Path, progress: bool = True) -> str:
        """Build it (analysis.report), unless it is done; returns the report's path, or why there is none."""
        from .report_step import run_report

        return run_report(self, sweep_dir, progress)


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str | None:
    """sha256 of a file's bytes (16 hex digits); None if there is no such file."""
    import hashlib

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
    except FileNotFoundError:
        return None
    return h.hexdigest()[:16]


def analysis_digest() -> str:
    """A digest of the analysis package's source: the code that fits the laws and writes the report."""
    import hashlib

    import analysis

    h = hashlib.sha256()
    for path in sorted(Path(analysis.__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
