"""The steps every evaluation stage shares, driven by params.yaml's ``data`` and ``evaluate`` sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from stereodistill.data.labels import KittiObject
from stereodistill.data.prepared import PreparedSplit
from stereodistill.evaluation.kitti import evaluate_kitti
from stereodistill.evaluation.report import format_table, write_json_atomic
from stereodistill.params import require, section


def evaluation_split(params: dict[str, Any]) -> PreparedSplit:
    """The prepared split ``{data.prepared_dir}/{evaluate.split}.h5``."""
    data, evaluate = section(params, "data"), section(params, "evaluate")
    return PreparedSplit(
        Path(require(data, "prepared_dir", "data")) / f"{require(evaluate, 'split', 'evaluate')}.h5"
    )


def score_and_write(
    params: dict[str, Any], split: PreparedSplit, detections: dict[str, list[KittiObject]], metrics_key: str
) -> dict:
    """Score ``detections`` (frame id -> objects) against ``split``'s labels with the KITTI protocol, write the
    result to ``evaluate.<metrics_key>`` (atomically), print the KITTI table and return the result."""
    evaluate = section(params, "evaluate")
    ground_truth = {frame_id: split.objects(i) for i, frame_id in enumerate(split.frame_ids)}
    result = evaluate_kitti(ground_truth, detections, tuple(require(evaluate, "classes", "evaluate")))
    write_json_atomic(require(evaluate, metrics_key, "evaluate"), result)
    tqdm.write(format_table(result))
    return result
