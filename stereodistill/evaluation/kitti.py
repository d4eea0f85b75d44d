"""KITTI object-detection evaluation: AP for 2D boxes, BEV, 3D and AOS, easy/moderate/hard, R11 and R40.

Reproduces the official devkit (``devkit_object/cpp/evaluate_object.cpp``, 3D version) and, where the two
agree, the widely used python port (``kitti_object_eval_python/eval.py``); see ``protocol.py`` for the
difficulty limits, ignore rules and IoU thresholds, ``matching.py`` for the assignment and
``average_precision.py`` for the threshold sampling and the R11/R40 averages.

Where the C++ devkit and the python port differ, this module follows the C++ devkit:

- Rotated BEV/3D overlaps are exact in float64 (the devkit uses boost::geometry in double precision; the
  python port computes rotated intersections in float32, which can flip matches whose IoU is within
  ~1e-7 of a threshold).
- AOS is computed unless some detection has ``alpha == -10`` (the devkit checks every detection; the port
  only the first detection of the first non-empty frame). When it is not computed, AOS entries are None.

Both implementations agree (and so does this one) on points that other tools get wrong: a ground truth
needs a 2D height strictly above the minimum (``<=`` is ignored; the older 2D-only devkit used ``<``);
detections that are ignored (too small) or absorbed by ignored ground truth or DontCare are never FPs;
a too-small detection of *another* class can still absorb a ground truth (see ``protocol.py``).

Where the devkit is ambiguous or silent:

- DontCare regions only absorb unassigned detections for the 2D metric (and so AOS), as in the port; the
  C++ devkit also runs the check for BEV/3D, but against the DontCare labels' placeholder 3D boxes
  (location -1000), which never overlap a detection, so the outcome is the same.
- A class is evaluated (AP 0 when there are no detections) even if no detection of it exists; the C++
  devkit skips such a class silently, the port reports 0 as here.
- A threshold at which all detections above it were absorbed by ignored ground truth (TP + FP = 0) gets
  precision 0 (the devkit would divide 0 by 0).
- The "loose" row uses the port's second ``min_overlaps`` row (Car 0.7/0.5/0.5, Pedestrian and Cyclist
  0.5/0.25/0.25 for bbox/BEV/3D); the C++ devkit only has the strict row.

Ground-truth labels (KITTI ``label_2`` files) are the reference; results files carry a 16th field, the
score. Frames are the ground-truth frames; predictions for other frames are ignored, a ground-truth frame
without predictions has no detections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stereodistill.data.labels import KittiObject, parse_label_line, read_label_file
from stereodistill.errors import InputError
from stereodistill.evaluation.average_precision import (
    average_precision_r11,
    average_precision_r40,
    interpolated_curve,
    score_thresholds,
)
from stereodistill.evaluation.matching import Candidates, counts_at_thresholds, true_positive_scores
from stereodistill.evaluation.objects import FlatObjects
from stereodistill.evaluation.overlaps import PairOverlaps, dontcare_coverage, ground_truth_detection_overlaps
from stereodistill.evaluation.protocol import (
    DEFAULT_CLASSES,
    DIFFICULTIES,
    IRRELEVANT,
    MIN_HEIGHT,
    MIN_OVERLAPS,
    NEIGHBOUR_CLASS,
    ROWS,
    VALID,
    check_classes,
    detection_flags,
    ground_truth_flags,
)

# Order of the metrics in each result block.
RESULT_METRICS: tuple[str, ...] = ("3d", "bev", "bbox", "aos")
INVALID_ALPHA = -10.0


def _curves(
    gt: FlatObjects,
    dt: FlatObjects,
    pairs: PairOverlaps,
    gt_flags: np.ndarray,
    dt_flags: np.ndarray,
    num_valid_gt: int,
    metric: str,
    min_overlap: float,
    dc_coverage: np.ndarray,
    with_aos: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Interpolated 41-slot precision curve (and AOS curve when ``with_aos``) for one evaluation setting."""
    overlap = pairs.metric(metric)
    keep = (overlap > min_overlap) & (gt_flags[pairs.gt] != IRRELEVANT) & (dt_flags[pairs.dt] != IRRELEVANT)
    candidates = Candidates(
        gt=pairs.gt[keep],
        dt=pairs.dt[keep],
        overlap=overlap[keep],
        gt_frame=gt.frame,
        gt_flags=gt_flags,
        dt_flags=dt_flags,
        dt_score=dt.score,
    )
    thresholds = score_thresholds(true_positive_scores(candidates), num_valid_gt)
    in_dontcare = dc_coverage > min_overlap if metric == "bbox" else np.zeros(len(dt), dtype=bool)
    similarity = None
    if with_aos:
        similarity = (1.0 + np.cos(gt.alpha[candidates.gt] - dt.alpha[candidates.dt])) / 2.0
    counts = counts_at_thresholds(candidates, thresholds, in_dontcare, similarity)
    positives = counts.tp + counts.fp
    precision = interpolated_curve(counts.tp.astype(np.float64), positives)
    aos = interpolated_curve(counts.similarity, positives) if with_aos else None
    return precision, aos


