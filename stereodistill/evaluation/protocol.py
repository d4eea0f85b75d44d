"""The fixed parameters of the KITTI object protocol and the per-object "ignore" decisions.

Difficulties (a ground-truth object counts in a difficulty only if it passes all three limits)::

    easy      2D box height > 40 px, occlusion <= 0, truncation <= 0.15
    moderate  2D box height > 25 px, occlusion <= 1, truncation <= 0.30
    hard      2D box height > 25 px, occlusion <= 2, truncation <= 0.50

The height limit is strict for ground truth (``height <= 40`` is ignored in easy, as in the 3D devkit's
``evaluate_object.cpp`` and the python port) but detections are only ignored below it
(``height < 40``, the devkit truncates the height to an integer first, which gives the same answer).

Per class ``c`` and difficulty, each ground-truth object gets a flag (the devkit's ``ignored_gt``):

- ``VALID`` (0): of class ``c`` and within the difficulty's limits; counted in the recall denominator.
- ``IGNORED`` (1): of class ``c`` but outside the limits, or of the neighbour class (Van for Car,
  Person_sitting for Pedestrian). It may absorb a detection, which is then neither TP nor FP.
- ``IRRELEVANT`` (-1): any other class, DontCare included.

and each detection a flag (``ignored_det``): ``IGNORED`` if its 2D height is below the difficulty's minimum
height, *whatever its class* (a devkit quirk kept on purpose: such a detection of another class can absorb
a ground truth of class ``c``), else ``VALID`` if it is of class ``c``, else ``IRRELEVANT``.

Minimum overlaps (IoU thresholds), per class, row and metric: the "strict" row is the official one; the
"loose" row is the second row of the widely used python port (``min_overlaps[1]``), which keeps the 2D
threshold of the strict row for Car (0.7) and loosens only BEV and 3D.
"""

from __future__ import annotations

import numpy as np

DIFFICULTIES: tuple[str, ...] = ("easy", "moderate", "hard")
MIN_HEIGHT: tuple[float, ...] = (40.0, 25.0, 25.0)
MAX_OCCLUSION: tuple[int, ...] = (0, 1, 2)
MAX_TRUNCATION: tuple[float, ...] = (0.15, 0.3, 0.5)

METRICS: tuple[str, ...] = ("bbox", "bev", "3d")
ROWS: tuple[str, ...] = ("strict", "loose")
DEFAULT_CLASSES: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")

# Ground-truth classes that are ignored (not missed, not false) when evaluating the key class.
NEIGHBOUR_CLASS: dict[str, str] = {"Car": "Van", "Pedestrian": "Person_sitting"}

MIN_OVERLAPS: dict[str, dict[str, dict[str, float]]] = {
    "Car": {"strict": {"bbox": 0.7, "bev": 0.7, "3d": 0.7}, "loose": {"bbox": 0.7, "bev": 0.5, "3d": 0.5}},
    "Pedestrian": {
        "strict": {"bbox": 0.5, "bev": 0.5, "3d": 0.5},
        "loose": {"bbox": 0.5, "bev": 0.25, "3d": 0.25},
    },
    "Cyclist": {
        "strict": {"bbox": 0.5, "bev": 0.5, "3d": 0.5},
        "loose": {"bbox": 0.5, "bev": 0.25, "3d": 0.25},
    },
    "Van": {"strict": {"bbox": 0.7, "bev": 0.7, "3d": 0.7}, "loose": {"bbox": 0.7, "bev": 0.5, "3d": 0.5}},
    "Person_sitting": {
        "strict": {"bbox": 0.5, "bev": 0.5, "3d": 0.5},
        "loose": {"bbox": 0.5, "bev": 0.25, "3d": 0.25},
    },
    "Truck": {"strict": {"bbox": 0.7, "bev": 0.7, "3d": 0.7}, "loose": {"bbox": 0.5, "bev": 0.5, "3d": 0.5}},
}
EVALUABLE_CLASSES: tuple[str, ...] = tuple(MIN_OVERLAPS)

VALID, IGNORED, IRRELEVANT = 0, 1, -1


def check_classes(classes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate class names (exact KITTI spelling); raise ``ValueError`` naming the unknown ones."""
    classes = tuple(classes)
    unknown = [c for c in classes if c not in MIN_OVERLAPS]
    if unknown:
        raise ValueError(
            f"cannot evaluate class(es) {', '.join(map(repr, unknown))}; evaluable classes: "
            f"{', '.join(EVALUABLE_CLASSES)}"
        )
    if not classes:
        raise ValueError("no class to evaluate")
    if len(set(classes)) != len(classes):
        raise ValueError(f"class listed twice in {', '.join(classes)}")
    return classes


def ground_truth_flags(
    types: np.ndarray,
    bbox: np.ndarray,
    occlusion: np.ndarray,
    truncation: np.ndarray,
    class_name: str,
    difficulty: int,
) -> np.ndarray:
    """``ignored_gt`` flags ``(N,)`` int8 of ground-truth objects for one class and difficulty index.

    ``types (N,)`` str, ``bbox (N, 4)`` image boxes ``x1, y1, x2, y2``, ``occlusion (N,)``, ``truncation (N,)``.
    """
    height = bbox[:, 3] - bbox[:, 1]
    own = types == class_name
    neighbour = types == NEIGHBOUR_CLASS.get(class_name, "")
    outside = (
        (occlusion > MAX_OCCLUSION[difficulty])
        | (truncation > MAX_TRUNCATION[difficulty])
        | (height <= MIN_HEIGHT[difficulty])
    )
    flags = np.full(types.shape[0], IRRELEVANT, dtype=np.int8)
    flags[neighbour | (own & outside)] = IGNORED
    flags[own & ~outside] = VALID
    return flags


def detection_flags(types: np.ndarray, bbox: np.ndarray, class_name: str, difficulty: int) -> np.ndarray:
    """``ignored_det`` flags ``(N,)`` int8 of detections (``types (N,)``, ``bbox (N, 4)``) for one class/difficulty."""
    height = np.abs(bbox[:, 3] - bbox[:, 1])
    flags = np.full(types.shape[0], IRRELEVANT, dtype=np.int8)
    flags[types == class_name] = VALID
    flags[height < MIN_HEIGHT[difficulty]] = IGNORED
    return flags
