"""``stereodistill cache stats``: what the cached teacher says, over a whole store, for one view.

Definitions (``C`` grid classes; an anchor of class ``c`` is one of the ``R`` class-``c`` anchors of a cell):

- **class score** of an anchor of class ``c``: ``sigmoid(logit_c)``, its own class's logit (what the focal loss
  trains that anchor to predict). The per-class **histogram** counts the class scores of every class-``c``
  anchor of every frame in :data:`HISTOGRAM_EDGES` bins (``[a, b)``, the last bin ``[0.9, 1]``).
- **anchors above** ``t`` per frame: per class, the class-``c`` anchors with class score ``>= t``; for ``all``,
  every anchor whose **anchor score** ``max_c sigmoid(logit_c)`` (what ``decode_frame`` thresholds) is ``>= t``.
  Reported as mean and max over frames (and the frame of the max).
- **positives**: the anchors the grid's :class:`~stereodistill.head.assigner.TargetAssigner` makes positive for
  the split's labels (mirrored ``y -> -y`` for ``hflip``); the cache must hold a box for each (it raises
  otherwise). For each positive, with its matched GT box and the teacher's cached box:
  ``whole_box``: ``IoU(teacher, GT) >= threshold[class]`` (the whole-box baseline's keep rule); per component
  (``groups``: centre, size, heading; ``scalars``: x .. heading): the XGD pilot (the GT with that component
  taken from the teacher) has ``IoU(pilot, GT) >= threshold[class]``; ``all_components``: every pilot
  passes; ``any_component``: at least one passes (XGD distils something). Shares are of the class's positives
  (``None`` without positives). IoU is 3D (or BEV) rotated IoU; thresholds default to KITTI's 0.7 / 0.5 / 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from stereodistill.cache.reader import CachedFrame, TeacherCache
from stereodistill.data.prepared import PreparedSplit
from stereodistill.distill.components import IOU_KINDS, SPLITS, IouKind, Split, components
from stereodistill.distill.xgd import XgdOptions, whole_box_keep_mask, xgd_keep_mask
from stereodistill.errors import InputError
from stereodistill.geometry.views import IDENTITY, view_ground_truth
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import TargetAssigner, ground_truth_from_labels

SCORE_THRESHOLDS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7)
HISTOGRAM_EDGES: tuple[float, ...] = (
    0.0,
    0.001,
    0.01,
    0.05,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    1.0,
)
KITTI_IOU_THRESHOLDS: dict[str, float] = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
ALL = "all"


@dataclass(frozen=True)
class StatsOptions:
    """What ``cache stats`` measures. ``iou_thresholds``: class name -> IoU threshold (every grid class needed);
    ``max_frames``: only the first frames of the store (``None``: all)."""

    view: str = IDENTITY
    score_thresholds: tuple[float, ...] = SCORE_THRESHOLDS
    histogram_edges: tuple[float, ...] = HISTOGRAM_EDGES
    iou_thresholds: Mapping[str, float] = field(default_factory=lambda: dict(KITTI_IOU_THRESHOLDS))
    split: Split = "groups"
    iou: IouKind = "3d"
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.iou not in IOU_KINDS:
            raise ValueError(f"iou must be one of {IOU_KINDS}, got {self.iou!r}")
        edges = np.asarray(self.histogram_edges)
        if edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"histogram_edges must increase, got {self.histogram_edges}")

    def class_thresholds(self, grid: AnchorGrid) -> tuple[float, ...]:
        """The IoU threshold of every grid class, in class-id order; :class:`InputError` names a missing one."""
        missing = [name for name in grid.class_names if name not in self.iou_thresholds]
        if missing:
            raise InputError(
                f"no IoU threshold for class(es) {missing} (known: {sorted(self.iou_thresholds)}); "
                "pass --threshold NAME=VALUE"
            )
        return tuple(float(self.iou_thresholds[name]) for name in grid.class_names)


@dataclass(frozen=True)
class FrameStats:
    """Counts of one frame and view (``C`` classes, ``T`` score thresholds, ``B`` bins, ``K`` components).

    ``histogram (C, B)``; ``above (C + 1, T)`` (last row: all anchors by anchor score); ``positives (C,)``;
    ``whole_box (C,)``, ``components (C, K)``, ``all_components (C,)``, ``any_component (C,)``: positives passing.
    """

    histogram: np.ndarray
    above: np.ndarray
    positives: np.ndarray
    whole_box: np.ndarray
    components: np.ndarray
    all_components: np.ndarray
    any_component: np.ndarray


def class_scores(cls_logits: Tensor, grid: AnchorGrid) -> Tensor:
    """``(C, ny * nx * R)``: row ``c`` holds ``sigmoid(logit_c)`` of every class-``c`` anchor (grid order)."""
    c, r = grid.num_classes, grid.num_rotations
    per_cell = cls_logits.float().reshape(grid.ny * grid.nx, c, r, c)
    own = torch.diagonal(per_cell, dim1=1, dim2=3)  # (cells, R, C): anchor class == logit class
    return torch.sigmoid(own.permute(2, 0, 1).reshape(c, -1))


def positive_pairs(
    cache: TeacherCache, cached: CachedFrame, gt_boxes: Tensor, gt_classes: Tensor, assigner: TargetAssigner
) -> tuple[Tensor, Tensor, Tensor]:
    """The frame's positives: class ids ``(P,)``, teacher boxes ``(P, 7)`` from the cache and matched GT ``(P, 7)``.

    ``gt_boxes (G, 7)``, ``gt_classes (G,)`` as seen in the cached view. Ignore and DontCare regions only turn
    negatives into ignored anchors, so they do not change the positives and are not needed here.
    Raises :class:`InputError` if a positive has no cached box.
    """
    targets = assigner.assign(gt_boxes, gt_classes)
    anchors = torch.nonzero(targets.positive).flatten()
    cache.require_covered(cached, anchors)
    slots = torch.searchsorted(cached.covered_index, anchors)
    teacher = cached.boxes[slots].float()
    gt = gt_boxes.float()[targets.matched_gt[anchors]]
    return targets.labels[anchors], teacher, gt


def frame_stats(
    cache: TeacherCache,
    cached: CachedFrame,
    gt_boxes: Tensor,
    gt_classes: Tensor,
    assigner: TargetAssigner,
    options: StatsOptions,
) -> FrameStats:
    """:class:`FrameStats` of one cached frame and view against its GT (as seen in that view)."""
    grid = assigner.grid
    num_classes = grid.num_classes
    scores = class_scores(cached.cls_logits, grid).numpy()
    anchor_score = torch.sigmoid(cached.cls_logits.float().max(dim=1).values).numpy()
    edges = np.asarray(options.histogram_edges)
    histogram = np.stack([np.histogram(scores[c], bins=edges)[0] for c in range(num_classes)])
    thresholds = np.asarray(options.score_thresholds, dtype=np.float32)
    above = np.concatenate(
        [
            (scores[:, :, None] >= thresholds[None, None, :]).sum(axis=1),
            (anchor_score[:, None] >= thresholds[None, :]).sum(axis=0)[None, :],
        ]
    )
    classes, teacher, gt = positive_pairs(cache, cached, gt_boxes, gt_classes, assigner)
    iou_thresholds = options.class_thresholds(grid)
    whole = whole_box_keep_mask(teacher, gt, classes, options.iou, iou_thresholds)
    xgd = xgd_keep_mask(teacher, gt, classes, XgdOptions(options.split, options.iou, iou_thresholds))

    def per_class(mask: Tensor) -> np.ndarray:
        """``(P, ...)`` bool -> ``(C, ...)`` counts of True per positive's class."""
        out = np.zeros((num_classes, *mask.shape[1:]), dtype=np.int64)
        np.add.at(out, classes.numpy(), mask.numpy().astype(np.int64))
        return out

    return FrameStats(
        histogram=histogram.astype(np.int64),
        above=above.astype(np.int64),
        positives=np.bincount(classes.numpy(), minlength=num_classes).astype(np.int64),
        whole_box=per_class(whole),
        components=per_class(xgd),
        all_components=per_class(xgd.all(dim=1)),
        any_component=per_class(xgd.any(dim=1)),
    )


