"""Golden identities of the named sweeps' grid points, recorded from the code at commit 9b3d7d8.

`run_id`, `trajectory_id` and `config_hash` are an ON-DISK CONTRACT, not an implementation detail: a store's seeds
are found by trajectory id (`<store>/seeds/<trajectory_id>/`), a sweep's records and run state by run id
(`results.jsonl`, `.records/results/<run_id>.json`, `runs/<run_id>/`, the `run_id` column analysis joins on), and
status matches job dirs of sweeps older than the launch manifest by config hash. A change that moves any of them
leaves every existing store and sweep behind: a re-run trains again what was recorded, and one model gets two ids
in the tables. If a change of identity is intended, give existing stores and sweeps a way over (a migration, or a
deliberate STORE_VERSION bump noted in CHANGELOG.md), then regenerate the literals below.

The grids are composed as a multirun composes them: the sweep file's `hydra.sweeper.params` and the command line
expanded by Hydra's BasicSweeper, every point's config loaded with `load_sweep_config` (what the launchers call)
and planned with `make_plan`. Nothing is prepared or written. Where outputs go is no part of an identity: the
literals were recorded under another output root (SPLITSWEEP_OUTPUT) than the tests' temporary ones, and the
smaller tests run under two roots each.

Covered: every grid point of the default sweep (sweeps=phonebook), a few of sweeps=phonebook_per_path (with their
config hashes and job dirs), and a few of sweeps=realtext_ladder and sweeps=realtext_cpu with their DATA IDENTITY
PINNED (a stand-in for data=hf): there the data's own identity is the prepared corpus's key, which hashes the
absolute path, size and mtime of every corpus file and the data_files pattern (`${paths.root}/corpora/...`), so
it differs between machines and checkouts by design; everything else in those ids (model, resolvers of N, batch,
optimizer, schedule, budgets, cooldown, the run's split) is checked. Their config hashes resolve
`data.data_files` and `data.cache_dir` under the output root, so they are not checked either.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import open_dict, read_write

import splitsweep.app  # noqa: F401 (registers ${ss_dirname:...}, which the job dirs use)
import splitsweep.plan
from splitsweep.data import TokenSource
from splitsweep.plan import make_plan

REPO = Path(__file__).resolve().parents[1]

CONTRACT = ("identities are an on-disk contract: existing stores and sweeps are found by them (seeds by "
            "trajectory_id, records and run state by run_id, legacy job dirs by config_hash). This change moves "
            "them: either keep them as they were, or migrate existing stores and sweeps and then update the "
            "literals in tests/test_identity_golden.py (see its docstring)")


def table(keys: str, rows: str) -> dict[str, tuple]:
    """Golden rows, one grid point a line: the values of `keys` (its overrides, in the sweep file's order), then
    run_id, trajectory_id, the seed's D and (phonebook sweeps) config_hash. -> {overrides: identities}"""
    names, out = keys.split(), {}
    for line in rows.strip().splitlines():
        values = line.split()
        run_id, trajectory_id, seed_tokens, *config_hash = values[len(names):]
        out[" ".join(f"{k}={v}" for k, v in zip(names, values))] = (run_id, trajectory_id, int(seed_tokens),
                                                                     *config_hash)
    return out


# sweeps=phonebook, every grid point.
PHONEBOOK = table("split.pretrain_fraction split.expert_domain", """
0.0 d0       7ae452e56fb9451b ee84d4f4ed3c9efc       0 22c9e1f0eb291d2d
0.0 d1       7849d89f6de2b0d3 ee84d4f4ed3c9efc       0 7f0e5d49dd0a0cfc
0.0 d2       29286a0930d9bec2 ee84d4f4ed3c9efc       0 6e90ab42649540be
0.0 d3       e556913bda3b2c5c ee84d4f4ed3c9efc       0 d8a31da13d9dd06c
0.0 mixture  d58edbb91d8eb415 ee84d4f4ed3c9efc       0 1040658fb1e9606d
0.2 d0       54af33500d0b5b49 ee84d4f4ed3c9efc  204800 b8d695776fa2a963
0.2 d1       54252a52347bd228 ee84d4f4ed3c9efc  204800 573c4b44f2929fce
0.2 d2       7a1fa904624d7682 ee84d4f4ed3c9efc  204800 7119a684c6fa88cf
0.2 d3       9732b2799baddab5 ee84d4f4ed3c9efc  204800 911a8c82e838179f
0.2 mixture  29420b9a6813b677 ee84d4f4ed3c9efc  204800 119ab331f61caf6f
0.4 d0       bba0a45b292b6e78 ee84d4f4ed3c9efc  409600 2e00f049acae5d87
0.4 d1       880ecf1ffda52d12 ee84d4f4ed3c9efc  409600 045dfc8553c3a4a4
0.4 d2       f2fe423c2ed82f06 ee84d4f4ed3c9efc  409600 70906501f03b035f
0.4 d3       86c00d8f63196365 ee84d4f4ed3c9efc  409600 d6e12d59ae7291f3
0.4 mixture  f30f057cd486ea07 ee84d4f4ed3c9efc  409600 7d206a1f677c0c05
0.6 d0       3b1383aa0529648c ee84d4f4ed3c9efc  614400 d925ce1d605c614a
0.6 d1       34fc494402850b9f ee84d4f4ed3c9efc  614400 3dee3f644aef747e
0.6 d2       3a14b38ad8dfd088 ee84d4f4ed3c9efc  614400 4831714a10bf2bb3
0.6 d3       04a7ae853170a665 ee84d4f4ed3c9efc  614400 0ec26c83ee5e309f
0.6 mixture  6f8e09a16444e7e8 ee84d4f4ed3c9efc  614400 9d175ef04d99789f
0.8 d0       e49436649a701ece ee84d4f4ed3c9efc  819200 4bc360897dfa3c75
0.8 d1       f21653e0aeeaaf5a ee84d4f4ed3c9efc  819200 cf8aebc70e0fd9b4
0.8 d2       f7ea51acbb6d07c6 ee84d4f4ed3c9efc  819200 dd51b33bd454eaf9
0.8 d3       ac095a4931ce1fc3 ee84d4f4ed3c9efc  819200 e0936e9286b05743
0.8 mixture  8885f314fe60f03b ee84d4f4ed3c9efc  819200 eb08257aa7c48397
1.0 d0       7b70027223fbe627 ee84d4f4ed3c9efc  819200 5ceded52a4c2fd8d
1.0 d1       7b70027223fbe627 ee84d4f4ed3c9efc  819200 32b50fc00e0ba467
1.0 d2       7b70027223fbe627 ee84d4f4ed3c9efc  819200 8552ad5ae78524d5
1.0 d3       7b70027223fbe627 ee84d4f4ed3c9efc  819200 2e81f18068b118bb
1.0 mixture  7b70027223fbe627 ee84d4f4ed3c9efc  819200 17d11b2b9c3f6b42
""")

# sweeps=phonebook_per_path, a few points.
PHONEBOOK_PER_PATH = table("split.pretrain_fraction split.expert_domain", """
0.0 d0       8377a61d9c08b726 ee84d4f4ed3c9efc       0 67a16a3929713055
0.4 d2       76f58f4499cdb312 ee84d4f4ed3c9efc  204800 417e67f753395784
0.8 mixture  5237d5e2c1dc6188 ee84d4f4ed3c9efc  409600 ea1405e13e3e49a6
1.0 d3       34182e0f6733b3fc ee84d4f4ed3c9efc  409600 f2564a21edda1928
""")

# Real-text sweeps with the data identity pinned (see the module docstring).
# The ladder's ids were re-recorded when its lr rule became N^-0.7 (a new experiment, CHANGELOG 0.11.0).
REALTEXT_LADDER = table("model split.tokens_per_param split.pretrain_fraction split.expert_domain", """
llama_21k  2  0.125 licenses    36cbf488e14d4d9d 8b8dd832161f43fb    6144
llama_60k  6  0.5   mixture     d59e6c933455ddab 03a3b1d2551251c8  180224
llama_115k 20 0.75  python      7918c2f49ea095b5 1769689936f9912a 1720320
llama_187k 20 1.0   changelogs  c5fb0a3839ef286a 76f451923c3ba6f8 2988032
""")

REALTEXT_CPU = table("split.expert_domain split.pretrain_tokens split.special_tokens model", """
mixture  16384 4096  llama_402k  cb099b5f62da0a71 76e827f1643fad6f   16384
licenses 65536 16384 llama_5m    ed5266eef24acb2b 6a67677668a77275   65536
python   32768 8192  llama_886k  917169167547ab7d d3b8828583f29532   32768
""")

# Job directories (`<sweep>/jobs/<name>`), where a re-run finds a grid point's Hydra dir.
JOB_DIRS = {
    ("phonebook", "split.pretrain_fraction=0.0 split.expert_domain=d0"):
        "jobs/split.expert_domain=d0,split.pretrain_fraction=0.0",
    ("phonebook", "split.pretrain_fraction=0.4 split.expert_domain=mixture"):
        "jobs/split.expert_domain=mixture,split.pretrain_fraction=0.4",
    ("phonebook_per_path", "split.pretrain_fraction=0.4 split.expert_domain=d2"):
        "jobs/split.expert_domain=d2,split.pretrain_fraction=0.4",
}


class PinnedText(TokenSource):
    """data=hf without a corpus: the domains the sweep lists, equal weights, plenty of text, and a fixed identity
    of HFSource.identity's shape."""

    def __init__(self, data_cfg, seq_len: int, seed: int):
        self.domains = [str(d) for d in data_cfg.domains]
        self.weights = [1.0] * len(self.domains)
        self.vocab_size, self.seq_len, self.seed = int(data_cfg.tokenizer.vocab_size), seq_len, seed

    def identity(self) -> dict:
        return {"kind": "hf", "prepared": "pinned", "weights": self.weights,
                "train_sequences": [self.domain_train_sequences(k) for k in range(len(self.domains))]}

    def domain_train_sequences(self, domain: int) -> int:
        return 10 ** 7


@pytest.fixture(params=["out", "elsewhere/deeper"], ids=["root-a", "root-b"])
def root(request, tmp_path, monkeypatch) -> Path:
    """The output root (SPLITSWEEP_OUTPUT, as the command line reads it): two of them, one set of identities."""
    path = tmp_path / request.param
    monkeypatch.setenv("SPLITSWEEP_OUTPUT", str(path))
    return path


def planned(sweep: str, root: Path, points=None) -> dict[str, dict]:
    """`python -m splitsweep -m sweeps=<sweep>`'s grid as Hydra's sweeper expands it, every point planned;
    `points` (overrides of grid points, `split.expert_domain=each` replaced by a domain, as the launchers expand
    it) keeps those. Overrides (the sweep's own, without `sweeps=`) -> identities."""
    args = [] if sweep == "phonebook" else [f"sweeps={sweep}"]  # phonebook: the default, `python -m splitsweep -m`
    out = {}
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", overrides=args, run_mode=RunMode.MULTIRUN)
        params = [f"{k}={v}" for k, v in master.hydra.sweeper.params.items()]
        parsed = OverridesParser.create(config_loader=loader).parse_overrides([*params, *args])
        grid = {" ".join(o for o in job if o not in args): job
                for batch in BasicSweeper.split_arguments(parsed, None) for job in batch}
        for key in grid if points is None else points:
            each = re.sub(r"split\.expert_domain=\S+", "split.expert_domain=each", key)
            assert key in grid or each in grid, f"{key!r} is not a grid point of sweeps={sweep}"
            sweep_config = loader.load_sweep_config(master, [*key.split(), *args])
            cfg = copy.deepcopy(sweep_config)  # the job's config: what the launchers plan (slurm._task_cfg)
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]
            plan = make_plan(cfg)
            assert str(cfg.paths.root) == str(root), "the output root was not in effect"
            out[key] = {"ids": (plan.run_id, plan.trajectory_id, plan.seed_tokens, plan.config_hash),
                        "job_dir": str(sweep_config.hydra.sweep.subdir)}
    assert not root.exists(), f"planning wrote under the output root: {sorted(root.rglob('*'))}"
    return out


