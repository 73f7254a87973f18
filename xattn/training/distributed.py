"""Data-parallel training under torchrun: one process per device (gloo on CPU, nccl on CUDA).

`xattn train` run as `torchrun --nproc_per_node=N -m xattn train ...` trains with
DistributedDataParallel: every global batch is split across the processes, the loss is
normalized by the global number of target tokens, so the updates equal a single process
training on the same global batch.
"""

from __future__ import annotations

import os

import torch

__all__ = ["all_reduce_sum", "barrier", "setup"]


def setup() -> tuple[int, int]:
    """(world size, rank); initializes the process group when launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.get_world_size(), dist.get_rank()


def all_reduce_sum(value: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def rank() -> int:
    return int(os.environ.get("RANK", "0"))
