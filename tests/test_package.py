"""The README's install makes a package: its commands run from any directory."""
import os
import shutil
import subprocess

from tests.helpers import REPO, TINY


def _run(cmd, cwd, **env):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env, "PYTHONPATH": ""})


def test_the_commands_run_outside_the_repository(tmp_path):
    for name in ("splitsweep", "splitsweep-analysis", "splitsweep-status"):
        assert shutil.which(name), f"{name} is not installed: pip install -r requirements.txt installs it (-e .)"
    assert not (tmp_path / "conf").exists() and tmp_path.resolve() != REPO
    help_text = _run(["splitsweep-analysis", "--help"], tmp_path)
    assert help_text.returncode == 0 and "fit" in help_text.stdout and "report" in help_text.stdout
    job = _run(["splitsweep", *TINY, "split.pretrain_tokens=256", "split.special_tokens=128", "split.expert_domain=d0"],
               tmp_path, SPLITSWEEP_OUTPUT=str(tmp_path / "out"))
    assert job.returncode == 0, job.stderr[-2000:]
    sweep = tmp_path / "out" / "sweeps" / "test"
    assert (sweep / "results.jsonl").exists()
    status = _run(["splitsweep-status", str(sweep)], tmp_path)
    assert status.returncode == 0 and "done" in status.stdout, status.stdout + status.stderr
    assert _run(["python", "-m", "splitsweep", "--help"], tmp_path).returncode == 0
