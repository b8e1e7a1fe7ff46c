"""The paper's phonebook: at a tiny size (per path) experts split early recall facts the no-split baseline cannot;
the default sweep (equal total compute, shared seed) measures where splitting pays."""
import json
import subprocess
import sys

import numpy as np
import pytest

from splitsweep.job import Job
from splitsweep.records import read_rows
from tests.helpers import REPO, compose_cfg

TINY_BOOK = ["model=llama_83k", "data.entries_per_domain=10", "split.budget_tokens=19200", "train.lr=3e-3",
             "train.checkpoint_every_steps=1000"]


def recall(rows, domain="d0"):
    row = next(r for r in rows if r["eval_domain"] == domain)
    return row["recall_accuracy"], row["eval_loss"]


def test_phonebook_effect_at_a_tiny_size(tmp_path):
    # 150 steps of 4 x 32 characters over 4 books of 10 facts: an expert split at 20-40% sees its book
    # ~3x as often as the mixture run on the same budget, and only it memorises the numbers.
    for fraction in (0.2, 0.4):
        expert = recall(Job(compose_cfg(tmp_path, *TINY_BOOK, f"split.pretrain_fraction={fraction}",
                                        "split.expert_domain=d0")).run())
        baseline = recall(Job(compose_cfg(tmp_path, *TINY_BOOK, f"split.pretrain_fraction={fraction}",
                                          "split.expert_domain=mixture")).run())
        assert expert[0] >= baseline[0] + 0.5, (fraction, expert, baseline)
        assert expert[1] < baseline[1]


def fraction(row) -> float:
    """D over the budget the point's split divides (T per path, or C shared)."""
    return row["pretrain_tokens"] / row.get("budget_tokens", row["pretrain_tokens"] + row["special_tokens"])


def summarize(rows, column="recall_accuracy"):
    """{fraction: (mean of experts on their own book, mean of the mixture run on the books)}."""
    out = {}
    for f in sorted({fraction(r) for r in rows}):
        at = [r for r in rows if np.isclose(fraction(r), f)]
        own = [r[column] for r in at if r["expert_domain"] == r["eval_domain"] != "mixture"]
        base = [r[column] for r in at if r["expert_domain"] == "mixture" and r["eval_domain"] != "mixture"]
        out[round(f, 3)] = (float(np.mean(own or base)), float(np.mean(base)))  # f = 1: no expert, one model
    return out


@pytest.mark.slow
def test_default_sweep_shows_the_effect_and_writes_the_report(tmp_path):
    """`python -m splitsweep -m` with no arguments: the README's main command, end to end."""
    env = {"SPLITSWEEP_OUTPUT": str(tmp_path), "PYTHONPATH": str(REPO), "WANDB_MODE": "offline",
           "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    import os
    proc = subprocess.run([sys.executable, "-m", "splitsweep", "-m"], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sweep = tmp_path / "sweeps" / "phonebook"
    rows = read_rows(sweep)
    # fractions below 1 x expert domains x eval domains, and one pretraining-only model at f = 1 (every
    # expert domain's grid point there is that model: D' = 0)
    assert len(rows) == 5 * 5 * 5 + 5
    assert f"report in {sweep / 'report'}" in proc.stdout
    assert (sweep / "report" / "report.md").exists() and (sweep / "report" / "report.html").exists()
    # Equal total compute (shared seed): C = 1,024,000 tokens for the 4 experts together, or for the baseline.
    assert {r["accounting"] for r in rows} == {"shared_seed"} and {r["budget_tokens"] for r in rows} == {1024000}
    loss, recall = summarize(rows, "eval_loss"), summarize(rows)
    print(json.dumps({"loss": loss, "recall": recall}))
    pretrain_only = loss[1.0][0]
    at_one = [r for r in rows if np.isclose(fraction(r), 1.0)]
    assert {r["expert_domain"] for r in at_one} == {"mixture"} and len({r["run_id"] for r in at_one}) == 1
    # annealed: it left the seed trajectory at 0.8·C and decayed on the mixture (train.pretrain_only_cooldown)
    assert {r["cooldown_tokens"] for r in at_one} == {204800} and {r["special_tokens"] for r in at_one} == {0}
    for f in (0.4, 0.6, 0.8):  # split models beat pretraining only and the baseline at the same fraction
        expert, baseline = loss[f]
        assert expert < 0.9 * pretrain_only and expert < 0.9 * baseline, loss
        assert recall[f][0] >= 0.9, recall
    assert loss[0.0][0] > pretrain_only  # experts from scratch on a quarter of the compute each: worst
    # Every seed of the sweep is a checkpoint of one trajectory, trained once.
    segs = [json.loads(line) for p in (tmp_path / "store" / "seeds").glob("*/segments.jsonl")
            for line in p.read_text().splitlines()]
    assert sum(s["to_step"] - s["from_step"] for s in segs) == 400  # the largest D any run branches at: 0.8·C
