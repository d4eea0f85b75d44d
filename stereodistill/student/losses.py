"""The student's loss on one batch (docs/METHOD.md §5.5, §5.8, §4.8)::

    L = cls + r * loc + dir (GT detection losses, head/losses.py, weights student.train.loss_weights)
      + depth * LIGA's two-hot depth CE (student/depth.py)
      + r * distill.xgd.weight * XGD (or the whole-box baseline)  when distill.xgd.mode != off
      + distill.cld.weight * CLD                                    when distill.cld.mode != off
      + distill.imitation.weight * imitation                        when distill.imitation.mode == bev

with ``r`` = :func:`~stereodistill.student.schedule.regression_factor`: 1, or a linear ramp 0 -> 1 over
``student.train.regression_warmup_epochs``. The ``loc`` and ``xgd`` terms include ``r``; ``loc_codes`` do not;
the imitation term is not ramped.

XGD candidates are the student's positive anchors; their teacher boxes come from the cache view of the scene
the student sees (``hflip`` after a stereo flip), matched GT boxes from the assigner. CLD's teacher logits are
the cache's class logits, over the region ``distill.cld.region`` (a union of ``gt_boxes``, ``confident``, or
``all``). The imitation (LIGA-Stereo's, :mod:`stereodistill.distill.imitation`) regresses the student's adapted
BEV features onto the teacher's cached BEV features of the same view at the cells inside GT boxes, each channel
divided by the cache's normaliser. With all three off the student trains on GT alone and needs no cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from stereodistill.cache.reader import TeacherCache
from stereodistill.distill.cld import (
    CellLayout,
    CldOptions,
    all_cells,
    cld_loss,
    confident_cells,
)
from stereodistill.distill.imitation import imitation_loss
from stereodistill.distill.xgd import mode_options, xgd_loss
from stereodistill.head.assigner import AssignedTargets
from stereodistill.head.box_coder import CODE_NAMES
from stereodistill.head.cells import cells_in_boxes
from stereodistill.head.losses import detection_losses
from stereodistill.student.dataset import StudentSample, batch_inputs
from stereodistill.student.depth import batch_depth_targets, depth_loss
from stereodistill.student.model import StereoStudent

if TYPE_CHECKING:
    from stereodistill.distill.settings import DistillSettings
    from stereodistill.student.settings import StudentTrainSettings

LOSS_TERMS = ("total", "cls", "loc", "dir", "depth", "xgd", "cld", "imitation")
LOC_CODE_COLUMNS = tuple(f"loc_{name}" for name in CODE_NAMES)


@dataclass(frozen=True)
class StepLosses:
    """Loss terms of one batch (scalars; ``total`` carries the graph), ``loc`` per residual code (unweighted) and
    XGD's kept share per component."""

    terms: dict[str, Tensor]
    xgd_kept: dict[str, float]
    num_positive: int
    loc_codes: dict[str, Tensor]  # LOC_CODE_COLUMNS -> detached scalars


