"""Where a store and a sweep keep their files: the one module that decides those paths.

A store (`paths.store`) is shared by every sweep that names it:
  seeds/<trajectory_id>/                   one seed trajectory: its lock, trajectory.json, segments.jsonl, progress/
  seeds/<trajectory_id>/tokens_<D:015d>/   its checkpoint at D tokens
  eval_tasks/<name>/                       lm-eval task directories generated for a data set (downstream.py)
  data/                                    prepared data, by default: `data.cache_dir` (conf/data/hf.yaml), below
The data cache (`data.cache_dir`, DataLayout) of real-text data sets (data/prepare.py, data/prepare_array.py):
  tokenizers/<hash>/, clusters/<hash>/     a trained BPE, a fitted clustering (named by their recipes)
  hf_datasets/                             `datasets`' own Arrow cache of what was read
  <key>/                                   a prepared data set (steps.PreparedData): manifest.json, tokenizer.json,
                                           <domain>/{train,heldout}.bin
  <key>/packed-L<seq_len>/                 its sequences of one length: manifest.json, <domain>/{train,heldout}.npy
  .array-<key>/parts/, .prepare-logs/      a job array's parts until assembled, and every preparation job's logs
A sweep (`paths.sweep_dir`) holds one experiment:
  sweep.json                               the settings its grid points share (sweep_identity.py)
  results.jsonl, downstream.jsonl          the records (records.py, downstream.py)
  launches.jsonl                           every launch's grid points and jobs (slurm.write_launch; status.py reads it)
  runs/<run_id>/                           one grid point's state: run.json, status.json, progress/, final/
  jobs/<overrides>/                        Hydra's job directories (`hydra.sweep.subdir` in conf/config.yaml)
  report/                                  the splitting report (analysis.report.build_report)
  wandb/                                   the W&B runs (wandb.init(dir=<sweep>) writes there)

Every name here is part of the on-disk format: existing stores and sweeps are found by these exact strings.
Nothing is created or read here; this module imports nothing from splitsweep (status.py stays light).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SEED_PREFIX = "tokens_"  # seeds/<trajectory>/tokens_<D:015d>
RESULTS_FILE = "results.jsonl"
DOWNSTREAM_FILE = "downstream.jsonl"
LAUNCHES_FILE = "launches.jsonl"
SWEEP_FILE = "sweep.json"
REPORT_DIR = "report"
NO_REPORT = "no_report.txt"  # in report/: why a report job wrote no report
REPORT_STEP = "step.json"  # in report/: the identity of the report there (steps.ReportStep)
MANIFEST = "manifest.json"  # a prepared data set's, and its packed sequences' (written last: there when whole)


@dataclass(frozen=True)
class _Rooted:
    root: Path  # any str or os.PathLike: kept as a Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))


@dataclass(frozen=True)
class StoreLayout(_Rooted):
    """The paths of a store: `StoreLayout(cfg.paths.store).seed(trajectory_id, tokens)`."""

    def trajectory(self, trajectory_id: str) -> Path:
        """The directory of one seed trajectory: its checkpoints, lock and audit trail."""
        return self.root / "seeds" / trajectory_id

    def seed(self, trajectory_id: str, tokens: int) -> Path:
        """The seed checkpoint of `trajectory_id` at D = `tokens` (zero-padded so names sort by D)."""
        return self.trajectory(trajectory_id) / f"{SEED_PREFIX}{tokens:015d}"

    def eval_tasks(self, name: str) -> Path:
        """A generated lm-eval task directory (`phonebook_mc-<hash>`, `local-<hash>`)."""
        return self.root / "eval_tasks" / name


@dataclass(frozen=True)
class DataLayout(_Rooted):
    """The paths of a data cache: `DataLayout(cfg.data.cache_dir).prepared(key)`."""

    def tokenizers(self) -> Path:
        return self.root / "tokenizers"

    def clusters(self) -> Path:
        return self.root / "clusters"

    def hf_datasets(self) -> Path:
        return self.root / "hf_datasets"

    def prepared(self, key: str) -> Path:
        """A prepared data set, named by its identity (steps.PreparedData)."""
        return self.root / key

    def prepared_lock(self, key: str) -> Path:
        return self.root / f".{key}.lock"

    @staticmethod
    def packed(prepared: Path, seq_len: int) -> Path:
        """A prepared data set's sequences of seq_len + 1 tokens, inside it."""
        return Path(prepared) / f"packed-L{seq_len}"

    @staticmethod
    def packed_lock(prepared: Path, seq_len: int) -> Path:
        return Path(prepared) / f".packed-L{seq_len}.lock"

    def array_work(self, key: str) -> Path:
        """Where one prepared key's job array keeps its parts until they are assembled."""
        return self.root / f".array-{key}"

    def prepare_logs(self) -> Path:
        """The submitit folder of every preparation job (<job id>/ with its logs and pickles)."""
        return self.root / ".prepare-logs"


class _Under:
    """A path under the layout's root, read as an attribute: `results = _Under(RESULTS_FILE)`."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, layout: "_Rooted | None", owner: type | None = None) -> Path:
        if layout is None:  # looked up on the class (help(), introspection)
            return self  # type: ignore[return-value]
        return layout.root.joinpath(*self.parts)


@dataclass(frozen=True)
class SweepLayout(_Rooted):
    """The paths of a sweep directory: `SweepLayout(cfg.paths.sweep_dir).run(run_id)`, `.results`, ..."""

    results = _Under(RESULTS_FILE)  # the result rows (records.py)
    downstream = _Under(DOWNSTREAM_FILE)  # the lm-eval rows (downstream.py)
    launches = _Under(LAUNCHES_FILE)  # one JSON line per launch (slurm.write_launch)
    identity = _Under(SWEEP_FILE)  # the experiment the sweep records (sweep_identity.check_sweep)
    runs = _Under("runs")  # the parent of every run directory
    jobs = _Under("jobs")  # the parent of Hydra's job dirs: `hydra.sweep.subdir` in conf/config.yaml names it
    report = _Under(REPORT_DIR)
    report_file = _Under(REPORT_DIR, "report.md")  # written last by analysis.report: there only for a whole report
    no_report = _Under(REPORT_DIR, NO_REPORT)  # why a report job wrote no report (too few runs for a law...)
    report_step = _Under(REPORT_DIR, REPORT_STEP)  # which report is there: its inputs' identity
    wandb = _Under("wandb")  # W&B's: wandb.init(dir=<sweep dir>) adds `wandb/`

    def run(self, run_id: str) -> Path:
        """One grid point's state, named by its run id (no timestamps: a re-run finds it)."""
        return self.runs / run_id