def _check_scores(dt: FlatObjects, frame_ids: Sequence[str]) -> None:
    missing = np.flatnonzero(np.isnan(dt.score))
    if missing.size:
        frame = frame_ids[int(dt.frame[missing[0]])]
        raise InputError(f"frame {frame}: detection {dt.types[missing[0]]} has no score (a 16th field)")


def evaluate_kitti(
    gt: Mapping[str, Sequence[KittiObject]],
    dt: Mapping[str, Sequence[KittiObject]],
    classes: Sequence[str] = DEFAULT_CLASSES,
) -> dict:
    """Evaluate detections against ground truth with the official KITTI protocol.

    ``gt`` maps frame id -> ground-truth objects (DontCare included); ``dt`` maps frame id -> detections
    (each with a score). The frames are ``sorted(gt)``; ``dt`` frames not in ``gt`` are ignored.

    Returns ``{"results": {cls: {row: {"R40"|"R11": {metric: {difficulty: AP}}}}}, "num_gt": {cls:
    {difficulty: n}}, "min_overlaps": {cls: {row: {metric: iou}}}, "num_frames": n, "aos_evaluated": bool}``
    with rows ``strict``/``loose``, metrics ``3d``, ``bev``, ``bbox``, ``aos``, difficulties ``easy``,
    ``moderate``, ``hard``, and AP in percent (AOS None when some detection has ``alpha == -10``).
    """
    classes = check_classes(classes)
    frame_ids = sorted(gt)
    gt_flat = FlatObjects.from_frames(gt, frame_ids)
    dt_flat = FlatObjects.from_frames(dt, frame_ids)
    _check_scores(dt_flat, frame_ids)
    with_aos = not bool(np.any(dt_flat.alpha == INVALID_ALPHA))

    # Bit k of a group mask: the object can take part in evaluating classes[k].
    gt_groups = np.zeros(len(gt_flat), dtype=np.int64)
    dt_groups = np.zeros(len(dt_flat), dtype=np.int64)
    for k, cls in enumerate(classes):
        gt_groups[np.isin(gt_flat.types, [cls, NEIGHBOUR_CLASS.get(cls, cls)])] |= 1 << k
        dt_groups[dt_flat.types == cls] |= 1 << k
    dt_of_class = dt_groups != 0
    # Detections with a small 2D box are "ignored" (not irrelevant) for every class.
    dt_groups[np.abs(dt_flat.bbox[:, 3] - dt_flat.bbox[:, 1]) < max(MIN_HEIGHT)] = (1 << len(classes)) - 1
    smallest_rotated_threshold = min(
        MIN_OVERLAPS[c][row][m] for c in classes for row in ROWS for m in ("bev", "3d")
    )
    pairs = ground_truth_detection_overlaps(
        gt_flat, dt_flat, gt_groups, dt_groups, smallest_rotated_threshold
    )
    dc_coverage = dontcare_coverage(gt_flat, dt_flat, np.flatnonzero(dt_of_class))

    results: dict = {}
    num_gt: dict = {}
    for cls in classes:
        aps: dict = {
            row: {"R40": {m: {} for m in RESULT_METRICS}, "R11": {m: {} for m in RESULT_METRICS}}
            for row in ROWS
        }
        num_gt[cls] = {}
        for difficulty, difficulty_name in enumerate(DIFFICULTIES):
            gt_flags = ground_truth_flags(
                gt_flat.types, gt_flat.bbox, gt_flat.occlusion, gt_flat.truncation, cls, difficulty
            )
            dt_flags = detection_flags(dt_flat.types, dt_flat.bbox, cls, difficulty)
            num_valid_gt = int(np.count_nonzero(gt_flags == VALID))
            num_gt[cls][difficulty_name] = num_valid_gt
            computed: dict[tuple[str, float], tuple[np.ndarray, np.ndarray | None]] = {}
            for row in ROWS:
                for metric, min_overlap in MIN_OVERLAPS[cls][row].items():
                    key = (metric, min_overlap)
                    if key not in computed:
                        computed[key] = _curves(
                            gt_flat,
                            dt_flat,
                            pairs,
                            gt_flags,
                            dt_flags,
                            num_valid_gt,
                            metric,
                            min_overlap,
                            dc_coverage,
                            with_aos and metric == "bbox",
                        )
                    precision, aos = computed[key]
                    aps[row]["R40"][metric][difficulty_name] = average_precision_r40(precision)
                    aps[row]["R11"][metric][difficulty_name] = average_precision_r11(precision)
                    if metric == "bbox":
                        aps[row]["R40"]["aos"][difficulty_name] = (
                            None if aos is None else average_precision_r40(aos)
                        )
                        aps[row]["R11"]["aos"][difficulty_name] = (
                            None if aos is None else average_precision_r11(aos)
                        )
        results[cls] = aps
    return {
        "results": results,
        "num_gt": num_gt,
        "min_overlaps": {cls: {row: dict(MIN_OVERLAPS[cls][row]) for row in ROWS} for cls in classes},
        "num_frames": len(frame_ids),
        "aos_evaluated": with_aos,
    }


