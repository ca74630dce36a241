"""One process or a `torchrun` job: the process's rank, world size and device, and metrics averaged over ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> Distributed:
    """Join the torchrun process group when launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Distributed(rank, world, local_rank, target)


def mean_over_ranks(values: torch.Tensor, env: Distributed) -> torch.Tensor:
    """Average a tensor of metrics over the DDP processes (identity in one process)."""
    values = values.detach().float().clone()
    if env.world > 1:
        dist.all_reduce(values)
        values /= env.world
    return values