def _share(count: int, total: int) -> float | None:
    return None if total == 0 else count / total


def _counted(count: int, total: int) -> dict[str, Any]:
    return {"count": int(count), "share": _share(int(count), int(total))}


def cache_stats(
    store: str | Path, prepared: str | Path, options: StatsOptions = StatsOptions(), progress: bool = True
) -> dict[str, Any]:
    """JSON-able statistics of the cache ``store`` for one view against the prepared split's labels.

    Frames are the store's (the first ``options.max_frames``), looked up in ``prepared`` by id; a store frame
    missing from the split raises :class:`InputError` naming it, as do an unknown view and missing IoU thresholds.
    """
    cache = TeacherCache(store)
    split = PreparedSplit(prepared)
    grid = cache.grid
    if options.view not in cache.views:
        raise InputError(f"view {options.view!r} is not in the teacher cache (it holds {cache.views})", store)
    iou_thresholds = options.class_thresholds(grid)
    frame_ids = cache.frame_ids[: options.max_frames] if options.max_frames is not None else cache.frame_ids
    split_index = {frame_id: i for i, frame_id in enumerate(split.frame_ids)}
    missing = [f for f in frame_ids if f not in split_index]
    if missing:
        raise InputError(
            f"{len(missing)} frame(s) of the teacher cache are not in the prepared split (first: {missing[:3]})",
            prepared,
        )
    assigner = TargetAssigner(grid)
    per_frame: list[FrameStats] = []
    bar = tqdm(
        frame_ids, desc=f"cache stats ({options.view})", unit="frame", disable=None if progress else True
    )
    for frame_id in bar:
        cached = cache.read(frame_id, options.view)
        boxes, names = view_ground_truth(split.labels(split_index[frame_id]), options.view)
        gt = ground_truth_from_labels(names, boxes, grid)
        per_frame.append(frame_stats(cache, cached, gt.boxes, gt.classes, assigner, options))
    return _summarise(per_frame, frame_ids, grid, iou_thresholds, options, cache, split)


