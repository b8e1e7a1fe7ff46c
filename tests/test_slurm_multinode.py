"""Multi-node FSDP for real: a 2-node SLURM cluster on this machine (fixture `slurm_cluster_2nodes`,
tests/slurm_cluster.py; `start.sh` with SPLITSWEEP_SLURM_NODES=2), each node its own network namespace with
its own address, hostname and slurmd, one slurmctld in the root namespace.

A grid point launched the way a user launches on a cluster (`hydra/launcher=submitit_slurm`, nodes=2,
tasks_per_node=1) runs one rank per node: the ranks find each other through the job's first node (MASTER_ADDR
from SLURM_JOB_NODELIST, by submitit) over the nodes' veths, and train the same model as one process.
Also: gloo on nodes whose own name resolves to 127.0.1.1 (splitsweep picks the interface to the other node),
and ranks taken from SLURM even when the submitting shell had MASTER_ADDR/MASTER_PORT set (no cluster).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

from splitsweep.records import read_rows
from tests.helpers import REPO, TINY, TOKENS_PER_STEP, run_cli

SLURM = pytest.mark.slurm
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job function below, shipped by value

T = TOKENS_PER_STEP


def sweep_dir(root: Path) -> Path:
    return root / "sweeps" / "test"


def by_point(rows: list[dict]) -> dict:
    return {(r["pretrain_tokens"], r["special_tokens"], r["expert_domain"], r["eval_domain"]): r for r in rows}


@SLURM
def test_two_node_fsdp_job_through_the_launcher_matches_one_process(slurm_cluster_2nodes, tmp_path):
    cluster = slurm_cluster_2nodes
    assert cluster.nodes == ["node1", "node2"] and len(set(cluster.network_namespaces.values())) == 2
    # D = D' = 4 steps: a seed job, then the expert job continuing its checkpoint, both on 2 nodes x 1 task.
    point = [f"split.budget_tokens={8 * T}", "split.pretrain_fraction=0.5", "split.expert_domain=d1"]
    two, one = tmp_path / "two_nodes", tmp_path / "one_process"
    run_cli(one, *TINY, *point, env={"OMP_NUM_THREADS": "1"})
    launcher = ["hydra/launcher=submitit_slurm", f"hydra.launcher.partition={cluster.partition}",
                "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=1", "hydra.launcher.cpus_per_task=1",
                "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]
    started = time.monotonic()
    try:
        run_cli(two, "-m", *launcher, "train.threads=1", "report.enabled=false", *TINY, *point,
                env=cluster.env, timeout=300)
    finally:  # nothing of this test stays queued, whatever happened
        launches = sweep_dir(two) / "launches.jsonl"
        entries = [json.loads(line) for line in launches.read_text().splitlines()] if launches.exists() else []
        jobs = [p["job_id"] for e in entries for p in e["points"] if p.get("job_id")]
        jobs += [s["job_id"] for e in entries for s in e.get("seeds", [])]
        for job_id in jobs:
            cluster.run("scancel", str(job_id), check=False)
    wall = time.monotonic() - started

    # Both jobs (seed, expert) ran one task on each node: node1 (rank 0, MASTER_ADDR) and node2 (rank 1).
    (launch,) = entries
    assert len(launch["seeds"]) == 1 and len(jobs) == 2
    for job_id in jobs:
        out = cluster.run("sacct", "-X", "-n", "-P", "-j", str(job_id), "-o", "State,NNodes,NodeList").stdout
        assert out.strip().splitlines()[-1] == "COMPLETED|2|node[1-2]", out
    folder = Path(launch["points"][0]["folder"])
    starts = {p.name: p.read_text().splitlines()[0] for p in folder.glob("*_log.out")}
    assert len(starts) == 2, sorted(starts)
    assert any("hostname=node1" in s and "global_rank=0(2)" in s and "node=0(2)" in s for s in starts.values()), starts
    assert any("hostname=node2" in s and "global_rank=1(2)" in s and "node=1(2)" in s for s in starts.values()), starts

    # One model, sharded over the nodes: one DCP shard per rank, rank 0 alone recorded, same losses as 1 process.
    (run_dir,) = (sweep_dir(two) / "runs").iterdir()
    assert sorted(p.name for p in (run_dir / "final").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    rows, ref = by_point(read_rows(sweep_dir(two))), by_point(read_rows(sweep_dir(one)))
    assert sorted(rows) == sorted(ref) and len(rows) == 5
    worst = 0.0
    for key, row in rows.items():
        assert row["run_id"] == ref[key]["run_id"]
        # ranks reduce gradients in another order than one process sums them: ~1e-7 here after 8 AdamW steps
        assert row["eval_loss"] == pytest.approx(ref[key]["eval_loss"], rel=1e-4), key
        worst = max(worst, abs(row["eval_loss"] - ref[key]["eval_loss"]) / ref[key]["eval_loss"])
    print(f"\n2-node FSDP sweep (seed + expert job, 2 nodes x 1 task each): {wall:.1f}s wall; eval losses "
          + ", ".join(f"{k[3]} {rows[k]['eval_loss']:.6f}/{ref[k]['eval_loss']:.6f}" for k in sorted(rows))
          + f" (2 nodes/1 process); max relative difference {worst:.1e}")


def _gloo_with_loopback_hostname(addresses: dict[str, str], folder: str) -> dict:
    """One task of a 2-node job: join the job's process group through splitsweep's own path (init_distributed,
    in a child process) on a node whose /etc/hosts maps its own name to 127.0.1.1, as Debian writes it."""
    import socket

    me = socket.gethostname()
    hosts = Path(folder) / f"hosts.{me}"
    hosts.write_text("127.0.0.1 localhost\n" + f"127.0.1.1 {me}\n"
                     + "".join(f"{addr} {node}\n" for node, addr in addresses.items() if node != me))
    code = ("import os, torch, torch.distributed as dist\n"
            "from splitsweep.distributed import init_distributed\n"
            "env = init_distributed('cpu')\n"
            "t = torch.tensor([float(env.rank + 1)]); dist.all_reduce(t)\n"
            "print('RESULT', env.rank, t.item(), os.environ.get('GLOO_SOCKET_IFNAME'), flush=True)\n"
            "dist.destroy_process_group()\n")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           'mount --bind "$0" /etc/hosts && exec "$1" -c "$2"', str(hosts), sys.executable, code],
                          capture_output=True, text=True, timeout=240)
    result = [line.split() for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    return {"host": me, "netns": os.readlink("/proc/self/ns/net"), "returncode": proc.returncode,
            "result": result[0][1:] if result else None, "stderr": proc.stderr[-3000:]}


@SLURM
def test_gloo_finds_the_nodes_interface_when_the_hostname_is_loopback(slurm_cluster_2nodes, tmp_path):
    """gloo binds to the address the host name resolves to; 127.0.1.1 would be offered to the other node, which
    cannot reach it. splitsweep then sets GLOO_SOCKET_IFNAME to the interface to the job's other node."""
    cluster = slurm_cluster_2nodes
    ex = cluster.executor(tmp_path / "submitit", nodes=2, tasks_per_node=1, mem_gb=1, timeout_min=5)
    job = ex.submit(_gloo_with_loopback_hostname, cluster.addresses, str(tmp_path))
    try:
        results = job.results()
    finally:
        cluster.run("scancel", str(job.job_id), check=False)
    assert [r["host"] for r in results] == ["node1", "node2"]
    assert results[0]["netns"] != results[1]["netns"]  # two network stacks: no shared loopback
    for r in results:
        assert r["returncode"] == 0, r["stderr"]
        assert "resolves to a loopback address; gloo uses eth0" in r["stderr"], r["stderr"]
    assert [r["result"] for r in results] == [["0", "3.0", "eth0"], ["1", "3.0", "eth0"]]



def test_ranks_come_from_slurm_even_when_the_submitting_shell_set_master_vars():
    """sbatch hands the submitting shell's environment to the job: a MASTER_ADDR/MASTER_PORT there must not make
    every task a world of one (submitit refuses to export over them unless told to overwrite). MASTER_ADDR is
    the job's first node; a MASTER_PORT the job has is kept. No cluster needed: the task's SLURM variables."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(REPO),
           "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_NODEID": "1",
           "MASTER_ADDR": "login-node", "MASTER_PORT": "29511"}
    code = ("import json, os\nfrom splitsweep.distributed import _submitit_env\n_submitit_env()\n"
            "print(json.dumps({k: os.environ.get(k) for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', "
            "'MASTER_PORT')}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
                                                       "MASTER_ADDR": "node1", "MASTER_PORT": "29511"}