def read_result_file(path: str | Path) -> list[KittiObject]:
    """Parse a results file (16 fields per line, the last being the score); blank lines are skipped."""
    path = Path(path)
    objects = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        obj = parse_label_line(line, path, lineno)
        if obj.score is None:
            raise InputError(
                "result line has 15 fields; detections need a 16th field, the score", path, lineno
            )
        objects.append(obj)
    return objects


def evaluate_folders(
    gt_dir: str | Path,
    pred_dir: str | Path,
    classes: Sequence[str] = DEFAULT_CLASSES,
    frame_ids: Sequence[str] | None = None,
) -> dict:
    """Evaluate a folder of results files against a folder of KITTI label files (see :func:`evaluate_kitti`).

    Frames are ``frame_ids`` or else the stems of ``gt_dir/*.txt``. A frame without a results file, or with
    an empty one, has no detections. Raises :class:`InputError` naming the file (and line) on bad input.
    """
    classes = check_classes(classes)
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise InputError(f"{what} folder does not exist or is not a folder", folder)
    if frame_ids is None:
        frame_ids = sorted(p.stem for p in gt_dir.glob("*.txt"))
        if not frame_ids:
            raise InputError("no ground-truth label files (*.txt) in this folder", gt_dir)
    gt: dict[str, list[KittiObject]] = {}
    dt: dict[str, list[KittiObject]] = {}
    for frame_id in tqdm(frame_ids, desc="reading labels", unit="frame", disable=None):
        gt[frame_id] = read_label_file(gt_dir / f"{frame_id}.txt")
        result_file = pred_dir / f"{frame_id}.txt"
        dt[frame_id] = read_result_file(result_file) if result_file.exists() else []
    return evaluate_kitti(gt, dt, classes)
