"""The evaluation stages score the result files they write (stereodistill/evaluation/stage.py).

Geometry: a Car of ``h w l = 1.5 1.6 3.9`` with ``rotation_y = 0`` has its width (1.6 m) along the camera depth
z, so a copy moved by ``d`` in depth overlaps it by ``(1.6 - d) / (1.6 + d)`` in 3D: 0.69996 for ``d = 0.2824``
(a miss at Car's 0.7) and 0.70213 for ``d = 0.28``, the depth a result file holds (0.01 m).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from stereodistill.data.labels import KittiObject, write_label_file
from stereodistill.evaluation import evaluate_folders, evaluate_kitti
from stereodistill.evaluation.stage import score_and_write, written_detections

FRAMES = [f"{i:06d}" for i in range(40)]


def car(depth: float, score: float | None = None) -> KittiObject:
    return KittiObject(
        "Car", 0.0, 0, 0.0, (100.0, 100.0, 200.0, 150.0), (1.5, 1.6, 3.9), (0.0, 1.65, depth), 0.0, score
    )


class LabelledSplit:
    """The two things the stage reads of a prepared split: its frame ids and each frame's labels."""

    def __init__(self, frame_ids: list[str]) -> None:
        self.frame_ids = frame_ids

    def objects(self, index: int) -> list[KittiObject]:
        return [car(10.0)]


def moderate_3d(result: dict) -> float:
    return result["results"]["Car"]["strict"]["R40"]["3d"]["moderate"]


def test_metrics_are_those_of_the_written_files_not_of_the_full_precision_boxes(tmp_path):
    split = LabelledSplit(FRAMES)
    detections = {f: [car(10.2824, score=0.9 - 0.01 * i)] for i, f in enumerate(FRAMES)}
    predictions = tmp_path / "pred"
    predictions.mkdir()
    for frame_id, objects in detections.items():
        write_label_file(predictions / f"{frame_id}.txt", objects)
    ground_truth = {f: split.objects(i) for i, f in enumerate(FRAMES)}
    assert moderate_3d(evaluate_kitti(ground_truth, detections, ["Car"])) == 0.0  # every box just misses

    params = SimpleNamespace(evaluate=SimpleNamespace(classes=["Car"]))
    metrics = tmp_path / "metrics.json"
    result = score_and_write(params, split, predictions, metrics, tmp_path / "breakdown.json")
    assert moderate_3d(result) == pytest.approx(39 * 100 / 40)  # 40 hits, each its own threshold: slots 1..39
    assert json.loads(metrics.read_text()) == json.loads(json.dumps(result))
    labels = tmp_path / "label_2"
    labels.mkdir()
    for i, frame_id in enumerate(FRAMES):
        write_label_file(labels / f"{frame_id}.txt", split.objects(i))
    # what `stereodistill evaluate --gt-dir label_2 --pred-dir pred` reports
    assert evaluate_folders(labels, predictions, ["Car"])["results"] == result["results"]
    breakdown = json.loads((tmp_path / "breakdown.json").read_text())
    assert abs(breakdown["classes"]["Car"]["errors"]["all"]["bias"]["z"]) == pytest.approx(0.28)  # not 0.2824


def test_a_frame_without_its_result_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "000000.txt").write_text("")
    with pytest.raises(Exception, match="000001.txt"):
        written_detections(LabelledSplit(["000000", "000001"]), tmp_path)
