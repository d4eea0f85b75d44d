"""The views of a scene, and mirroring between them.

A **view** is how a frame is presented to a network. The teacher cache holds the teacher's answers per view, and
the student reads the view that shows the scene it was given:

- ``identity``: the frame as recorded.
- ``hflip``: LIGA's stereo flip (both images mirrored about their vertical axis and swapped, see
  :mod:`stereodistill.student.flip`). The scene is mirrored about the project frame's x-z plane: a point's
  ``y -> -y`` (rect ``x -> -x``), a box's centre likewise and its heading ``h -> -h``, wrapped to ``[-pi, pi)``.

Everything here works in the project frame (see :mod:`stereodistill.geometry.boxes`) and returns new arrays of
the input's dtype; nothing is changed in place. The teacher's flip augmentation mirrors with the same functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stereodistill.geometry.angles import wrap_angle

if TYPE_CHECKING:
    from stereodistill.data.prepared import FrameLabels

IDENTITY = "identity"
HFLIP = "hflip"
KNOWN_VIEWS: tuple[str, ...] = (IDENTITY, HFLIP)


def mirror_points(points: np.ndarray) -> np.ndarray:
    """Project-frame points ``(N, F)`` (``x, y, z``, features...) mirrored ``y -> -y``."""
    out = np.array(points, copy=True)
    out[:, 1] = -out[:, 1]
    return out


def mirror_boxes(boxes: np.ndarray) -> np.ndarray:
    """Project boxes ``(N, 7)`` mirrored ``y -> -y``, ``heading -> -heading`` wrapped to ``[-pi, pi)``.

    The wrap is computed in float64 and stored in the input's dtype. NaN rows (DontCare) stay NaN.
    """
    out = np.array(boxes, copy=True)
    out[:, 1] = -out[:, 1]
    out[:, 6] = wrap_angle(-out[:, 6])
    return out


def check_view(view: str) -> None:
    """Raise :class:`ValueError` unless ``view`` is one of :data:`KNOWN_VIEWS`."""
    if view not in KNOWN_VIEWS:
        raise ValueError(f"unknown view {view!r} (known: {', '.join(KNOWN_VIEWS)})")


def points_in_view(points: np.ndarray, view: str) -> np.ndarray:
    """Project-frame points ``(N, F)`` of the recorded frame as ``view`` shows them (``identity``: ``points`` itself)."""
    check_view(view)
    return mirror_points(points) if view == HFLIP else points


def boxes_in_view(boxes: np.ndarray, view: str) -> np.ndarray:
    """Project boxes ``(N, 7)`` of the recorded frame as ``view`` shows them (``identity``: ``boxes`` itself)."""
    check_view(view)
    return mirror_boxes(boxes) if view == HFLIP else boxes


def view_ground_truth(labels: FrameLabels, view: str) -> tuple[np.ndarray, list[str]]:
    """The ground truth of a frame as ``view`` shows it: every label line, in label order.

    Returns project boxes ``(G, 7)`` float32 (NaN rows for DontCare without a 3D box) and their KITTI types
    ``G`` str. The boxes are a new array for ``hflip``; for ``identity`` they may share memory with ``labels``.
    """
    boxes = boxes_in_view(np.asarray(labels.boxes, dtype=np.float32), view)
    return boxes, [str(t) for t in labels.types]
