"""XGD (X-component Guided Distillation): the regression half of StereoDistill (docs/METHOD.md §5.2, §5.3, reconstruction).

Candidates are ``P`` anchors (the student's positives from target assignment), each with its anchor, matched GT
box, class and frame, the student's residual codes and the teacher's decoded box (project frame). Each box is
split into components (:mod:`stereodistill.distill.pilots`); component ``k`` of an anchor is **kept** when its
pilot (the GT with component ``k`` taken from the teacher) has ``IoU(pilot, GT) >= threshold[k, class]``. The
loss is the head's own regression loss, with the teacher as the target:

    target = encode_boxes(teacher_box, anchor)
    L = weight * mean_frames( sum_{a in frame} sum_{j kept} SmoothL1_beta(r^S_{a,j} - target_{a,j}) / max(1, n_frame) )

with the heading term as ``sin(r^S_theta - target_theta)`` (blind to a half-turn, like the GT loss) and
``n_frame`` the frame's number of candidate anchors. The teacher is a target: no gradient reaches it.

The **whole-box baseline** (:class:`WholeBoxOptions`, same loss) keeps all 7 codes of an anchor when
``IoU(teacher box, GT) >= threshold[class]`` and nothing otherwise.

Note: with ``iou="bev"`` a pure ``z`` pilot (``scalars`` split) always has IoU 1, so ``z`` is always kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stereodistill.distill.components import SPLITS, IouKind, Split, components
from stereodistill.distill.pilots import component_code_mask, pilot_ious
from stereodistill.distill.settings import DEFAULT_BETA, DEFAULT_THRESHOLDS, XgdSettings, threshold_classes
from stereodistill.geometry.iou import iou_3d, iou_bev
from stereodistill.head.box_coder import CODE_SIZE, encode_boxes
from stereodistill.head.losses import sin_difference, smooth_l1

# KITTI evaluation IoUs in the grid's usual class order (Car, Pedestrian, Cyclist).

# Per-class thresholds: one value per class for every component, or per component name (see pilots.components).
Thresholds = Sequence[float] | Tensor | Mapping[str, Sequence[float] | Tensor]


@dataclass(frozen=True)
class XgdOptions:
    """XGD variant. ``split``: ``groups`` | ``scalars``; ``iou``: ``3d`` | ``bev``; ``beta``: smooth-L1 beta.

    ``thresholds``: per-class IoU thresholds indexed by class id, either one sequence ``(C,)`` for all
    components, a tensor ``(C,)`` or ``(K, C)``, or a mapping component name -> ``(C,)`` naming every component
    of the split.
    """

    split: Split = "groups"
    iou: IouKind = "3d"
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    beta: float = DEFAULT_BETA

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"XgdOptions.split must be one of {SPLITS}, got {self.split!r}")
        if self.iou not in ("3d", "bev"):
            raise ValueError(f"XgdOptions.iou must be '3d' or 'bev', got {self.iou!r}")
        if not self.beta >= 0:
            raise ValueError(f"XgdOptions.beta must be >= 0, got {self.beta}")
        threshold_table(self.thresholds, self.split)  # raises on a malformed table


@dataclass(frozen=True)
class WholeBoxOptions:
    """The whole-box baseline: ``iou``: ``3d`` | ``bev``; ``thresholds (C,)`` per class; ``beta``: smooth-L1 beta."""

    iou: IouKind = "3d"
    thresholds: Sequence[float] | Tensor = DEFAULT_THRESHOLDS
    beta: float = DEFAULT_BETA


def xgd_options(settings: XgdSettings) -> XgdOptions:
    """XGD's options from ``distill.xgd``, whatever its ``mode``."""
    return XgdOptions(
        split=settings.split,  # type: ignore[arg-type]
        iou=settings.iou,  # type: ignore[arg-type]
        thresholds=settings.thresholds,
        beta=settings.beta,
    )


def whole_box_options(settings: XgdSettings) -> WholeBoxOptions:
    """The whole-box baseline's options from ``distill.xgd`` (one threshold per class), whatever its ``mode``."""
    if isinstance(settings.thresholds, Mapping):
        raise ValueError(
            "distill.xgd.thresholds: per-component thresholds have no whole-box counterpart; give one per class"
        )
    return WholeBoxOptions(iou=settings.iou, thresholds=settings.thresholds, beta=settings.beta)  # type: ignore[arg-type]


