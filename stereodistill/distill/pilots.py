"""XGD component pilots and their IoU with the ground truth, in closed form where one exists (docs/METHOD.md §5.2).

A box ``(x, y, z, l, w, h, heading)`` (project frame) is split into components, either

- ``groups``: centre ``(x, y, z)``, size ``(l, w, h)``, heading (3 components), or
- ``scalars``: ``x``, ``y``, ``z``, ``l``, ``w``, ``h``, heading (7 components).

The **pilot** of component ``k`` is the GT box with only component ``k`` replaced by the teacher's value. The
heading is compared modulo pi (the direction classifier resolves the half-turn): the pilot's heading is the
teacher's heading or the teacher's + pi, whichever is nearer the GT's.

Every pilot differs from its GT in one component only, so its IoU with the GT has a closed form except for the
heading:

- centre shift ``(dx, dy, dz)``, same size and heading: with the BEV shift rotated into the GT's own frame,
  ``(dx', dy')``, the congruent footprints intersect in ``max(0, l - |dx'|) * max(0, w - |dy'|)``; 3D multiplies by
  ``max(0, h - |dz|)``; union = ``2 * size - intersection``;
- size change, same centre and heading: intersection = product of the element-wise minimum sizes;
- heading change, same centre and size: the exact rotated IoU (:func:`~stereodistill.geometry.iou.iou_bev`). With
  equal centre and height the vertical overlaps are the full height, so the 3D IoU equals the BEV IoU.

Pilot IoUs decide masks only: they are computed without gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stereodistill.distill.components import IOU_KINDS, IouKind, Split, components
from stereodistill.geometry.iou import iou_bev
from stereodistill.head.box_coder import CODE_SIZE, limit_period, wrap_heading


def component_code_mask(split: Split, device: torch.device | str | None = None) -> Tensor:
    """``(K, 7)`` bool: row ``k`` marks the codes of component ``k`` of ``split``."""
    comps = components(split)
    out = torch.zeros(len(comps), CODE_SIZE, dtype=torch.bool, device=device)
    for k, indices in enumerate(comps.values()):
        out[k, list(indices)] = True
    return out


def _check_iou_kind(iou: str) -> None:
    if iou not in IOU_KINDS:
        raise ValueError(f"iou must be one of {IOU_KINDS}, got {iou!r}")


def _check_pairs(teacher: Tensor, gt: Tensor) -> None:
    if teacher.dim() != 2 or teacher.shape[1] != CODE_SIZE or teacher.shape != gt.shape:
        raise ValueError(
            f"teacher and gt boxes must both have shape (P, 7), got {tuple(teacher.shape)} and {tuple(gt.shape)}"
        )


def heading_nearest_mod_pi(heading: Tensor, reference: Tensor) -> Tensor:
    """``heading`` or ``heading + pi``, whichever is nearer ``reference`` (element-wise), wrapped to ``[-pi, pi)``."""
    delta = limit_period(heading - reference, 0.5, math.pi)  # in [-pi/2, pi/2)
    return wrap_heading(reference + delta)


def _ratio(inter: Tensor, size_a: Tensor, size_b: Tensor) -> Tensor:
    union = size_a + size_b - inter
    positive = union > 0
    return torch.where(
        positive, inter / torch.where(positive, union, torch.ones_like(union)), torch.zeros_like(union)
    )


@torch.no_grad()
def centre_shift_iou(gt: Tensor, shift: Tensor, iou: IouKind = "3d") -> Tensor:
    """IoU ``(P,)`` of GT boxes ``(P, 7)`` with copies of themselves shifted by ``shift (P, 3)`` (project frame)."""
    _check_iou_kind(iou)
    l, w, h, heading = gt[:, 3].clamp(min=0), gt[:, 4].clamp(min=0), gt[:, 5].clamp(min=0), gt[:, 6]
    c, s = torch.cos(heading), torch.sin(heading)
    along = shift[:, 0] * c + shift[:, 1] * s
    across = -shift[:, 0] * s + shift[:, 1] * c
    inter = (l - along.abs()).clamp(min=0) * (w - across.abs()).clamp(min=0)
    size = l * w
    if iou == "3d":
        inter = inter * (h - shift[:, 2].abs()).clamp(min=0)
        size = size * h
    return _ratio(inter, size, size)


@torch.no_grad()
def size_change_iou(gt: Tensor, sizes: Tensor, iou: IouKind = "3d") -> Tensor:
    """IoU ``(P,)`` of GT boxes ``(P, 7)`` with copies of themselves resized to ``sizes (P, 3)`` (l, w, h)."""
    _check_iou_kind(iou)
    dims = 3 if iou == "3d" else 2
    a = gt[:, 3 : 3 + dims].clamp(min=0)
    b = sizes[:, :dims].clamp(min=0)
    inter = torch.minimum(a, b).prod(dim=1)
    return _ratio(inter, a.prod(dim=1), b.prod(dim=1))


@torch.no_grad()
def heading_change_iou(gt: Tensor, heading: Tensor) -> Tensor:
    """IoU ``(P,)`` (3D and BEV alike) of GT boxes ``(P, 7)`` with copies of themselves turned to ``heading (P,)``."""
    turned = torch.cat([gt[:, :6], heading[:, None].to(gt.dtype)], dim=1)
    return iou_bev(turned, gt, aligned=True)


@torch.no_grad()
def pilot_boxes(teacher: Tensor, gt: Tensor, split: Split = "groups") -> Tensor:
    """Explicit pilot boxes ``(P, K, 7)``: GT ``(P, 7)`` with component ``k`` taken from the teacher ``(P, 7)``.

    The heading pilot takes the teacher's heading modulo pi (the one nearer the GT's). For checks and plots;
    :func:`pilot_ious` does not build them.
    """
    _check_pairs(teacher, gt)
    teacher = teacher.detach()
    gt = gt.detach()
    resolved = torch.cat([teacher[:, :6], heading_nearest_mod_pi(teacher[:, 6], gt[:, 6])[:, None]], dim=1)
    comps = components(split)
    out = gt[:, None, :].repeat(1, len(comps), 1)
    for k, indices in enumerate(comps.values()):
        idx = list(indices)
        out[:, k, idx] = resolved[:, idx]
    return out


@torch.no_grad()
def pilot_ious(teacher: Tensor, gt: Tensor, split: Split = "groups", iou: IouKind = "3d") -> Tensor:
    """IoU ``(P, K)`` of each component pilot with its GT, for teacher and GT boxes ``(P, 7)``.

    Columns follow :func:`components` (``groups``: centre, size, heading; ``scalars``: x, y, z, l, w, h,
    heading). Closed forms for centre and size components; the exact rotated IoU for the heading.
    """
    _check_pairs(teacher, gt)
    _check_iou_kind(iou)
    teacher = teacher.detach()
    gt = gt.detach().to(teacher.dtype)
    shift = teacher[:, :3] - gt[:, :3]
    heading_iou = heading_change_iou(gt, heading_nearest_mod_pi(teacher[:, 6], gt[:, 6]))
    columns: list[Tensor] = []
    for indices in components(split).values():
        if indices == (6,):
            columns.append(heading_iou)
        elif indices[0] < 3:
            one_shift = torch.zeros_like(shift)
            one_shift[:, list(indices)] = shift[:, list(indices)]
            columns.append(centre_shift_iou(gt, one_shift, iou))
        else:
            sizes = gt[:, 3:6].clone()
            sizes[:, [i - 3 for i in indices]] = teacher[:, list(indices)]
            columns.append(size_change_iou(gt, sizes, iou))
    return torch.stack(columns, dim=1)
