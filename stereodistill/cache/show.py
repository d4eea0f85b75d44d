"""``stereodistill cache show``: a bird's-eye picture of one frame and view of the teacher cache.

The picture (Pillow, forward +x up, left +y left, as :func:`stereodistill.data.visualise.draw_bev`) covers the
anchor grid's BEV range with ``pixels_per_cell`` pixels per grid cell and shows

- a heat map of the teacher's **cell score**: ``sigmoid(max logit)`` over the cell's ``A = C * R`` anchors and
  all ``C`` classes (black 0 -> blue -> purple -> pale violet 1), one square per cell (with ``range_corners``
  anchor placement the anchors sit up to half a cell off their square's centre); or, with ``heat="features"``,
  the L2 norm of the teacher's cached BEV feature at each in-box cell, divided by the frame's largest (black
  elsewhere): the cells and targets of LIGA's feature imitation;
- the teacher's detections as white rotated rectangles with a heading tick: the **covered** anchors (the only
  ones with a cached box) scored as :func:`stereodistill.head.decode.decode_frame` scores them (class-agnostic
  max sigmoid by default), above ``score_threshold``, after rotated NMS;
- optionally the ground truth of a prepared split in the class colours of ``draw_bev`` (mirrored ``y -> -y``
  for the ``hflip`` view, as the cache's boxes are).

Every anchor scoring at least the frame's ``score_floor_reached`` is covered, so with ``score_threshold`` at or
above it the detections equal a full decode of the teacher's output; below it anchors may be missing (the
result carries a note saying so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from stereodistill.cache.reader import CachedFeatures, CachedFrame, TeacherCache
from stereodistill.data.prepared import PreparedSplit
from stereodistill.data.visualise import draw_bev
from stereodistill.errors import InputError
from stereodistill.geometry.views import IDENTITY, view_ground_truth
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.decode import Detections, decode_frame
from stereodistill.head.settings import DecodeSettings

# Not a KITTI class: draw_bev draws boxes of unknown types in white.
TEACHER_TYPE = "teacher"
# Drawing defaults: SECOND's decoding, but only boxes scoring >= 0.3 (0.1 clutters an untrained teacher's picture).
SHOW_SETTINGS = DecodeSettings(score_threshold=0.3)
# Heat-map colour stops at scores 0, 0.1, 0.5, 1: away from white and from every class colour of draw_bev.
_HEAT_STOPS = np.array([0.0, 0.1, 0.5, 1.0])
_HEAT_COLOURS = np.array([[0, 0, 0], [20, 30, 130], [130, 40, 200], [225, 170, 255]], dtype=np.float64)


@dataclass(frozen=True)
class ShownFrame:
    """The picture of one cached frame and what is on it.

    ``image``: RGB, ``nx * pixels_per_cell`` rows by ``ny * pixels_per_cell`` columns; ``cell_scores (ny, nx)``
    float32; ``detections``: the drawn teacher boxes (project frame of the view); ``gt_boxes (G, 7)`` and
    ``gt_types`` the drawn ground truth (empty without a prepared split); ``notes``: caveats for the user.
    """

    image: Image.Image
    frame_id: str
    view: str
    cell_scores: np.ndarray
    detections: Detections
    gt_boxes: np.ndarray
    gt_types: list[str]
    notes: list[str] = field(default_factory=list)


HEATS = ("score", "features")


def cell_max_scores(cls_logits: Tensor, grid: AnchorGrid) -> np.ndarray:
    """``(ny, nx)`` float32: sigmoid of the largest logit over each cell's anchors and classes.

    ``cls_logits (N, C)`` in the grid's anchor order ``((iy * nx + ix) * C + c) * R + r``.
    """
    per_cell = cls_logits.reshape(grid.ny, grid.nx, grid.anchors_per_cell * grid.num_classes)
    return torch.sigmoid(per_cell.float().max(dim=2).values).numpy()


def cell_feature_norms(features: CachedFeatures, grid: AnchorGrid) -> np.ndarray:
    """``(ny, nx)`` float32 in ``[0, 1]``: each in-box cell's feature L2 norm over the frame's largest; 0 elsewhere."""
    norms = np.zeros(grid.ny * grid.nx, np.float32)
    values = features.bev.float().norm(dim=1).numpy()
    if values.size:
        norms[features.cell.numpy()] = values / max(float(values.max()), 1e-12)
    return norms.reshape(grid.ny, grid.nx)


def covered_detections(cached: CachedFrame, settings: DecodeSettings = SHOW_SETTINGS) -> Detections:
    """The teacher's detections among the covered anchors: threshold, top-k and rotated NMS as ``decode_frame``.

    The cached boxes are already decoded with their direction resolved; zero residual codes on them as anchors
    (and no direction logits) reproduce them exactly, so ``decode_frame`` does the rest.
    """
    logits = cached.cls_logits[cached.covered_index]
    boxes = cached.boxes.float()
    return decode_frame(logits, torch.zeros_like(boxes), None, boxes, settings)


def heat_colours(scores: np.ndarray) -> np.ndarray:
    """``scores (...)`` in ``[0, 1]`` -> ``(..., 3)`` uint8 colours of the heat map (piecewise linear)."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    channels = [np.interp(s, _HEAT_STOPS, _HEAT_COLOURS[:, k]) for k in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def _overlay(canvas: np.ndarray, layer: Image.Image) -> None:
    """Copy the non-black pixels of ``layer`` onto ``canvas (H, W, 3)`` in place."""
    pixels = np.asarray(layer)
    drawn = pixels.any(axis=2)
    canvas[drawn] = pixels[drawn]


