"""Where a detector errs: recall and box errors per class, broken down by distance, occlusion and difficulty.

The input is the evaluator's: ground truth (a KITTI label folder or a prepared split) and a folder of KITTI
results files. Overlaps are the evaluator's (:func:`~stereodistill.evaluation.overlaps.ground_truth_detection_overlaps`,
exact rotated BEV and 3D IoU) and the difficulty rule is the evaluator's
(:func:`~stereodistill.evaluation.protocol.ground_truth_flags`).

Rules (per frame and class; every IoU threshold is strict, ``>``, as in the devkit):

- **detections**: those of the class with ``score >= score_threshold``;
- **matching**: one-to-one, greedy by decreasing BEV IoU over the (GT, detection) pairs with BEV IoU above
  ``found_iou_bev`` (0.1); ties go to the higher score, then to file order. A GT without a match is **missed**;
- **recall, strict**: matched with 3D IoU above the class's strict KITTI threshold (Car 0.7, Pedestrian and
  Cyclist 0.5); **recall, BEV 0.5**: matched with BEV IoU above ``bev_iou`` (0.5);
- **localisation failure**: matched, but not above the strict 3D threshold; so for every group of GT
  ``missed + localisation failure + strict recall = 1``;
- **box errors** (matched GT, detection minus GT, KITTI camera frame in metres): lateral ``x``, vertical ``y`` of
  the bottom centre, depth ``z``, sizes ``l, w, h``, heading modulo pi (radians, in ``[0, pi/2]``), and the
  **half-turn share**, the fraction of matches whose heading is off by more than pi/2 (a reversed box);
- **groups**: all GT of the class; distance bins of the GT's camera depth ``z`` (``[lo, hi)`` m; GT beyond the
  bins count in ``all`` only); KITTI occlusion level 0-3; KITTI difficulty, cumulative as in the benchmark
  (easy GT are also moderate and hard GT; GT outside every difficulty, e.g. under 25 px tall, are in ``all``).

Only GT of exactly the class are scored (a Van is not a missed Car); a detection left unmatched counts in
``unmatched_detections`` (a Car detection on a Van included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stereodistill.data.labels import KittiObject, read_label_file
from stereodistill.data.prepared import PreparedSplit
from stereodistill.errors import InputError
from stereodistill.evaluation.kitti import read_result_file
from stereodistill.evaluation.objects import FlatObjects
from stereodistill.evaluation.overlaps import PairOverlaps, ground_truth_detection_overlaps
from stereodistill.evaluation.protocol import (
    DEFAULT_CLASSES,
    DIFFICULTIES,
    MIN_OVERLAPS,
    VALID,
    check_classes,
    ground_truth_flags,
)
from stereodistill.geometry.angles import wrap_angle
from stereodistill.geometry.boxes import project_to_kitti_boxes

# Box components of the error table: name -> what it is (KITTI camera frame; metres, the heading in radians).
ERROR_COMPONENTS: dict[str, str] = {
    "x": "lateral (camera x, right)",
    "y": "vertical (camera y of the bottom centre, down)",
    "z": "depth (camera z, forward)",
    "l": "length",
    "w": "width",
    "h": "height",
    "heading": "heading modulo pi",
}
OCCLUSION_LEVELS: tuple[int, ...] = (0, 1, 2, 3)
DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_DISTANCE_EDGES: tuple[float, ...] = (0.0, 15.0, 25.0, 45.0)
FOUND_IOU_BEV = 0.1
LOOSE_IOU_BEV = 0.5


@dataclass(frozen=True)
class BreakdownSettings:
    """The knobs of a breakdown: classes, the detections' score threshold, the distance-bin edges (m, camera z,
    increasing), the BEV IoU above which a GT counts as found, and the BEV IoU of the second recall."""

    classes: tuple[str, ...] = DEFAULT_CLASSES
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    distance_edges: tuple[float, ...] = DEFAULT_DISTANCE_EDGES
    found_iou_bev: float = FOUND_IOU_BEV
    bev_iou: float = LOOSE_IOU_BEV

    def __post_init__(self) -> None:
        check_classes(self.classes)
        edges = np.asarray(self.distance_edges, dtype=np.float64)
        if edges.size < 2 or not np.all(np.diff(edges) > 0) or not np.all(np.isfinite(edges)):
            raise ValueError(
                f"distance bin edges must be >= 2 increasing numbers, got {list(self.distance_edges)}"
            )
        if not 0.0 <= self.found_iou_bev < self.bev_iou <= 1.0:
            raise ValueError(
                f"need 0 <= found_iou_bev < bev_iou <= 1, got {self.found_iou_bev} and {self.bev_iou}"
            )

    def bin_names(self) -> list[str]:
        """Names of the distance bins, e.g. ``["0-15", "15-25", "25-45"]``."""
        e = self.distance_edges
        return [f"{lo:g}-{hi:g}" for lo, hi in zip(e[:-1], e[1:], strict=True)]


@dataclass(frozen=True)
class ClassMatches:
    """The GT of one class with their matched detection; row ``i`` is GT ``gt_rows[i]`` of the flat GT.

    ``dt_rows (G,)`` matched detection row or -1; ``bev``, ``iou_3d`` ``(G,)`` the match's IoUs (0 when missed).
    """

    gt_rows: np.ndarray
    dt_rows: np.ndarray
    bev: np.ndarray
    iou_3d: np.ndarray
    num_detections: int = 0

    @property
    def found(self) -> np.ndarray:
        return self.dt_rows >= 0


# ============================================================================================ inputs
def ground_truth_from_split(path: str | Path) -> dict[str, list[KittiObject]]:
    """Frame id -> label objects of a prepared split (``*.h5``); ``InputError`` if it holds no labels."""
    split = PreparedSplit(path)
    if not split.attrs.get("has_labels", True):
        raise InputError("this prepared split has no labels (a testing split?)", path)
    return {frame_id: split.objects(i) for i, frame_id in enumerate(split.frame_ids)}


def ground_truth_from_folder(
    label_dir: str | Path, frame_ids: Sequence[str] | None = None
) -> dict[str, list[KittiObject]]:
    """Frame id -> label objects of a KITTI ``label_2`` folder: ``frame_ids``, or every ``*.txt`` in it."""
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise InputError("ground-truth folder does not exist or is not a folder", label_dir)
    if frame_ids is None:
        frame_ids = sorted(p.stem for p in label_dir.glob("*.txt"))
        if not frame_ids:
            raise InputError("no ground-truth label files (*.txt) in this folder", label_dir)
    return {frame_id: read_label_file(label_dir / f"{frame_id}.txt") for frame_id in frame_ids}


def read_predictions(
    pred_dir: str | Path, frame_ids: Sequence[str], missing_ok: bool = False
) -> tuple[dict[str, list[KittiObject]], list[str]]:
    """Results files of ``frame_ids`` in ``pred_dir``, and the frames without a file (no detections).

    Raises :class:`InputError` naming the file when ``pred_dir`` holds a results file of a frame that is not in
    the ground truth, when a frame has no file (unless ``missing_ok``: tools that skip empty frames; the
    project's predictors write one file per frame), when no frame has one, and (with the line) on a
    malformed line. A frame mismatch usually means predictions of another split than the ground truth.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError("prediction folder does not exist or is not a folder", pred_dir)
    wanted = set(frame_ids)
    files = sorted(pred_dir.glob("*.txt"))
    stray = [p for p in files if p.stem not in wanted]
    if stray:
        raise InputError(
            f"results file of a frame that is not in the ground truth ({len(stray)} such file(s); "
            "predictions and ground truth of different splits?)",
            stray[0],
        )
    present = {p.stem for p in files}
    missing = [f for f in frame_ids if f not in present]
    if len(missing) == len(frame_ids):
        raise InputError("no results file (*.txt) of any ground-truth frame in this folder", pred_dir)
    if missing and not missing_ok:
        raise InputError(
            f"results file of ground-truth frame {missing[0]} is missing ({len(missing)} of {len(frame_ids)} "
            "frames have none; predictions of another split? if the detector skips empty frames, pass --missing-ok)",
            pred_dir / f"{missing[0]}.txt",
        )
    detections = {f: read_result_file(pred_dir / f"{f}.txt") for f in frame_ids if f in present}
    return detections, missing


# ========================================================================================== matching
def greedy_match(
    pair_gt: np.ndarray, pair_dt: np.ndarray, overlap: np.ndarray, score: np.ndarray
) -> np.ndarray:
    """One-to-one greedy matching of candidate pairs ``(P,)``: by decreasing ``overlap``, then ``score`` (the
    detection's), then GT and detection row. Returns the indices into the pairs of the chosen ones."""
    order = np.lexsort((pair_dt, pair_gt, -score, -overlap))
    taken_gt: set[int] = set()
    taken_dt: set[int] = set()
    chosen = []
    for p in order:
        g, d = int(pair_gt[p]), int(pair_dt[p])
        if g in taken_gt or d in taken_dt:
            continue
        taken_gt.add(g)
        taken_dt.add(d)
        chosen.append(p)
    return np.asarray(chosen, dtype=np.int64)


def _pairs(gt: FlatObjects, dt: FlatObjects, settings: BreakdownSettings) -> tuple[PairOverlaps, np.ndarray]:
    """All same-frame, same-class pairs (the evaluator's overlaps) and the detections in play ``(Nd,)`` bool."""
    gt_groups = np.zeros(len(gt), dtype=np.int64)
    dt_groups = np.zeros(len(dt), dtype=np.int64)
    in_play = dt.score >= settings.score_threshold
    for k, cls in enumerate(settings.classes):
        gt_groups[gt.types == cls] |= 1 << k
        dt_groups[(dt.types == cls) & in_play] |= 1 << k
    pairs = ground_truth_detection_overlaps(gt, dt, gt_groups, dt_groups, settings.found_iou_bev)
    return pairs, in_play & (dt_groups != 0)


def match_class(
    gt: FlatObjects,
    dt: FlatObjects,
    pairs: PairOverlaps,
    in_play: np.ndarray,
    cls: str,
    settings: BreakdownSettings,
) -> ClassMatches:
    """Match the GT of class ``cls`` to its detections (see the module docstring)."""
    gt_rows = np.flatnonzero(gt.types == cls)
    keep = (gt.types[pairs.gt] == cls) & (pairs.bev > settings.found_iou_bev)
    pair_gt, pair_dt, bev, iou_3d = pairs.gt[keep], pairs.dt[keep], pairs.bev[keep], pairs.box3d[keep]
    chosen = greedy_match(pair_gt, pair_dt, bev, dt.score[pair_dt])
    position = np.searchsorted(gt_rows, pair_gt[chosen])
    dt_rows = np.full(gt_rows.size, -1, dtype=np.int64)
    match_bev, match_3d = np.zeros(gt_rows.size), np.zeros(gt_rows.size)
    dt_rows[position], match_bev[position], match_3d[position] = pair_dt[chosen], bev[chosen], iou_3d[chosen]
    num_detections = int(np.count_nonzero(in_play & (dt.types == cls)))
    return ClassMatches(gt_rows, dt_rows, match_bev, match_3d, num_detections)


# ========================================================================================== numbers
def box_errors(gt_boxes: np.ndarray, dt_boxes: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Signed errors (detection minus GT) ``(M,)`` of paired project boxes ``(M, 7)`` per :data:`ERROR_COMPONENTS`
    (KITTI camera frame, metres; heading modulo pi in ``[-pi/2, pi/2)`` radians), and the half-turn flags ``(M,)``
    (heading error beyond pi/2 in absolute value)."""
    gt_location, gt_hwl, gt_ry = project_to_kitti_boxes(gt_boxes)
    dt_location, dt_hwl, dt_ry = project_to_kitti_boxes(dt_boxes)
    heading = wrap_angle(dt_ry - gt_ry)
    errors = {
        "x": dt_location[:, 0] - gt_location[:, 0],
        "y": dt_location[:, 1] - gt_location[:, 1],
        "z": dt_location[:, 2] - gt_location[:, 2],
        "l": dt_hwl[:, 2] - gt_hwl[:, 2],
        "w": dt_hwl[:, 1] - gt_hwl[:, 1],
        "h": dt_hwl[:, 0] - gt_hwl[:, 0],
        "heading": wrap_angle(2.0 * heading) / 2.0,
    }
    return errors, np.abs(heading) > np.pi / 2


def _share(count: int, total: int) -> float | None:
    return None if total == 0 else count / total


def recall_summary(matches: ClassMatches, members: np.ndarray, strict_iou: float, bev_iou: float) -> dict:
    """Counts and shares over the GT ``members (G,)`` bool of one class (see the module docstring)."""
    n = int(np.count_nonzero(members))
    found = matches.found & members
    strict = found & (matches.iou_3d > strict_iou)
    return {
        "num_gt": n,
        "recall_3d_strict": _share(int(np.count_nonzero(strict)), n),
        "recall_bev": _share(int(np.count_nonzero(found & (matches.bev > bev_iou))), n),
        "missed": _share(n - int(np.count_nonzero(found)), n),
        "localisation_failure": _share(int(np.count_nonzero(found & ~strict)), n),
    }


def error_summary(errors: dict[str, np.ndarray], half_turn: np.ndarray, members: np.ndarray) -> dict:
    """Mean absolute and mean signed error per component, and the half-turn share, over matches ``members (M,)``."""
    n = int(np.count_nonzero(members))
    return {
        "num_matched": n,
        "mae": {k: (float(np.mean(np.abs(v[members]))) if n else None) for k, v in errors.items()},
        "bias": {k: (float(np.mean(v[members])) if n else None) for k, v in errors.items()},
        "half_turn_share": _share(int(np.count_nonzero(half_turn[members])), n),
    }


def distance_bins(depth: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index ``(N,)`` of camera depths ``(N,)`` (m) in ``[edges[i], edges[i+1])``; -1 outside every bin."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), depth, side="right") - 1
    return np.where((index >= 0) & (index < len(edges) - 1), index, -1)


def class_breakdown(
    gt: FlatObjects, dt: FlatObjects, matches: ClassMatches, cls: str, settings: BreakdownSettings
) -> dict:
    """The breakdown of one class: recall per group, box errors per distance bin."""
    rows = matches.gt_rows
    strict_iou = MIN_OVERLAPS[cls]["strict"]["3d"]
    depth = project_to_kitti_boxes(gt.boxes[rows])[0][:, 2] if rows.size else np.zeros(0)
    bins = distance_bins(depth, settings.distance_edges)
    groups: dict[str, dict[str, np.ndarray]] = {
        "all": {"all": np.ones(rows.size, dtype=bool)},
        "distance": {name: bins == i for i, name in enumerate(settings.bin_names())},
        "occlusion": {str(level): gt.occlusion[rows] == level for level in OCCLUSION_LEVELS},
        "difficulty": {
            name: ground_truth_flags(gt.types, gt.bbox, gt.occlusion, gt.truncation, cls, d)[rows] == VALID
            for d, name in enumerate(DIFFICULTIES)
        },
    }
    recall = {
        kind: {
            name: recall_summary(matches, members, strict_iou, settings.bev_iou)
            for name, members in by.items()
        }
        for kind, by in groups.items()
    }
    found = matches.found
    errors, half_turn = box_errors(gt.boxes[rows[found]], dt.boxes[matches.dt_rows[found]])
    error_groups = {"all": np.ones(int(found.sum()), dtype=bool)}
    error_groups.update({name: members[found] for name, members in groups["distance"].items()})
    return {
        "strict_iou_3d": strict_iou,
        "num_detections": matches.num_detections,
        "unmatched_detections": matches.num_detections - int(found.sum()),
        "beyond_distance_bins": int(np.count_nonzero(bins < 0)),
        "recall": recall,
        "errors": {name: error_summary(errors, half_turn, members) for name, members in error_groups.items()},
    }


def error_breakdown(
    gt: Mapping[str, Sequence[KittiObject]],
    dt: Mapping[str, Sequence[KittiObject]],
    settings: BreakdownSettings | None = None,
) -> dict:
    """Breakdown of detections ``dt`` (frame id -> objects with scores) against ``gt`` (frame id -> labels).

    Frames are ``sorted(gt)``; a frame missing from ``dt`` has no detections. Returns ``{"settings": {..},
    "num_frames": n, "classes": {cls: {"strict_iou_3d", "num_detections", "unmatched_detections",
    "beyond_distance_bins", "recall": {kind: {group: {num_gt, recall_3d_strict, recall_bev, missed,
    localisation_failure}}}, "errors": {"all"|bin: {num_matched, mae: {component: ..}, bias: {..},
    half_turn_share}}}}}`` with kinds ``all``, ``distance``, ``occlusion``, ``difficulty``; shares in [0, 1]
    (None for an empty group).
    """
    settings = settings or BreakdownSettings()
    frame_ids = sorted(gt)
    gt_flat = FlatObjects.from_frames(gt, frame_ids)
    dt_flat = FlatObjects.from_frames(dt, frame_ids)
    if np.isnan(dt_flat.score).any():
        row = int(np.flatnonzero(np.isnan(dt_flat.score))[0])
        raise InputError(
            f"frame {frame_ids[int(dt_flat.frame[row])]}: a detection has no score (a 16th field)"
        )
    pairs, in_play = _pairs(gt_flat, dt_flat, settings)
    classes = {}
    for cls in settings.classes:
        matches = match_class(gt_flat, dt_flat, pairs, in_play, cls, settings)
        classes[cls] = class_breakdown(gt_flat, dt_flat, matches, cls, settings)
    return {"settings": _settings_record(settings), "num_frames": len(frame_ids), "classes": classes}


def _settings_record(settings: BreakdownSettings) -> dict:
    return {
        "classes": list(settings.classes),
        "score_threshold": settings.score_threshold,
        "distance_edges_m": list(settings.distance_edges),
        "distance": "camera-frame depth z of the GT (m)",
        "found_iou_bev": settings.found_iou_bev,
        "bev_iou": settings.bev_iou,
        "matching": "one-to-one, greedy by decreasing BEV IoU (> found_iou_bev), ties by score",
        "errors": "detection minus GT, KITTI camera frame: x lateral, y bottom, z depth (m); heading modulo pi (rad)",
    }


# ============================================================================================ table
def _pct(value: float | None) -> str:
    return "    -" if value is None else f"{100.0 * value:5.1f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "    -" if value is None else f"{value:5.{digits}f}"


def _recall_lines(block: dict, bev_iou: float) -> list[str]:
    header = f"  {'group':<14}{'GT':>6}  {'R3d':>5}  {f'Rbev{bev_iou:g}':>7}  {'missed':>6}  {'loc.fail':>8}"
    lines = [header]
    for kind in ("all", "distance", "occlusion", "difficulty"):
        for name, r in block["recall"][kind].items():
            label = name if kind == "all" else f"{kind[:4]} {name}"
            if kind == "occlusion" and r["num_gt"] == 0:
                continue
            lines.append(
                f"  {label:<14}{r['num_gt']:>6}  {_pct(r['recall_3d_strict'])}  {_pct(r['recall_bev']):>7}  "
                f"{_pct(r['missed']):>6}  {_pct(r['localisation_failure']):>8}"
            )
    return lines


def _error_lines(block: dict) -> list[str]:
    names = [f"|d{k}|" if k != "heading" else "|dyaw|" for k in ERROR_COMPONENTS]
    lines = [f"  {'distance':<14}{'matched':>7}  " + "  ".join(f"{n:>6}" for n in names) + "  half-turn"]
    for name, e in block["errors"].items():
        values = "  ".join(f"{_num(e['mae'][k], 3 if k == 'heading' else 2):>6}" for k in ERROR_COMPONENTS)
        lines.append(f"  {name:<14}{e['num_matched']:>7}  {values}  {_pct(e['half_turn_share']):>9}")
    return lines


def format_breakdown(result: dict) -> str:
    """A readable table per class: recall (%) per group, then mean absolute errors per distance bin."""
    s = result["settings"]
    lines = [
        f"{result['num_frames']} frames; detections with score >= {s['score_threshold']:g}; "
        f"found = BEV IoU > {s['found_iou_bev']:g} (one-to-one, greedy by BEV IoU); distance = camera z (m)",
        "R3d: recall at the strict 3D IoU; missed + loc.fail + R3d = 100%. Errors: detection - GT, camera frame "
        "(m), |dyaw| modulo pi (rad).",
    ]
    for cls, block in result["classes"].items():
        lines.append("")
        lines.append(
            f"{cls} (strict 3D IoU > {block['strict_iou_3d']:g}): {block['num_detections']} detections, "
            f"{block['unmatched_detections']} unmatched; {block['beyond_distance_bins']} GT beyond the distance bins"
        )
        lines.extend(_recall_lines(block, s["bev_iou"]))
        lines.extend(_error_lines(block))
    return "\n".join(lines)