def _summarise(
    per_frame: Sequence[FrameStats],
    frame_ids: Sequence[str],
    grid: AnchorGrid,
    iou_thresholds: Sequence[float],
    options: StatsOptions,
    cache: TeacherCache,
    split: PreparedSplit,
) -> dict[str, Any]:
    names = list(grid.class_names)
    comp_names = list(components(options.split))
    zero = _zero(grid, options)

    def total(attr: str) -> np.ndarray:
        return sum((getattr(f, attr) for f in per_frame), getattr(zero, attr))

    above_out: dict[str, Any] = {}
    if per_frame:
        above = np.stack([f.above for f in per_frame])  # (F, C + 1, T)
        for row, name in enumerate([*names, ALL]):
            above_out[name] = {
                f"{t:g}": {
                    "mean": float(above[:, row, k].mean()),
                    "max": int(above[:, row, k].max()),
                    "max_frame": frame_ids[int(above[:, row, k].argmax())],
                }
                for k, t in enumerate(options.score_thresholds)
            }
    histogram = total("histogram")
    positives, whole, comps = total("positives"), total("whole_box"), total("components")
    all_comps, any_comp = total("all_components"), total("any_component")

    def positive_block(n: int, w: int, per_comp: np.ndarray, every: int, some: int) -> dict[str, Any]:
        return {
            "positives": int(n),
            "whole_box": _counted(w, n),
            "components": {name: _counted(per_comp[k], n) for k, name in enumerate(comp_names)},
            "all_components": _counted(every, n),
            "any_component": _counted(some, n),
        }

    classes_out = {
        name: {
            "iou_threshold": iou_thresholds[c],
            **positive_block(positives[c], whole[c], comps[c], all_comps[c], any_comp[c]),
        }
        for c, name in enumerate(names)
    }
    return {
        "store": str(cache.path),
        "prepared": str(split.path),
        "view": options.view,
        "frames": len(per_frame),
        "classes": names,
        "definitions": {
            "class_score": "sigmoid of an anchor's own-class logit, over the anchors of that class",
            "anchor_score": "max over classes of sigmoid(logit), over every anchor (what decoding thresholds)",
            "anchors_above": "per frame: anchors with score >= threshold (class rows: class score; "
            "'all': anchor score); mean and max over frames",
            "whole_box": "positives with IoU(teacher box, matched GT) >= the class threshold",
            "components": "positives whose XGD pilot (GT with that component from the teacher) has "
            "IoU(pilot, GT) >= the class threshold",
        },
        "score_histogram": {
            "edges": [float(e) for e in options.histogram_edges],
            "counts": {name: [int(v) for v in histogram[c]] for c, name in enumerate(names)},
            "anchors_per_frame": {name: grid.ny * grid.nx * grid.num_rotations for name in names},
        },
        "anchors_above": {"thresholds": [float(t) for t in options.score_thresholds], **above_out},
        "positives": {
            "iou": options.iou,
            "split": options.split,
            "component_names": comp_names,
            "classes": classes_out,
            ALL: positive_block(
                positives.sum(), whole.sum(), comps.sum(axis=0), all_comps.sum(), any_comp.sum()
            ),
        },
    }


