"""Debug pictures for ``stereodistill data check --png``: boxes and LiDAR over the left image, and a BEV.

Inputs are in the project frame (x forward, y left, z up; see :mod:`stereodistill.geometry.frames`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from stereodistill.geometry.boxes import BOX_EDGES, box_corners
from stereodistill.geometry.calibration import Calibration

CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "Car": (0, 255, 0),
    "Van": (0, 200, 120),
    "Truck": (0, 160, 200),
    "Pedestrian": (255, 60, 60),
    "Person_sitting": (255, 140, 140),
    "Cyclist": (255, 200, 0),
    "Tram": (160, 100, 255),
    "Misc": (200, 200, 200),
}
_OTHER_COLOUR = (255, 255, 255)
_NEAR = 0.1  # metres: wireframe edges with an end closer to the image plane than this are not drawn


def colour_ramp(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``values (N,)`` linearly from ``[low, high]`` to a red -> yellow -> green -> blue ramp, ``(N, 3)`` uint8."""
    t = np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    stops = np.array([[255, 0, 0], [255, 255, 0], [0, 255, 0], [0, 128, 255], [0, 0, 255]], dtype=np.float64)
    position = t * (len(stops) - 1)
    index = np.minimum(position.astype(int), len(stops) - 2)
    frac = (position - index)[:, None]
    return (stops[index] * (1 - frac) + stops[index + 1] * frac).astype(np.uint8)


def _paint_points(
    canvas: np.ndarray, cols: np.ndarray, rows: np.ndarray, colours: np.ndarray, size: int
) -> None:
    """Paint ``size x size`` squares at integer pixel positions into ``canvas (H, W, 3)`` in place."""
    height, width = canvas.shape[:2]
    for dr in range(size):
        for dc in range(size):
            r, c = rows + dr, cols + dc
            ok = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            canvas[r[ok], c[ok]] = colours[ok]


def draw_image_overlay(
    image: np.ndarray,
    calib: Calibration,
    points: np.ndarray | None,
    boxes: np.ndarray,
    types: list[str],
    max_depth: float = 60.0,
) -> Image.Image:
    """``image (H, W, 3)`` uint8 with LiDAR ``points (N, >=3)`` coloured by depth and ``boxes (G, 7)`` as wireframes."""
    canvas = image.copy()
    if points is not None and len(points):
        uv, depth = calib.project_to_image(points[:, :3], camera=2)
        front = depth > 0
        cols = np.floor(uv[front, 0] + 0.5).astype(np.int64)
        rows = np.floor(uv[front, 1] + 0.5).astype(np.int64)
        _paint_points(canvas, cols, rows, colour_ramp(depth[front], 0.0, max_depth), size=2)
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for corners, kind in zip(box_corners(boxes), types, strict=True):
        uv, depth = calib.project_to_image(corners, camera=2)
        colour = CLASS_COLOURS.get(kind, _OTHER_COLOUR)
        for a, b in BOX_EDGES:
            if depth[a] > _NEAR and depth[b] > _NEAR:
                draw.line([tuple(uv[a]), tuple(uv[b])], fill=colour, width=2)
    return picture


def draw_bev(
    points: np.ndarray | None,
    boxes: np.ndarray,
    types: list[str],
    x_range: tuple[float, float] = (0.0, 70.0),
    y_range: tuple[float, float] = (-40.0, 40.0),
    cell: float = 0.1,
) -> Image.Image:
    """Bird's-eye view: forward (+x) is up, left (+y) is left; points coloured by height, boxes as outlines.

    One pixel is ``cell`` metres; the camera sits at the bottom centre (a white triangle).
    """
    height = round((x_range[1] - x_range[0]) / cell)
    width = round((y_range[1] - y_range[0]) / cell)

    def to_pixels(xy: np.ndarray) -> np.ndarray:
        return np.stack([(y_range[1] - xy[:, 1]) / cell, (x_range[1] - xy[:, 0]) / cell], axis=-1)

    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    if points is not None and len(points):
        px = np.floor(to_pixels(points[:, :2])).astype(np.int64)
        _paint_points(canvas, px[:, 0], px[:, 1], colour_ramp(points[:, 2], -2.5, 1.0), size=1)
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for box, corners, kind in zip(boxes, box_corners(boxes), types, strict=True):
        colour = CLASS_COLOURS.get(kind, _OTHER_COLOUR)
        outline = [tuple(p) for p in to_pixels(corners[:4, :2])]
        draw.polygon(outline, outline=colour, width=2)
        front_centre = box[:2] + 0.5 * box[3] * np.array([np.cos(box[6]), np.sin(box[6])])
        draw.line([tuple(p) for p in to_pixels(np.stack([box[:2], front_centre]))], fill=colour, width=2)
    ego = to_pixels(np.array([[1.5, 0.0], [0.0, 0.8], [0.0, -0.8]]))
    draw.polygon([tuple(p) for p in ego], fill=(255, 255, 255))
    return picture
