"""KITTI labels of a synthetic frame: 3D boxes, 2D boxes, truncation, occlusion and DontCare regions."""

from __future__ import annotations

import numpy as np

from stereodistill.data.labels import KittiObject
from stereodistill.data.synth.presets import SynthPreset
from stereodistill.data.synth.raycast import Hits
from stereodistill.data.synth.scene import Scene
from stereodistill.data.synth.shapes import Primitives
from stereodistill.geometry.boxes import boxes_to_image_2d, observation_angle, project_to_kitti_boxes
from stereodistill.geometry.calibration import Calibration

# Visible fraction of an object's unoccluded pixels at or above which it counts as KITTI occlusion 0 / 1;
# below the second it is 2 ("largely occluded").
FULLY_VISIBLE = 0.8
PARTLY_VISIBLE = 0.4


def visible_pixels(hits: Hits, prims: Primitives, object_count: int) -> np.ndarray:
    """Pixels ``(O,)`` of image_2 in which each object is the first surface hit."""
    prim = hits.prim[hits.prim >= 0]
    owner = prims.owner[prim]
    return np.bincount(owner[owner >= 0], minlength=object_count)[:object_count]


def occlusion_level(visible: int, unoccluded: int) -> int:
    """KITTI occlusion state from the visible fraction of the pixels an object would cover on its own."""
    fraction = visible / max(unoccluded, 1)
    if fraction >= FULLY_VISIBLE:
        return 0
    if fraction >= PARTLY_VISIBLE:
        return 1
    return 2


def truncation(box: np.ndarray, calib: Calibration, image_size: tuple[int, int]) -> float:
    """Fraction of the unclipped projected 2D box's area that lies outside image_2 (KITTI's truncation)."""
    full, valid = boxes_to_image_2d(box[None], calib)
    clipped, valid_clipped = boxes_to_image_2d(box[None], calib, image_size=image_size)
    if not (valid[0] and valid_clipped[0]):
        return 1.0
    area = (full[0, 2] - full[0, 0]) * (full[0, 3] - full[0, 1])
    inside = (clipped[0, 2] - clipped[0, 0]) * (clipped[0, 3] - clipped[0, 1])
    return float(np.clip(1.0 - inside / area, 0.0, 1.0)) if area > 0 else 1.0


def dont_care(bbox: np.ndarray) -> KittiObject:
    """A DontCare region as KITTI writes it: 2D box only, every 3D field at its sentinel."""
    return KittiObject(
        type="DontCare",
        truncated=-1.0,
        occluded=-1,
        alpha=-10.0,
        bbox=tuple(float(v) for v in bbox),
        dimensions=(-1.0, -1.0, -1.0),
        location=(-1000.0, -1000.0, -1000.0),
        rotation_y=-10.0,
    )


def annotate(
    scene: Scene, prims: Primitives, left_hits: Hits, calib: Calibration, preset: SynthPreset
) -> tuple[list[KittiObject], list[int]]:
    """Labels of image_2 and, per label, the index of its object in ``scene.objects``.

    An object gets a label when its projected box meets the image and at least ``min_visible_pixels`` of it
    are visible: a full label up to ``label_range`` metres ahead, a DontCare region beyond.
    """
    image_size = (preset.image_height, preset.image_width)
    visible = visible_pixels(left_hits, prims, len(scene.objects))
    labels: list[KittiObject] = []
    sources: list[int] = []
    far: list[tuple[KittiObject, int]] = []
    for index, obj in enumerate(scene.objects):
        if visible[index] < preset.min_visible_pixels:
            continue
        bbox, valid = boxes_to_image_2d(obj.box[None], calib, image_size=image_size)
        if not valid[0]:
            continue
        bbox = np.round(bbox[0], 2)
        if obj.box[0] > preset.label_range:
            far.append((dont_care(bbox), index))
            continue
        location, dims, rotation_y = project_to_kitti_boxes(obj.box[None])
        location, dims, ry = np.round(location[0], 2), np.round(dims[0], 2), round(float(rotation_y[0]), 2)
        labels.append(
            KittiObject(
                type=obj.kind,
                truncated=round(truncation(obj.box, calib, image_size), 2),
                occluded=occlusion_level(int(visible[index]), left_hits.unoccluded.get(index, 0)),
                alpha=round(float(observation_angle(location[None], np.array([ry]))[0]), 2),
                bbox=tuple(float(v) for v in bbox),
                dimensions=tuple(float(v) for v in dims),
                location=tuple(float(v) for v in location),
                rotation_y=ry,
            )
        )
        sources.append(index)
    for label, index in far:
        labels.append(label)
        sources.append(index)
    return labels, sources
