"""Tiny real training configs for tests: a 27k-parameter torchtitan Llama on a small phonebook."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
TOKENS_PER_STEP = 4 * 32  # global_batch x seq_len below

TINY = [
    "model=llama_27k", "train.global_batch=4", "train.seq_len=32", "train.warmup_steps=2",
    "train.checkpoint_every_steps=2", "train.progress_every_s=1000", "train.eval_batch=8",
    "data.entries_per_domain=20", "data.heldout_sequences=2", "sweep_name=test",
    "train.device=cpu",  # never a GPU the machine happens to have (conftest also hides them)
    "split.accounting=per_path",  # the tests' budgets are per expert path; tests/test_accounting.py covers shared_seed
]


def compose_cfg(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.root={root}", *TINY, *overrides])


def run_cli(root: Path, *args: str, env: dict | None = None, timeout: float = 600, check: bool = True,
            prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "SPLITSWEEP_OUTPUT": str(root), **(env or {})}
    cmd = (prefix or [sys.executable, "-m"]) + ["splitsweep", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def segments(root: Path) -> list[dict]:
    import json

    out = []
    for f in sorted((Path(root) / "store" / "seeds").glob("*/segments.jsonl")):
        out += [json.loads(line) for line in f.read_text().splitlines()]
    return out
