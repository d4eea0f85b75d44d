"""The student's training under torchrun: which frames each rank trains on, and loss terms averaged over ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def epoch_indices(num_frames: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """The frames rank ``rank`` of ``world`` trains on in ``epoch``, in order.

    One permutation per ``(seed, epoch)``, shared by every rank; rank ``r`` takes positions ``r, r + N, ...``.
    When ``world`` does not divide ``num_frames`` the permutation is extended by its own first frames, so
    every rank takes the same number of steps (DDP needs that).
    """
    order = torch.randperm(
        num_frames, generator=torch.Generator().manual_seed(seed * 100003 + epoch)
    ).tolist()
    per_rank = -(-num_frames // world)
    order += order[: per_rank * world - num_frames]
    return order[rank::world]


def rank_mean(terms: dict[str, Tensor], world: int) -> dict[str, float]:
    """Loss terms as floats, averaged over the ranks (one all-reduce)."""
    values = torch.stack(list(terms.values())).float()
    if world > 1:
        dist.all_reduce(values)
        values /= world
    return dict(zip(terms, values.tolist(), strict=True))