def check(sweep: str, got: dict[str, dict], expected: dict[str, tuple]) -> None:
    """The identities of `got` are the recorded ones (as many fields as `expected` records), and so are the job
    dirs JOB_DIRS records for this sweep."""
    now = {key: point["ids"][:len(expected[key])] for key, point in got.items() if key in expected}
    changed = {key: {"recorded": ids, "now": now.get(key)} for key, ids in expected.items() if now.get(key) != ids}
    fields = "run_id, trajectory_id, seed D" + (", config_hash" if len(next(iter(expected.values()))) > 3 else "")
    assert not changed and set(got) == set(expected), (
        f"sweeps={sweep}: {CONTRACT}.\nchanged ({fields}): {changed}\n"
        f"grid points not recorded here: {sorted(set(got) - set(expected))}")
    for (name, key), job_dir in JOB_DIRS.items():
        if name == sweep:
            assert got[key]["job_dir"] == job_dir, (f"sweeps={sweep} {key}: job dir {got[key]['job_dir']!r}, "
                                                    f"recorded {job_dir!r}; {CONTRACT}")


@pytest.mark.parametrize("root", ["out"], indirect=True)  # one root is enough here: see the module docstring
def test_phonebook_every_grid_point(root):
    check("phonebook", planned("phonebook", root), PHONEBOOK)


def test_phonebook_per_path(root):
    check("phonebook_per_path", planned("phonebook_per_path", root, points=PHONEBOOK_PER_PATH), PHONEBOOK_PER_PATH)


@pytest.mark.parametrize("sweep,expected", [("realtext_ladder", REALTEXT_LADDER), ("realtext_cpu", REALTEXT_CPU)])
def test_realtext_with_pinned_data(root, monkeypatch, sweep, expected):
    monkeypatch.setattr(splitsweep.plan, "build_source", PinnedText)  # no corpus is read, prepared or hashed
    check(sweep, planned(sweep, root, points=expected), expected)