def mode_options(settings: XgdSettings) -> XgdOptions | WholeBoxOptions:
    """The options the student's loss uses: XGD's for ``mode: xgd``, the whole-box rule's for ``whole_box``."""
    return xgd_options(settings) if settings.mode == "xgd" else whole_box_options(settings)


@dataclass(frozen=True)
class DistillResult:
    """Outcome of a regression-distillation loss.

    - ``loss``: weighted scalar;
    - ``components``: component names (``("box",)`` for the whole-box baseline);
    - ``kept (P, K)`` bool: component ``k`` of candidate ``p`` was distilled;
    - ``kept_share (K,)``: fraction of candidates keeping each component (0 when ``P == 0``), for logging;
    - ``code_mask (P, 7)`` bool: the residual codes that entered the loss.
    """

    loss: Tensor
    components: tuple[str, ...]
    kept: Tensor
    kept_share: Tensor
    code_mask: Tensor


def threshold_table(thresholds: Thresholds, split: Split, device: torch.device | str | None = None) -> Tensor:
    """Thresholds as a ``(K, C)`` float64 table for the components of ``split`` (see :class:`XgdOptions`)."""
    threshold_classes(thresholds, split)  # raises on a malformed table
    names = list(components(split))
    if isinstance(thresholds, Mapping):
        table = torch.stack([torch.as_tensor(thresholds[n], dtype=torch.float64).reshape(-1) for n in names])
    else:
        table = torch.as_tensor(thresholds, dtype=torch.float64)
        if table.dim() == 1:
            table = table[None, :].expand(len(names), -1)
    return table.to(device)


def _class_thresholds(table: Tensor, class_ids: Tensor) -> Tensor:
    """``(P, K)`` thresholds of each candidate's class from a ``(K, C)`` table."""
    if class_ids.numel() and (int(class_ids.min()) < 0 or int(class_ids.max()) >= table.shape[1]):
        raise ValueError(
            f"class ids must lie in [0, {table.shape[1]}) (one threshold per class), got "
            f"[{int(class_ids.min())}, {int(class_ids.max())}]"
        )
    return table[:, class_ids.to(table.device).long()].T


def xgd_keep_mask(
    teacher_boxes: Tensor, gt_boxes: Tensor, class_ids: Tensor, options: XgdOptions | None = None
) -> Tensor:
    """``(P, K)`` bool: component ``k`` kept when ``IoU(pilot_k, GT) >= threshold[k, class]``.

    ``teacher_boxes``, ``gt_boxes`` ``(P, 7)`` (project frame); ``class_ids (P,)`` long.
    """
    options = options or XgdOptions()
    ious = pilot_ious(teacher_boxes, gt_boxes, options.split, options.iou)
    table = threshold_table(options.thresholds, options.split, ious.device)
    return ious.to(torch.float64) >= _class_thresholds(table, class_ids)


def whole_box_keep_mask(
    teacher_boxes: Tensor,
    gt_boxes: Tensor,
    class_ids: Tensor,
    iou: IouKind = "3d",
    thresholds: Sequence[float] | Tensor = DEFAULT_THRESHOLDS,
) -> Tensor:
    """``(P,)`` bool: ``IoU(teacher box, GT) >= thresholds[class]`` (exact rotated IoU, ``3d`` or ``bev``)."""
    if iou not in ("3d", "bev"):
        raise ValueError(f"iou must be '3d' or 'bev', got {iou!r}")
    table = torch.as_tensor(thresholds, dtype=torch.float64, device=teacher_boxes.device).reshape(1, -1)
    if teacher_boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=teacher_boxes.device)
    with torch.no_grad():
        overlap = (iou_3d if iou == "3d" else iou_bev)(
            teacher_boxes.detach(), gt_boxes.detach(), aligned=True
        )
    return overlap.to(torch.float64) >= _class_thresholds(table, class_ids)[:, 0]