def student_losses(
    model: StereoStudent,
    samples: list[StudentSample],
    settings: StudentTrainSettings,
    distill: DistillSettings,
    device: torch.device,
    cache: TeacherCache | None = None,
    network: torch.nn.Module | None = None,
    regression_scale: float = 1.0,
    imitation_scale: Tensor | None = None,
) -> StepLosses:
    """Forward one batch and compute every loss term (see the module docstring).

    The anchor targets are the samples' own (assigned by :class:`~stereodistill.student.dataset.StudentFrames`),
    stacked and moved to ``device`` once.
    ``network`` runs the forward pass when given (``model`` wrapped in DistributedDataParallel).
    ``regression_scale`` (:func:`~stereodistill.student.schedule.regression_factor`) multiplies the ``loc`` and ``xgd`` terms.
    ``imitation_scale (Ct,)`` is the cache's per-channel normaliser of the teacher's features
    (``TeacherCache.feature_scale``), needed when ``distill.imitation`` is on.
    """
    grid = model.grid
    inputs = batch_inputs(
        [s.left for s in samples], [s.right for s in samples], [s.calib for s in samples], device
    )
    out = (network or model)(inputs.left, inputs.right, inputs.P2, inputs.baseline)
    head = model.head.flatten(out.head)
    gts = [s.ground_truth.to(device) for s in samples]
    targets = AssignedTargets.stack([s.targets for s in samples]).to(device, non_blocking=True)
    w = settings.loss_weights
    terms = detection_losses(
        head.cls,
        head.box,
        head.dir,
        targets.labels,
        targets.box_targets,
        targets.dir_targets,
        cls_weight=w["cls"],
        loc_weight=regression_scale * w["loc"],
        dir_weight=w["dir"],
    )
    loc_codes = dict(zip(LOC_CODE_COLUMNS, terms.pop("loc_codes").unbind(), strict=True))
    depth_target = batch_depth_targets([s.depth for s in samples], out.depth_logits, model.config)
    terms["depth"] = w["depth"] * depth_loss(out.depth_logits, depth_target, model.plane_depths)
    zero = terms["depth"].new_zeros(())
    terms["xgd"], terms["cld"], terms["imitation"] = zero, zero, zero
    positive = targets.positive
    kept: dict[str, float] = {}
    if distill.xgd.enabled:
        frame_of, anchor_of = torch.nonzero(positive, as_tuple=True)
        teacher_boxes = []
        for b, s in enumerate(samples):
            idx = anchor_of[frame_of == b]
            cached = s.teacher
            if cached is None:
                raise ValueError("distillation needs samples with the teacher's cached answer")
            if cache is not None:
                cache.require_covered(cached, idx)
            teacher_boxes.append(cached.boxes_at(idx))
        teacher = torch.cat(teacher_boxes).to(device=device, dtype=head.box.dtype)
        matched = targets.matched_gt[frame_of, anchor_of]
        gt_boxes = torch.cat([gts[b].boxes[matched[frame_of == b]] for b in range(len(samples))]).to(
            head.box.dtype
        )
        anchors = grid.shared_anchors(device)[anchor_of]
        class_ids = targets.labels[frame_of, anchor_of]
        codes = head.box[frame_of, anchor_of]
        x = distill.xgd
        options = mode_options(x)
        result = xgd_loss(
            codes,
            teacher,
            gt_boxes,
            anchors,
            class_ids,
            frame_of,
            len(samples),
            options,
            weight=regression_scale * x.weight,
        )
        terms["xgd"] = result.loss
        kept = {name: float(v) for name, v in zip(result.components, result.kept_share.tolist(), strict=True)}
    if distill.cld.enabled:
        layout = CellLayout.from_grid(grid)
        teacher_logits = torch.stack([s.teacher.cls_logits for s in samples]).to(device)  # type: ignore[union-attr]
        c = distill.cld
        region = torch.zeros(len(samples), layout.num_cells, dtype=torch.bool, device=device)
        if "all" in c.region:
            region |= all_cells(len(samples), layout, device)
        if "gt_boxes" in c.region:
            region |= cells_in_boxes(grid, [g.boxes for g in gts]).to(device)
        if "confident" in c.region:
            region |= confident_cells(teacher_logits, layout, c.confident_threshold)
        options = CldOptions(mode=c.mode, temperature=c.temperature)  # type: ignore[arg-type]
        terms["cld"] = cld_loss(head.cls, teacher_logits, layout, region, options, weight=c.weight).loss
    if distill.imitation.enabled:
        terms["imitation"] = _imitation_term(out.imitation_features, samples, imitation_scale, distill)
    terms["total"] = terms["total"] + terms["depth"] + terms["xgd"] + terms["cld"] + terms["imitation"]
    return StepLosses(terms, kept, int(positive.sum()), loc_codes)


def _imitation_term(
    features: Tensor | None, samples: list[StudentSample], scale: Tensor | None, distill: DistillSettings
) -> Tensor:
    """``distill.imitation.weight`` x the imitation loss of the adapted BEV features ``(B, Ct, ny, nx)``."""
    if features is None:
        raise ValueError("distill.imitation needs a student built with imitation_channels (the 1x1 adapter)")
    if scale is None:
        raise ValueError("distill.imitation needs imitation_scale, the cache's feature_scale()")
    cached = [s.teacher_features for s in samples]
    if any(c is None for c in cached):
        raise ValueError("distill.imitation needs samples with the teacher's cached features (read_features)")
    return imitation_loss(
        features,
        [c.cell for c in cached],  # type: ignore[union-attr]
        [c.bev for c in cached],  # type: ignore[union-attr]
        scale,
        weight=distill.imitation.weight,
    )
