"""Process group, device and FSDP2 wrapping: one code path for gloo on CPU and NCCL on GPUs."""
from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's value of a picklable object, on every rank (off the hot path: it pickles and syncs)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor


def allocated_threads(requested: int | None = None) -> int:
    """torch threads for one rank: `requested` (train.threads), else OMP_NUM_THREADS, else the CPUs SLURM gave
    the task (SLURM_CPUS_PER_TASK, or the job's CPUs on this node over its ranks here), else this process's
    CPU affinity over the ranks on this machine -- never more threads than the allocation: without cgroups
    (task/none) a job's affinity is the whole node, and jobs sharing it would oversubscribe its cores."""
    if requested:
        return int(requested)

    def count(var: str) -> int:
        value = os.environ.get(var, "")
        return int(value) if value.isdigit() else 0

    local_ranks = max(count("LOCAL_WORLD_SIZE") or count("SLURM_NTASKS_PER_NODE") or 1, 1)
    for var in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        if count(var) > 0:
            return count(var)
    if count("SLURM_CPUS_ON_NODE") > 0:
        return max(count("SLURM_CPUS_ON_NODE") // local_ranks, 1)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(cpus // local_ranks, 1)


def _submitit_env() -> None:
    """Inside a multi-task submitit job, export RANK/WORLD_SIZE/MASTER_* like torchrun does.

    MASTER_ADDR is the job's first node (SLURM_JOB_NODELIST), MASTER_PORT the job's MASTER_PORT if it has one,
    else derived from the job id. overwrite: sbatch hands the submitting shell's environment to the job, and a
    MASTER_ADDR or MASTER_PORT there made submitit refuse to export anything, so every task ran alone."""
    if "RANK" in os.environ or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    try:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    except Exception:  # not in a submitit job after all (e.g. a local debug run)
        return


def _ipv4_of(ifname: str) -> str | None:
    """The IPv4 address of a network interface (Linux SIOCGIFADDR), None when it has none."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            return socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname.encode()[:15]))[20:24])
        except OSError:
            return None


def _gloo_interface() -> None:
    """On several SLURM nodes, give gloo the interface this node reaches the job's other nodes through, when its
    own choice cannot work. gloo binds to the address this host's name resolves to; where that is a loopback
    address (Debian's `127.0.1.1 <hostname>` line in /etc/hosts, common on small clusters and cloud VMs), it
    offers that address to the other ranks, which fail with `Connection refused, remote=[127.0.1.1]` (or wait
    for the process group's timeout). Nothing changes when GLOO_SOCKET_IFNAME is set, on one node, or where the
    host name resolves to a real address (most clusters); NCCL chooses its own interfaces (NCCL_SOCKET_IFNAME)."""
    if os.environ.get("GLOO_SOCKET_IFNAME") or int(os.environ.get("SLURM_JOB_NUM_NODES", "1") or 1) < 2:
        return
    try:
        if not ipaddress.ip_address(socket.gethostbyname(socket.gethostname())).is_loopback:
            return
    except (OSError, ValueError):
        pass  # the name does not resolve: gloo would fall back to loopback as well
    try:  # another node of the job (`scontrol show hostnames` expands node[1-4]), and the route to it
        hosts = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], check=True,
                               capture_output=True, text=True, timeout=30).stdout.split()
        peer = next(h for h in hosts if h != os.environ.get("SLURMD_NODENAME"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((peer, 9))  # UDP: nothing is sent, the kernel only picks the route and source address
            source = s.getsockname()[0]
        name = next(n for _, n in socket.if_nameindex() if _ipv4_of(n) == source)
    except Exception:  # noqa: BLE001 (no scontrol, no peer, no route: leave gloo's choice, and its error)
        return
    os.environ["GLOO_SOCKET_IFNAME"] = name
    print(f"splitsweep: this host's name resolves to a loopback address; gloo uses {name} ({source}), the "
          f"interface to {peer} (set GLOO_SOCKET_IFNAME to choose another)", file=sys.stderr, flush=True)


def init_distributed(device: str = "auto") -> DistEnv:
    _submitit_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        _gloo_interface()
        # gloo serves CPU tensors (checkpoint barriers, object broadcasts) also on GPU jobs.
        dist.init_process_group("cpu:gloo,cuda:nccl" if use_cuda else "gloo")
    return DistEnv(rank, world_size, local_rank, dev)


def shard_model(model: torch.nn.Module, env: DistEnv, mp_policy=None) -> torch.nn.Module:
    """FSDP2 over a 1-D mesh: each block its own unit, then the root (embeddings, norm, head).

    Plain `fully_shard` averages gradients across ranks, so the loss is the local mean. `mp_policy`: a
    `MixedPrecisionPolicy` (None: fp32 throughout).
    """
    if not env.distributed:
        return model.to(env.device)
    model = model.to(env.device)
    mesh = init_device_mesh(env.device.type, (env.world_size,), mesh_dim_names=("dp_shard",))
    extra = {"mp_policy": mp_policy} if mp_policy is not None else {}
    for block in model.layers.values():
        fully_shard(block, mesh=mesh, **extra)
    fully_shard(model, mesh=mesh, **extra)
    return model
