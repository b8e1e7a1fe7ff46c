"""Process group, device and FSDP2 wrapping: one code path for gloo on CPU and NCCL on GPUs."""
from __future__ import annotations

import os
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
    """Inside a multi-task submitit job, export RANK/WORLD_SIZE/MASTER_* like torchrun does."""
    if "RANK" in os.environ or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    try:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    except Exception:  # not in a submitit job after all (e.g. a local debug run)
        return


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
