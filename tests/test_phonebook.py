"""The paper's phonebook effect: experts split early recall facts that the no-split baseline cannot."""
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


def summarize(rows):
    """{fraction: (mean recall of experts on their own book, mean recall of the mixture run on the books)}."""
    out = {}
    for f in sorted({r["pretrain_tokens"] / (r["pretrain_tokens"] + r["special_tokens"]) for r in rows}):
        at = [r for r in rows if np.isclose(r["pretrain_tokens"] / (r["pretrain_tokens"] + r["special_tokens"]), f)]
        own = [r["recall_accuracy"] for r in at if r["expert_domain"] == r["eval_domain"] != "mixture"]
        base = [r["recall_accuracy"] for r in at if r["expert_domain"] == "mixture" and r["eval_domain"] != "mixture"]
        out[round(f, 3)] = (float(np.mean(own)), float(np.mean(base)))
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
    assert len(rows) == 6 * 5 * 5  # fractions x expert domains x eval domains
    assert f"report in {sweep / 'report'}" in proc.stdout
    assert (sweep / "report" / "report.md").exists() and (sweep / "report" / "report.html").exists()
    effect = summarize(rows)
    print(json.dumps(effect))
    for f in (0.2, 0.4):
        expert, baseline = effect[f]
        assert expert > baseline + 0.3, effect
    # Every seed of the sweep is a checkpoint of one trajectory, trained once.
    segs = [json.loads(line) for p in (tmp_path / "store" / "seeds").glob("*/segments.jsonl")
            for line in p.read_text().splitlines()]
    assert sum(s["to_step"] - s["from_step"] for s in segs) == 250