def _zero(grid: AnchorGrid, options: StatsOptions) -> FrameStats:
    c, k = grid.num_classes, len(components(options.split))
    t, b = len(options.score_thresholds), len(options.histogram_edges) - 1
    return FrameStats(
        histogram=np.zeros((c, b), np.int64),
        above=np.zeros((c + 1, t), np.int64),
        positives=np.zeros(c, np.int64),
        whole_box=np.zeros(c, np.int64),
        components=np.zeros((c, k), np.int64),
        all_components=np.zeros(c, np.int64),
        any_component=np.zeros(c, np.int64),
    )


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:5.1f}%"


def format_stats(stats: dict[str, Any]) -> str:
    """A readable table of :func:`cache_stats`' result."""
    names = stats["classes"]
    lines = [
        f"{stats['store']} view {stats['view']}: {stats['frames']} frames, labels from {stats['prepared']}"
    ]
    hist = stats["score_histogram"]
    edges = hist["edges"]
    lines.append("")
    lines.append("class-score histogram (share of the class's anchors):")
    lines.append(f"  {'bin':>13} " + " ".join(f"{n:>11}" for n in names))
    totals = {n: max(1, sum(hist["counts"][n])) for n in names}
    for b in range(len(edges) - 1):
        cells = " ".join(f"{hist['counts'][n][b] / totals[n]:11.2e}" for n in names)
        lines.append(f"  [{edges[b]:5.3f}, {edges[b + 1]:5.3f}) {cells}")
    above = stats["anchors_above"]
    lines.append("")
    lines.append("anchors above a score per frame (mean / max):")
    lines.append(f"  {'score >=':>10} " + " ".join(f"{n:>15}" for n in [*names, ALL]))
    for t in above["thresholds"] if stats["frames"] else []:
        key = f"{t:g}"
        cells = " ".join(f"{above[n][key]['mean']:>8.1f} / {above[n][key]['max']:<4}" for n in [*names, ALL])
        lines.append(f"  {key:>10} " + cells)
    pos = stats["positives"]
    comp_names = pos["component_names"]
    lines.append("")
    lines.append(
        f"positives whose teacher box passes ({pos['iou']} IoU >= class threshold): whole box vs XGD pilots"
    )
    header = f"  {'class':<11} {'thr':>4} {'positives':>9} {'whole':>7} " + " ".join(
        f"{c:>7}" for c in comp_names
    )
    lines.append(header + f" {'all':>7} {'any':>7}")
    rows = [(n, pos["classes"][n], f"{pos['classes'][n]['iou_threshold']:.2f}") for n in names]
    rows.append((ALL, pos[ALL], ""))
    for name, block, thr in rows:
        comps = " ".join(f"{_pct(block['components'][c]['share']):>7}" for c in comp_names)
        lines.append(
            f"  {name:<11} {thr:>4} {block['positives']:>9} {_pct(block['whole_box']['share']):>7} {comps} "
            f"{_pct(block['all_components']['share']):>7} {_pct(block['any_component']['share']):>7}"
        )
    return "\n".join(lines)