def render_bev(
    grid: AnchorGrid,
    cell_scores: np.ndarray,
    teacher_boxes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_types: list[str],
    pixels_per_cell: int = 4,
    title: str | None = None,
) -> Image.Image:
    """The picture described in the module docstring; boxes ``(K, 7)`` / ``(G, 7)`` in the project frame."""
    if pixels_per_cell < 1:
        raise ValueError(f"pixels_per_cell must be >= 1, got {pixels_per_cell}")
    x_min, y_min, _, x_max, y_max, _ = grid.point_cloud_range
    pixel = grid.bev_cell_size / pixels_per_cell
    # Row r shows cell ix = nx - 1 - r (forward is up), column c shows iy = ny - 1 - c (left is left).
    heat = heat_colours(cell_scores.T[::-1, ::-1])
    size = (grid.ny * pixels_per_cell, grid.nx * pixels_per_cell)
    canvas = np.array(Image.fromarray(np.ascontiguousarray(heat)).resize(size, Image.Resampling.NEAREST))
    # Ground truth last, so it stays visible among the teacher's boxes.
    for boxes, types in ((teacher_boxes, [TEACHER_TYPE] * len(teacher_boxes)), (gt_boxes, gt_types)):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        _overlay(canvas, draw_bev(None, boxes, types, (x_min, x_max), (y_min, y_max), pixel))
    picture = Image.fromarray(canvas)
    if title:
        ImageDraw.Draw(picture).text((4, 4), title, fill=(255, 255, 255))
    return picture


def frame_ground_truth(split: PreparedSplit, frame_id: str, view: str) -> tuple[np.ndarray, list[str]]:
    """Labelled boxes ``(G, 7)`` (DontCare without a 3D box left out) and their KITTI types, seen in ``view``.

    Raises :class:`InputError` when the split has no frame ``frame_id``.
    """
    try:
        index = split.frame_ids.index(frame_id)
    except ValueError:
        raise InputError(
            f"frame {frame_id!r} is not in the prepared split ({len(split)} frames, "
            f"{split.frame_ids[0] if len(split) else '-'}..{split.frame_ids[-1] if len(split) else '-'})",
            split.path,
        ) from None
    boxes, types = view_ground_truth(split.labels(index), view)
    real = np.isfinite(boxes).all(axis=1)
    return boxes[real], [t for t, keep in zip(types, real, strict=True) if keep]


def show_frame(
    store: str | Path,
    frame_id: str,
    view: str = IDENTITY,
    prepared: str | Path | None = None,
    settings: DecodeSettings = SHOW_SETTINGS,
    pixels_per_cell: int = 4,
    heat: str = "score",
) -> ShownFrame:
    """Picture frame ``frame_id`` (its id, not its index) of the cache ``store`` seen through ``view``.

    ``prepared``: a prepared split (HDF5) whose labels are drawn; ``heat``: ``score`` or ``features`` (module
    docstring). Raises :class:`InputError` naming an unknown frame or view, a prepared split without the frame,
    or a store without features.
    """
    if heat not in HEATS:
        raise ValueError(f"heat must be one of {HEATS}, got {heat!r}")
    cache = TeacherCache(store)
    cached = cache.read(str(frame_id), view)
    grid = cache.grid
    gt_boxes, gt_types = np.zeros((0, 7), np.float32), []
    if prepared is not None:
        gt_boxes, gt_types = frame_ground_truth(PreparedSplit(prepared), cached.frame_id, view)
    scores = cell_max_scores(cached.cls_logits, grid)
    heat_map = scores
    if heat == "features":
        heat_map = cell_feature_norms(cache.read_features(cached.frame_id, view), grid)
    detections = covered_detections(cached, settings)
    notes = []
    if settings.score_threshold < cached.score_floor_reached - 1e-6:
        notes.append(
            f"score threshold {settings.score_threshold} is below this frame's cached score floor "
            f"{cached.score_floor_reached:.3g}: anchors scoring in between have no cached box and are not drawn"
        )
    title = (
        f"{cached.frame_id} {view}: {len(detections)} teacher boxes (score >= {settings.score_threshold:g})"
        + (f", {len(gt_types)} GT" if prepared is not None else "")
    )
    image = render_bev(grid, heat_map, detections.boxes.numpy(), gt_boxes, gt_types, pixels_per_cell, title)
    return ShownFrame(image, cached.frame_id, view, scores, detections, gt_boxes, gt_types, notes)
