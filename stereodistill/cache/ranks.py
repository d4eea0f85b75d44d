"""The writer's view of torch.distributed: rank, world size, barrier and a broadcast of rank 0's outcome.

Under torchrun (``WORLD_SIZE`` > 1 in the environment) the default process group is started here if nobody
started it: ``nccl`` when CUDA is available, else ``gloo``. A single process needs no process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    device: torch.device

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast_from_zero(self, value: object) -> object:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: object) -> list[object]:
        """Every rank's ``value`` (in rank order) on every rank."""
        if self.world == 1:
            return [value]
        out: list[object] = [None] * self.world
        dist.all_gather_object(out, value)
        return out


def current_ranks() -> Ranks:
    """This process's rank and device; starts the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if world > 1:
        if cuda:
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        return Ranks(dist.get_rank(), dist.get_world_size(), device)
    return Ranks(0, 1, device)
