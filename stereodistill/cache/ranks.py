"""The writer's view of torch.distributed: rank, world size, barrier and a broadcast of rank 0's outcome.

Under torchrun (``WORLD_SIZE`` > 1 in the environment) the default process group is started here if nobody
started it: ``nccl`` when CUDA is available, else ``gloo``; :meth:`Ranks.close` ends it again at the end of
the run. A single process needs no process group. With CUDA, rank ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``: a
``LOCAL_RANK`` beyond the visible devices (``--nproc_per_node 4`` on a two-GPU machine) is refused with a
message saying so, before any work (``CUDA_VISIBLE_DEVICES=`` runs the ranks on CPU with gloo instead).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stereodistill.errors import StereoDistillError


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    device: torch.device
    owns_group: bool = False  # the process group was started by current_ranks(): close() ends it

    def close(self) -> None:
        """End the process group this run started (torchrun then sees a clean exit of every rank)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

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
            visible = torch.cuda.device_count()
            if local_rank >= visible:
                raise StereoDistillError(
                    f"LOCAL_RANK {local_rank} needs cuda:{local_rank} but only {visible} CUDA device(s) are "
                    f"visible: start torchrun with --nproc_per_node {visible} or fewer per machine, or set "
                    "CUDA_VISIBLE_DEVICES= to run every rank on CPU (gloo)"
                )
            torch.cuda.set_device(device)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if cuda else "gloo")
        return Ranks(dist.get_rank(), dist.get_world_size(), device, owns)
    return Ranks(0, 1, device)