def masked_code_loss(
    student_codes: Tensor,
    target_codes: Tensor,
    code_mask: Tensor,
    frame_index: Tensor,
    num_frames: int,
    *,
    beta: float = DEFAULT_BETA,
    frame_counts: Tensor | None = None,
) -> Tensor:
    """Unweighted scalar: smooth-L1 (sin difference on the heading) over ``code_mask``, per-frame normalised.

    ``student_codes``, ``target_codes`` ``(P, 7)`` (target detached here); ``code_mask (P, 7)`` bool;
    ``frame_index (P,)`` long in ``[0, num_frames)``. Each frame's sum is divided by ``frame_counts[b]``
    (default: its number of candidates), at least 1; the frames are averaged.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    frame_index = frame_index.long()
    if frame_index.numel() and (int(frame_index.min()) < 0 or int(frame_index.max()) >= num_frames):
        raise ValueError(
            f"frame_index must lie in [0, {num_frames}), got [{int(frame_index.min())}, {int(frame_index.max())}]"
        )
    if frame_counts is None:
        frame_counts = torch.bincount(frame_index, minlength=num_frames)
    elif frame_counts.shape != (num_frames,):
        raise ValueError(f"frame_counts must have shape ({num_frames},), got {tuple(frame_counts.shape)}")
    normaliser = frame_counts.to(device=student_codes.device, dtype=student_codes.dtype).clamp(min=1.0)
    pred, target = sin_difference(student_codes, target_codes.detach().to(student_codes.dtype))
    per_code = smooth_l1(pred - target, beta)
    # where() rather than a product: a non-finite target on a dropped code must not reach the loss or gradient.
    per_anchor = torch.where(code_mask, per_code, per_code.new_zeros(())).sum(dim=1)
    return (per_anchor / normaliser[frame_index]).sum() / num_frames


def _selection(
    teacher_boxes: Tensor, gt_boxes: Tensor, class_ids: Tensor, options: XgdOptions | WholeBoxOptions
) -> tuple[tuple[str, ...], Tensor, Tensor]:
    """The distilled part of each candidate: component names, ``kept (P, K)`` and ``code_mask (P, 7)`` bool."""
    if isinstance(options, WholeBoxOptions):
        kept = whole_box_keep_mask(teacher_boxes, gt_boxes, class_ids, options.iou, options.thresholds)
        return ("box",), kept[:, None], kept[:, None].expand(-1, CODE_SIZE)
    kept = xgd_keep_mask(teacher_boxes, gt_boxes, class_ids, options)
    # (P, K) x (K, 7) -> (P, 7): a code is distilled when its component is kept.
    code_mask = (kept[:, :, None] & component_code_mask(options.split, kept.device)[None]).any(dim=1)
    return tuple(components(options.split)), kept, code_mask


def xgd_loss(
    student_codes: Tensor,
    teacher_boxes: Tensor,
    gt_boxes: Tensor,
    anchors: Tensor,
    class_ids: Tensor,
    frame_index: Tensor,
    num_frames: int,
    options: XgdOptions | WholeBoxOptions | None = None,
    *,
    weight: float = 1.0,
    frame_counts: Tensor | None = None,
) -> DistillResult:
    """XGD loss on ``P`` candidate anchors (see the module docstring), or with :class:`WholeBoxOptions` the
    whole-box baseline (single component ``"box"``).

    ``student_codes (P, 7)``: the student's residual codes; ``teacher_boxes (P, 7)``: the teacher's decoded boxes
    (project frame); ``gt_boxes (P, 7)``: matched GT boxes; ``anchors (P, 7)``; ``class_ids (P,)`` long;
    ``frame_index (P,)`` long in ``[0, num_frames)``; optional ``frame_counts (num_frames,)`` replaces the
    per-frame candidate counts as normaliser (e.g. the frame's positive count).
    """
    p = student_codes.shape[0]
    for name, t in (
        ("student_codes", student_codes),
        ("teacher_boxes", teacher_boxes),
        ("gt_boxes", gt_boxes),
        ("anchors", anchors),
    ):
        if t.shape != (p, CODE_SIZE):
            raise ValueError(f"{name} must have shape (P, 7) with P = {p}, got {tuple(t.shape)}")
    for name, t in (("class_ids", class_ids), ("frame_index", frame_index)):
        if t.shape != (p,):
            raise ValueError(f"{name} must have shape (P,) with P = {p}, got {tuple(t.shape)}")
    options = options or XgdOptions()
    names, kept, code_mask = _selection(teacher_boxes, gt_boxes, class_ids, options)
    target = encode_boxes(teacher_boxes.detach(), anchors.detach().to(teacher_boxes.dtype))
    loss = masked_code_loss(
        student_codes,
        target,
        code_mask,
        frame_index,
        num_frames,
        beta=options.beta,
        frame_counts=frame_counts,
    )
    share = (
        kept.to(torch.float32).mean(dim=0)
        if kept.shape[0]
        else torch.zeros(kept.shape[1], device=kept.device)
    )
    return DistillResult(
        loss=weight * loss, components=names, kept=kept, kept_share=share, code_mask=code_mask
    )
