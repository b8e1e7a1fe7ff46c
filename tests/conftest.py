import os


# W&B is exercised by its own tests; elsewhere it would only add seconds per job.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "2")

pytest_plugins = ["tests.slurm_cluster"]
