"""The steps every evaluation stage shares, driven by params.yaml's ``data`` and ``evaluate`` sections."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from stereodistill.data.labels import KittiObject, read_label_file
from stereodistill.data.prepared import PreparedSplit
from stereodistill.evaluation.breakdown import BreakdownSettings, error_breakdown
from stereodistill.evaluation.kitti import evaluate_kitti
from stereodistill.evaluation.report import format_table, write_json_atomic
from stereodistill.params import Params


def evaluation_split(params: Params) -> PreparedSplit:
    """The prepared split ``{data.prepared_dir}/{evaluate.split}.h5``."""
    return PreparedSplit(params.data.prepared_split(params.evaluate.split))


def written_detections(split: PreparedSplit, predictions_dir: str | Path) -> dict[str, list[KittiObject]]:
    """Frame id -> the detections as ``predictions_dir/{frame_id}.txt`` holds them, for every frame of ``split``.

    Result files round boxes to 0.01 m and rad; scoring what they hold, not the predictor's full-precision
    values, makes the metrics equal what ``stereodistill evaluate`` or KITTI's devkit computes from the files
    (rounding moves a weak student's Car 3D AP by up to 0.9 at the 0.7 IoU threshold)."""
    folder = Path(predictions_dir)
    return {frame_id: read_label_file(folder / f"{frame_id}.txt") for frame_id in split.frame_ids}


def score_and_write(
    params: Params,
    split: PreparedSplit,
    predictions_dir: str | Path,
    metrics_path: str | Path,
    breakdown_path: str | Path | None = None,
) -> dict:
    """Score the result files under ``predictions_dir`` (one a frame, :func:`written_detections`) against
    ``split``'s labels with the KITTI protocol, write the result to ``metrics_path`` (atomically), print the KITTI
    table and return the result. With ``breakdown_path``, also write where the detections err there
    (:func:`error_breakdown`, default settings)."""
    ground_truth = {frame_id: split.objects(i) for i, frame_id in enumerate(split.frame_ids)}
    detections = written_detections(split, predictions_dir)
    result = evaluate_kitti(ground_truth, detections, params.evaluate.classes)
    if breakdown_path is not None:
        settings = BreakdownSettings(classes=tuple(params.evaluate.classes))
        write_json_atomic(breakdown_path, error_breakdown(ground_truth, detections, settings))
    write_json_atomic(metrics_path, result)
    tqdm.write(format_table(result))
    return result
