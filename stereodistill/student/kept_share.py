"""How much of the teacher XGD keeps, per class and component, against the whole-box rule, over a cached split.

For every frame of a prepared split and one cache view, the candidates are the student's positive anchors (the
assigner's targets on the view's ground truth, as :class:`~stereodistill.student.dataset.StudentFrames` assigns
them), their teacher boxes are the cache's boxes of those anchors and their GT the assigner's matched boxes, as
:func:`~stereodistill.student.losses.student_losses` gathers them. The keep decisions are
:func:`~stereodistill.distill.xgd.xgd_loss`'s own (``DistillResult.kept``) under :class:`XgdOptions` and
:class:`WholeBoxOptions` built from ``distill.xgd`` the way the student's loss builds them; the loss value is
not used.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from stereodistill.cache.reader import CachedFrame
from stereodistill.data.prepared import PreparedSplit
from stereodistill.distill.settings import XgdSettings
from stereodistill.distill.xgd import whole_box_options, xgd_loss, xgd_options
from stereodistill.geometry.views import IDENTITY, view_ground_truth
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import TargetAssigner, ground_truth_from_labels
from stereodistill.head.box_coder import CODE_SIZE


class CacheReader(Protocol):
    """What is read from a teacher cache (:class:`~stereodistill.cache.reader.TeacherCache` is one)."""

    def read(self, frame: int | str, view: str = IDENTITY) -> CachedFrame: ...

    def require_covered(self, cached: CachedFrame, anchor_index: Tensor) -> None: ...


@dataclass(frozen=True)
class Candidates:
    """One frame's XGD candidates: teacher and matched GT boxes ``(P, 7)`` float32 (project frame), grid class
    ids ``(P,)`` long and anchor indices ``(P,)`` long (grid anchor order)."""

    teacher: Tensor
    gt: Tensor
    class_ids: Tensor
    anchor_index: Tensor


@dataclass(frozen=True)
class KeptCounts:
    """Counts per grid class ``c``: ``positives (C,)``; ``xgd (C, K)`` positives whose component ``k`` XGD keeps;
    ``xgd_every (C,)`` positives with every component kept; ``whole_box (C,)`` positives the whole-box rule keeps."""

    class_names: tuple[str, ...]
    components: tuple[str, ...]
    positives: np.ndarray
    xgd: np.ndarray
    xgd_every: np.ndarray
    whole_box: np.ndarray

    def shares(self) -> dict:
        """Per class and ``"all"``: ``{"positives": n, "xgd": {component: share}, "xgd_every_component": share,
        "whole_box": share}`` (shares in [0, 1], None without positives)."""
        rows = {name: c for c, name in enumerate(self.class_names)}
        out = {}
        for name, select in [*((n, [c]) for n, c in rows.items()), ("all", list(rows.values()))]:
            n = int(self.positives[select].sum())

            def share(count: np.ndarray, n: int = n) -> float | None:
                return None if n == 0 else float(count.sum()) / n

            out[name] = {
                "positives": n,
                "xgd": {k: share(self.xgd[select, i]) for i, k in enumerate(self.components)},
                "xgd_every_component": share(self.xgd_every[select]),
                "whole_box": share(self.whole_box[select]),
            }
        return out


def frame_candidates(
    split: PreparedSplit, index: int, cache: CacheReader, assigner: TargetAssigner, view: str = IDENTITY
) -> Candidates:
    """The positive anchors of frame ``index`` seen through ``view`` with their teacher and GT boxes."""
    boxes, names = view_ground_truth(split.labels(index), view)
    ground_truth = ground_truth_from_labels(names, torch.from_numpy(boxes.astype(np.float32)), assigner.grid)
    targets = assigner.assign_frame(ground_truth)
    anchor_index = torch.nonzero(targets.positive, as_tuple=True)[0]
    cached = cache.read(split.frame_ids[index], view)
    cache.require_covered(cached, anchor_index)
    return Candidates(
        teacher=cached.boxes_at(anchor_index).to(torch.float32),
        gt=ground_truth.boxes[targets.matched_gt[anchor_index]].to(torch.float32),
        class_ids=targets.labels[anchor_index],
        anchor_index=anchor_index,
    )


def kept_masks(
    candidates: Candidates, anchors: Tensor, settings: XgdSettings
) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """``xgd_loss``'s keep decisions for ``candidates``: XGD ``(P, K)``, whole box ``(P,)`` and component names.

    ``anchors (N, 7)`` are the grid's anchors (the loss encodes its targets on them; the masks do not depend on it).
    """
    xgd, whole_box = xgd_options(settings), whole_box_options(settings)
    p = candidates.class_ids.shape[0]
    args = (
        torch.zeros(p, CODE_SIZE),
        candidates.teacher,
        candidates.gt,
        anchors[candidates.anchor_index],
        candidates.class_ids,
        torch.zeros(p, dtype=torch.long),
        1,
    )
    with torch.no_grad():
        by_component = xgd_loss(*args, xgd)
        by_box = xgd_loss(*args, whole_box)
    return by_component.kept, by_box.kept[:, 0], by_component.components


def xgd_kept_counts(
    split: PreparedSplit,
    cache: CacheReader,
    grid: AnchorGrid,
    settings: XgdSettings,
    view: str = IDENTITY,
    frames: Iterable[int] | None = None,
) -> KeptCounts:
    """Count the positives XGD keeps per component and the whole-box rule keeps, per grid class, over ``frames``
    (default: every frame of ``split``) of the cache ``view``."""
    assigner = TargetAssigner(grid)
    anchors = grid.shared_anchors("cpu")
    num_classes = grid.num_classes
    components: tuple[str, ...] = ()
    positives = np.zeros(num_classes, dtype=np.int64)
    whole = np.zeros(num_classes, dtype=np.int64)
    every = np.zeros(num_classes, dtype=np.int64)
    by_component: np.ndarray | None = None
    for index in range(len(split)) if frames is None else frames:
        candidates = frame_candidates(split, index, cache, assigner, view)
        kept, kept_whole, components = kept_masks(candidates, anchors, settings)
        classes = candidates.class_ids.numpy()
        if by_component is None:
            by_component = np.zeros((num_classes, len(components)), dtype=np.int64)
        positives += np.bincount(classes, minlength=num_classes)
        whole += np.bincount(classes, weights=kept_whole.numpy(), minlength=num_classes).astype(np.int64)
        every += np.bincount(classes, weights=kept.all(dim=1).numpy(), minlength=num_classes).astype(np.int64)
        for k in range(len(components)):
            by_component[:, k] += np.bincount(
                classes, weights=kept[:, k].numpy(), minlength=num_classes
            ).astype(np.int64)
    if by_component is None:
        raise ValueError("no frame to count")
    return KeptCounts(grid.class_names, components, positives, by_component, every, whole)


def format_kept_shares(counts: KeptCounts) -> str:
    """A table: per class, positives and the kept share (%) of each XGD component, of all of them, of the whole box."""
    shares = counts.shares()
    names = [*counts.components, "xgd:all", "whole-box"]
    lines = [f"{'class':<12}{'positives':>10}" + "".join(f"{n:>11}" for n in names)]
    for cls, row in shares.items():
        values = [*row["xgd"].values(), row["xgd_every_component"], row["whole_box"]]
        cells = "".join(f"{'-':>11}" if v is None else f"{100 * v:>10.2f}%" for v in values)
        lines.append(f"{cls:<12}{row['positives']:>10}{cells}")
    return "\n".join(lines)
