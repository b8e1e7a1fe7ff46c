"""The GPU benchmark cannot run here; what can be checked without a GPU is: it refuses loudly, and its
assets (corpus, tokenizer) and both loops' configs are valid for torchtitan's own Trainer pieces."""
import subprocess
import sys

from tests.helpers import REPO

SCRIPT = REPO / "benchmarks" / "bench_gpu.py"


def test_without_a_gpu_it_measures_nothing_and_says_so():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "llama_20m"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr and "|" not in proc.stdout


def test_prepare_only_builds_assets_torchtitan_can_read():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--prepare-only", "--sizes", "llama_20m,llama_1b",
                           "--vocab-size", "4096", "--seq-len", "512"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torchtitan flavor llama_1b registered" in proc.stdout
    assert "torchtitan's loader: a batch of (4, 512) tokens below 4096" in proc.stdout
