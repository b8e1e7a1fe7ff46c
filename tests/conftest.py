"""The tests' environment: the same on every machine, whatever is installed or exported there.

Everything here runs when pytest loads this file, before any test module is imported (some import
`datasets`/`huggingface_hub`, which read their settings once, at import) and before any test starts a
subprocess: the CLI runs, torchrun and the SLURM jobs all inherit what is set here.
"""
import os
import sys

import pytest

# Inherited from a surrounding job or launcher (a pytest run inside a SLURM allocation, a torchrun, a
# submitit job, a shell with W&B settings) they would change what the code under test does: rank and
# world size, the job's partition, a W&B server or project, warnings turned into errors.
_DROP = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
         "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT", "PYTHONWARNINGS",
         "OMP_THREAD_LIMIT")
_DROP_PREFIXES = ("TORCHELASTIC_", "SUBMITIT_", "SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "WANDB_")
_KEEP = ("SLURM_CONF",)  # the slurm_cluster fixture sets it to its own cluster for the session anyway
for _name in list(os.environ):
    if _name not in _KEEP and (_name in _DROP or _name.startswith(_DROP_PREFIXES)):
        del os.environ[_name]

# W&B is exercised by its own tests (tests/test_wandb_logging.py, which set WANDB_MODE themselves);
# elsewhere it would only add seconds per job.
os.environ["WANDB_MODE"] = "disabled"
# Two threads everywhere (the subprocesses too), and CPU only: results and timings do not depend on the
# machine's core count or on a GPU being there.
os.environ["OMP_NUM_THREADS"] = "2"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
if "torch" in sys.modules:  # imported before us (by a plugin): OMP_NUM_THREADS came too late for it
    sys.modules["torch"].set_num_threads(2)
# No test reads the Hugging Face hub (tests/data/corpus is local); one that checks the online path
# deletes these with monkeypatch.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

# Caches and settings of Hugging Face, W&B and matplotlib: in this session's temporary directory (the
# one tmp_path_factory hands out), not in the user's (a cache there may hold anything). Set in
# pytest_configure rather than in a fixture: `datasets` and `huggingface_hub` are imported while the test
# modules are collected, before any fixture runs, and read HF_HOME / HF_DATASETS_CACHE at import.
_CACHE_VARS = {"HF_HOME": "hf", "HF_DATASETS_CACHE": "hf/datasets", "WANDB_DATA_DIR": "wandb/data",
               "WANDB_CACHE_DIR": "wandb/cache", "WANDB_CONFIG_DIR": "wandb/config", "MPLCONFIGDIR": "matplotlib"}


@pytest.hookimpl(trylast=True)  # after the tmpdir plugin's pytest_configure made config._tmp_path_factory
def pytest_configure(config):
    factory = getattr(config, "_tmp_path_factory", None)  # what the tmp_path_factory fixture returns
    if factory is not None:
        root = str(factory.mktemp("env"))
    else:  # pytest -p no:tmpdir
        import shutil
        import tempfile

        root = tempfile.mkdtemp(prefix="splitsweep-tests-env-")
        config.add_cleanup(lambda: shutil.rmtree(root, ignore_errors=True))
    for var, sub in _CACHE_VARS.items():
        path = os.path.join(root, sub)
        os.makedirs(path, exist_ok=True)
        os.environ[var] = path


pytest_plugins = ["tests.slurm_cluster"]
