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


def test_help_lists_the_groups_every_named_sweep_and_the_verbs_and_only_the_project_s_groups(tmp_path):
    out = _run(["splitsweep", "--help"], tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for group in ("data:", "model:", "train:", "split:", "sweeps:", "llama_21k", "realtext_ladder"):
        assert group in text, group
    named = text.split("Named sweeps", 1)[1]
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        assert f"\n  {path.stem} " in named, f"sweeps/{path.name} is not described in conf/hydra/help/splitsweep.yaml"
    for verb in ("splitsweep-analysis fit", "splitsweep-analysis split", "splitsweep-analysis report",
                 "splitsweep-analysis next", "splitsweep-status"):
        assert verb in text, verb
    # the search path holds the project's groups only: no repository folders, no stray groups
    assert "conf/" not in text and "outputs" not in text.split("Named sweeps")[0] and "eval_tasks" not in text
    stray = _run(["splitsweep", *TINY, "+conf/model=llama_27k"], tmp_path, SPLITSWEEP_OUTPUT=str(tmp_path / "out"))
    assert stray.returncode == 2 and "unknown config key 'conf/model'" in stray.stderr and "model" in stray.stderr
    assert not (tmp_path / "out" / "store").exists()  # refused before any data or model


def test_tab_completion_installs_and_completes_the_named_sweeps(tmp_path):
    install = _run(["splitsweep", "-sc", "install=bash"], tmp_path)
    assert install.returncode == 0 and "complete" in install.stdout and "splitsweep" in install.stdout
    query = _run(["splitsweep", "-sc", "query=bash"], tmp_path, COMP_LINE="splitsweep sweeps=", COMP_POINT="18")
    assert query.returncode == 0 and "sweeps=realtext_ladder" in query.stdout, query.stdout + query.stderr
