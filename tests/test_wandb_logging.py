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

    # from a sweep directory, the analysis run goes beside the sweep's own W&B runs
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "results.jsonl").write_text(results.read_text())
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", str(sweep), "--out", str(tmp_path / "r2"),
                           "--n-bootstrap", "5", "--quiet", "--wandb"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((sweep / "wandb").rglob("run-analysis-*.wandb"))) == 1
    assert not list((tmp_path / "r2").rglob("run-analysis-*.wandb"))


def test_the_runs_of_a_trajectory_and_of_a_preempted_expert_hold_every_logged_step_once(tmp_path):
    """Read as a sync would (wandb's own reader): a seed extended by a second job and an expert stopped by
    SIGTERM and resumed are several processes, each its own W&B run; together they hold every step once."""
    import json
    import signal
    import subprocess
    import time

    from analysis.wandb_io import offline_history
    from tests.helpers import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO), "SPLITSWEEP_OUTPUT": str(tmp_path), "WANDB_MODE": "offline",
           "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_CONFIG_DIR": str(tmp_path / "config"),
           "OMP_NUM_THREADS": "1"}
    common = [*TINY, "logger.mode=offline", "train.sync_every_steps=1", "split.expert_domain=d0"]
    long_expert = [*common, f"split.pretrain_tokens={2 * T}", f"split.special_tokens={1200 * T}"]
    log = tmp_path / "first.log"
    first = subprocess.Popen([sys.executable, "-m", "splitsweep", *long_expert], cwd=REPO, env=env,
                             stdout=open(log, "w"), stderr=subprocess.STDOUT)
    runs = tmp_path / "sweeps" / "test" / "runs"
    deadline = time.monotonic() + 300
    while not list(runs.glob("*/progress")) and time.monotonic() < deadline:  # the expert has a checkpoint
        assert first.poll() is None, log.read_text()
        time.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=300) != 0, log.read_text()  # preempted: checkpointed and stopped
    run_cli(tmp_path, *long_expert, env=env)  # resumed from its checkpoint, finished
    run_cli(tmp_path, *common, f"split.pretrain_tokens={4 * T}", f"split.special_tokens={2 * T}", env=env)

    history = offline_history(tmp_path / "sweeps" / "test" / "wandb")
    by_base = {}
    for run_id, entry in history.items():
        assert run_id.startswith(entry["base_id"] + "-"), run_id  # one W&B run per process
        by_base.setdefault(entry["base_id"], []).append(entry["steps"])
    assert len(history) == len({run_id for run_id in history})  # no id shared by two offline directories
    seeds = [b for b in by_base if b.startswith("seed-")]
    experts = {b: by_base[b] for b in by_base if b.startswith("expert-")}
    assert len(seeds) == 1 and len(by_base[seeds[0]]) == 2  # the trajectory: trained to 2 steps, extended to 4
    seed_steps = sorted(s for steps in by_base[seeds[0]] for s in steps)
    assert seed_steps == [1, 2, 3, 4]
    ledgers = {json.loads(p.read_text())["base_id"]: json.loads(p.read_text())
               for p in runs.glob("*/wandb_runs.json")}
    preempted = [b for b, ledger in ledgers.items() if len(ledger["attempts"]) == 2]
    assert len(experts) == 2 and len(preempted) == 1, ledgers  # the long expert ran twice
    for base, parts in experts.items():
        steps = sorted(s for part in parts for s in part)
        assert len(steps) == len(set(steps)), f"{base}: a step logged twice"
        first_step, last_step = (3, 1202) if base in preempted else (5, 6)
        assert steps == list(range(first_step, last_step + 1)), (base, steps[:5], steps[-5:])
    assert all(len(part) > 0 for part in experts[preempted[0]])  # both processes logged steps
