"""Each job logs to W&B through the real wandb library: offline into the sweep dir by default.

tests/conftest.py sets WANDB_MODE=disabled for the whole session: every test here sets the mode it needs.
The `wandb` command is the one of the interpreter running the tests (`python -m wandb`), never whatever
`wandb` comes first on PATH.
"""
import os
import stat
import sys
from pathlib import Path

from tests.helpers import TINY, TOKENS_PER_STEP, run_cli

T = TOKENS_PER_STEP
ARGS = [*TINY, f"split.pretrain_tokens={2 * T}", f"split.special_tokens={2 * T}", "split.expert_domain=d0"]


def path_with_our_wandb(tmp_path: Path) -> str:
    """PATH with a `wandb` first that runs this interpreter's wandb (analysis/wandb_io.py looks it up
    with shutil.which)."""
    shim = tmp_path / "bin" / "wandb"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m wandb "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return os.pathsep.join([str(shim.parent), os.environ.get("PATH", "")])


def wandb_files(root):
    return sorted(p.name for p in (root / "sweeps" / "test").rglob("run-*.wandb"))


def test_offline_runs_for_seed_and_expert_with_deterministic_ids(tmp_path, monkeypatch):
    env = {"WANDB_MODE": "offline", "WANDB_CACHE_DIR": str(tmp_path / "cache"),
           "WANDB_CONFIG_DIR": str(tmp_path / "config")}
    monkeypatch.delenv("WANDB_DIR", raising=False)  # the runs go into the sweep dir
    run_cli(tmp_path, *ARGS, "logger.mode=offline", env=env)
    files = wandb_files(tmp_path)
    assert len(files) == 2
    assert any(f.startswith("run-seed-") for f in files) and any(f.startswith("run-expert-") for f in files)
    blob = b"".join(p.read_bytes() for p in (tmp_path / "sweeps" / "test").rglob("run-expert-*.wandb"))
    for needle in (b"train/loss", b"eval/d0/loss", b"expert", b"test"):  # history, summary, job type, group
        assert needle in blob, needle


def test_wandb_mode_disabled_wins(tmp_path):
    run_cli(tmp_path, *ARGS, "logger.mode=offline", env={"WANDB_MODE": "disabled"})
    assert wandb_files(tmp_path) == []
    assert (tmp_path / "sweeps" / "test" / "results.jsonl").exists()


def test_table_collected_from_offline_runs_equals_the_records(tmp_path):
    import json
    import subprocess

    from tests.helpers import REPO

    env = {"WANDB_MODE": "offline", "WANDB_CACHE_DIR": str(tmp_path / "cache"),
           "WANDB_CONFIG_DIR": str(tmp_path / "config")}
    for domain in ("d0", "mixture"):
        run_cli(tmp_path, *[a for a in ARGS if not a.startswith("split.expert_domain")],
                f"split.expert_domain={domain}", "logger.mode=offline", env=env)
    sweep = tmp_path / "sweeps" / "test"
    out = tmp_path / "collected.jsonl"
    proc = subprocess.run([sys.executable, "-m", "analysis", "collect", "--wandb-offline", str(sweep / "wandb"),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "PATH": path_with_our_wandb(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    key = lambda r: (r["run_id"], r["eval_domain"])  # noqa: E731
    collected = sorted((json.loads(line) for line in out.read_text().splitlines()), key=key)
    recorded = sorted((json.loads(line) for line in (sweep / "results.jsonl").read_text().splitlines()), key=key)
    assert len(recorded) == 10
    assert collected == recorded


def test_online_without_key_or_server_fails_before_training(tmp_path):
    no_key = run_cli(tmp_path, *ARGS, "logger.mode=online", check=False,
                     env={"WANDB_MODE": "", "WANDB_API_KEY": "", "NETRC": str(tmp_path / "none"),
                          "HOME": str(tmp_path)})
    assert no_key.returncode == 2 and "no W&B API key" in no_key.stderr and "wandb login" in no_key.stderr
    # A key, but a server that is not there (a closed port on this machine): refused in seconds.
    unreachable = run_cli(tmp_path, *ARGS, "logger.mode=online", check=False,
                          env={"WANDB_MODE": "", "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"})
    assert unreachable.returncode == 2 and "unreachable" in unreachable.stderr
    assert not (tmp_path / "store").exists()


def test_report_is_logged_to_wandb_as_an_analysis_run(tmp_path):
    import json
    import subprocess

    from analysis.synthetic import phonebook_table
    from tests.helpers import REPO

    results = tmp_path / "results.jsonl"
    table = phonebook_table()
    results.write_text(table.to_json(orient="records", lines=True))
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_CACHE_DIR": str(tmp_path / "c"),
           "WANDB_CONFIG_DIR": str(tmp_path / "cfg"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", str(results), "--out", str(tmp_path / "r"),
                           "--n-bootstrap", "5", "--quiet", "--wandb"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list((tmp_path / "r").rglob("run-analysis-*.wandb"))
    assert len(files) == 1
    dump = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(files[0].parent)],
                          capture_output=True, text=True, timeout=300)
    assert dump.returncode == 0, dump.stderr[-3000:]
    records = [json.loads(line) for line in dump.stdout.splitlines() if line.startswith("{")]
    kinds = {r["type"] for r in records}
    assert {"run", "summary", "history"} <= kinds
    run = next(r for r in records if r["type"] == "run")["run"]
    assert run.get("jobType") == "analysis" or "analysis" in json.dumps(run)
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    assert "law" in summary and any(k.startswith("split") for k in summary)
    assert any(k.startswith("plots/") for k in summary)   # images
    assert any(k.startswith("records.") for k in summary)  # the records table
    assert any(k.startswith("split.") for k in summary)    # the split table
    assert sum(r["type"] == "artifact" for r in records) >= 3  # two tables and the HTML report
