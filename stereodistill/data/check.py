"""Sanity check of a KITTI-layout dataset: missing or corrupt files, LiDAR support and 2D/3D consistency of labels.

For each frame the report (``stereodistill data check --json``) holds::

    {"frames": {"000008": {
        "missing": ["training/image_3/000008.png", ...],          # paths relative to the root
        "corrupt": [{"file": "training/velodyne/000008.bin", "error": "..."}, ...],
        "objects": [{"type": "Car", "truncated": 0.0, "occluded": 0,
                     "box": [x, y, z, l, w, h, heading],          # project frame
                     "points_in_box": 1325,                       # LiDAR points inside the 3D box
                     "bbox_label": [x1, y1, x2, y2],              # the label's 2D box
                     "bbox_projected": [x1, y1, x2, y2],          # 3D box projected with P2, clipped to image_2
                     "bbox_iou": 0.93}, ...],
        "stereo": {"points": 500,                                 # LiDAR points matched between the images
                   "median_abs_error_px": 0.45,                   # |image disparity - calibration disparity|
                   "share_within_1px": 0.74,                      # share of points within 1 px
                   "ok": true}}},                                 # see stereodistill.data.stereo_check
     "summary": {..., "frames_with_stereo_mismatch": ["000042", ...], ...}}

DontCare lines are not objects here. ``points_in_box`` is ``null`` when the velodyne or calib file is
unusable; ``bbox_projected`` is ``null`` when calib is unusable (then ``bbox_iou`` is ``null``) or when
the box is behind the camera or outside the image (then ``bbox_iou`` is 0). ``stereo`` compares, for up to
500 LiDAR points, the disparity the calibration implies with the one at which image_2 and image_3 match
(:mod:`stereodistill.data.stereo_check`); it is ``null`` when image_2, image_3, velodyne or calib is unusable
(or the pair's sizes differ). A frame whose ``ok`` is false (swapped images, a right image from another
frame, a wrong ``P3``) is listed in the summary; like low IoUs, it does not change the exit status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from stereodistill.data.kitti import (
    KittiObjectDataset,
    check_same_size,
    read_image,
    read_image_size,
    read_velodyne,
)
from stereodistill.data.labels import KittiObject, read_label_file
from stereodistill.data.stereo_check import (
    MAX_MEDIAN_ERROR_PX,
    MIN_POINTS,
    MIN_SHARE_WITHIN_1PX,
    stereo_agreement,
)
from stereodistill.errors import InputError
from stereodistill.geometry.boxes import boxes_to_image_2d, iou_2d, points_in_boxes
from stereodistill.geometry.calibration import Calibration

IOU_WARNING = 0.9  # the summary counts objects whose label and projected 2D boxes overlap less than this

T = TypeVar("T")


@dataclass
class _FrameData:
    """What could be loaded of one frame (``None`` where a file is missing or corrupt)."""

    image_2: np.ndarray | None = None
    image_3: np.ndarray | None = None
    points_velo: np.ndarray | None = None
    calib: Calibration | None = None
    objects: list[KittiObject] | None = None
    stereo_pair: bool = True  # False when image_2 and image_3 differ in size
    missing: list[str] = field(default_factory=list)
    corrupt: list[dict[str, str]] = field(default_factory=list)


def _read_verified_image(path: Path) -> np.ndarray:
    # Decoding alone tolerates some damage (a bad chunk checksum, a missing end chunk); verify() does not.
    read_image_size(path)
    return read_image(path)


def _load_frame(dataset: KittiObjectDataset, frame_id: str) -> _FrameData:
    paths = dataset.paths(frame_id)
    data = _FrameData()

    def relative(path: Path) -> str:
        return path.relative_to(dataset.root).as_posix()

    def attempt(path: Path, loader: Callable[[Path], T]) -> T | None:
        if not path.is_file():
            data.missing.append(relative(path))
            return None
        try:
            return loader(path)
        except InputError as err:
            data.corrupt.append({"file": relative(path), "error": str(err)})
            return None

    data.image_2 = attempt(paths.image_2, _read_verified_image)
    data.image_3 = attempt(paths.image_3, _read_verified_image)
    if data.image_2 is not None and data.image_3 is not None:
        try:
            check_same_size(data.image_2.shape[:2], data.image_3.shape[:2], paths.image_2, paths.image_3)
        except InputError as err:
            data.corrupt.append({"file": relative(paths.image_3), "error": str(err)})
            data.stereo_pair = False
    data.points_velo = attempt(paths.velodyne, read_velodyne)
    data.calib = attempt(paths.calib, Calibration.from_file)
    data.objects = [] if paths.label_2 is None else attempt(paths.label_2, read_label_file)
    return data


def _rounded(values: np.ndarray, digits: int) -> list[float]:
    return [round(float(v), digits) for v in values]


def _object_reports(data: _FrameData) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray | None]:
    """Per-object report entries, the objects' project boxes ``(G, 7)`` and points in the project frame."""
    objects = [obj for obj in data.objects or [] if obj.type != "DontCare"]
    boxes = np.array([obj.project_box() for obj in objects]).reshape(-1, 7)
    points = None
    if data.points_velo is not None and data.calib is not None:
        points = np.concatenate(
            [data.calib.velo_to_project(data.points_velo[:, :3]), data.points_velo[:, 3:]], axis=1
        )
    counts = points_in_boxes(points, boxes).sum(axis=1) if points is not None else None

    image = data.image_2 if data.image_2 is not None else data.image_3
    image_size = None if image is None else image.shape[:2]
    projected = valid = None
    if data.calib is not None:
        projected, valid = boxes_to_image_2d(boxes, data.calib, image_size=image_size)

    reports = []
    for i, obj in enumerate(objects):
        entry: dict[str, Any] = {
            "type": obj.type,
            "truncated": obj.truncated,
            "occluded": obj.occluded,
            "box": _rounded(boxes[i], 4),
            "points_in_box": None if counts is None else int(counts[i]),
            "bbox_label": list(obj.bbox),
            "bbox_projected": None,
            "bbox_iou": None,
        }
        if projected is not None:
            if valid[i]:
                entry["bbox_projected"] = _rounded(projected[i], 2)
                entry["bbox_iou"] = round(float(iou_2d(np.array(obj.bbox), projected[i])[0, 0]), 4)
            else:
                entry["bbox_iou"] = 0.0
        reports.append(entry)
    return reports, boxes, points


def _stereo_report(data: _FrameData) -> dict[str, Any] | None:
    if data.image_2 is None or data.image_3 is None or not data.stereo_pair:
        return None
    if data.points_velo is None or data.calib is None:
        return None
    return stereo_agreement(data.image_2, data.image_3, data.calib, data.points_velo).report()


def _write_pictures(
    png_dir: Path,
    frame_id: str,
    data: _FrameData,
    boxes: np.ndarray,
    points: np.ndarray | None,
    types: list[str],
) -> None:
    from stereodistill.data.visualise import draw_bev, draw_image_overlay

    if data.image_2 is not None and data.calib is not None:
        draw_image_overlay(data.image_2, data.calib, points, boxes, types).save(
            png_dir / f"{frame_id}_image.png"
        )
    if points is not None:
        draw_bev(points, boxes, types).save(png_dir / f"{frame_id}_bev.png")


def check_frame(dataset: KittiObjectDataset, frame_id: str, png_dir: Path | None = None) -> dict[str, Any]:
    """The report entry of one frame (see the module docstring); writes its pictures to ``png_dir`` if given."""
    data = _load_frame(dataset, frame_id)
    objects, boxes, points = _object_reports(data)
    if png_dir is not None:
        _write_pictures(png_dir, frame_id, data, boxes, points, [o["type"] for o in objects])
    return {
        "missing": data.missing,
        "corrupt": data.corrupt,
        "objects": objects,
        "stereo": _stereo_report(data),
    }


def summarize(frames: dict[str, dict[str, Any]]) -> dict[str, Any]:
    objects = [obj for frame in frames.values() for obj in frame["objects"]]
    return {
        "frames_checked": len(frames),
        "frames_with_missing_files": [fid for fid, frame in frames.items() if frame["missing"]],
        "frames_with_corrupt_files": [fid for fid, frame in frames.items() if frame["corrupt"]],
        "objects": len(objects),
        "objects_with_0_points": sum(1 for obj in objects if obj["points_in_box"] == 0),
        "objects_with_bbox_iou_below_threshold": sum(
            1 for obj in objects if obj["bbox_iou"] is not None and obj["bbox_iou"] < IOU_WARNING
        ),
        "bbox_iou_threshold": IOU_WARNING,
        "frames_without_stereo_check": [fid for fid, frame in frames.items() if frame["stereo"] is None],
        "frames_with_stereo_mismatch": [
            fid for fid, frame in frames.items() if frame["stereo"] is not None and not frame["stereo"]["ok"]
        ],
        "stereo_thresholds": {
            "min_points": MIN_POINTS,
            "max_median_abs_error_px": MAX_MEDIAN_ERROR_PX,
            "min_share_within_1px": MIN_SHARE_WITHIN_1PX,
        },
    }


def check_dataset(
    dataset: KittiObjectDataset,
    frame_ids: Sequence[str] | None = None,
    png_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Check ``frame_ids`` (default: every frame of ``dataset``); returns ``{"frames": ..., "summary": ...}``."""
    ids = list(dataset.frame_ids if frame_ids is None else frame_ids)
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
    frames = {}
    for frame_id in tqdm(ids, desc="checking frames", unit="frame", disable=None if progress else True):
        frames[frame_id] = check_frame(dataset, frame_id, png_dir)
    return {"frames": frames, "summary": summarize(frames)}


def has_file_problems(report: dict[str, Any]) -> bool:
    """True when any frame of ``report`` has a missing or corrupt file (``data check`` then exits 1)."""
    summary = report["summary"]
    return bool(summary["frames_with_missing_files"] or summary["frames_with_corrupt_files"])


def format_summary(report: dict[str, Any], max_ids: int = 10) -> str:
    """A few human-readable lines about ``report``."""

    def ids(frame_ids: list[str]) -> str:
        if not frame_ids:
            return ""
        shown = ", ".join(frame_ids[:max_ids])
        more = f", ... ({len(frame_ids) - max_ids} more)" if len(frame_ids) > max_ids else ""
        return f" ({shown}{more})"

    s = report["summary"]
    return "\n".join(
        [
            f"frames checked: {s['frames_checked']}",
            f"frames with missing files: {len(s['frames_with_missing_files'])}{ids(s['frames_with_missing_files'])}",
            f"frames with corrupt files: {len(s['frames_with_corrupt_files'])}{ids(s['frames_with_corrupt_files'])}",
            f"objects (DontCare excluded): {s['objects']}",
            f"objects with 0 LiDAR points: {s['objects_with_0_points']}",
            f"objects with 2D IoU(label box, projected 3D box) < {s['bbox_iou_threshold']}: "
            f"{s['objects_with_bbox_iou_below_threshold']}",
            f"frames without a stereo check (image_3, velodyne or calib unusable): "
            f"{len(s['frames_without_stereo_check'])}{ids(s['frames_without_stereo_check'])}",
            f"frames whose stereo pair disagrees with the calibration (median error > "
            f"{s['stereo_thresholds']['max_median_abs_error_px']} px, share within 1 px < "
            f"{s['stereo_thresholds']['min_share_within_1px']} or < {s['stereo_thresholds']['min_points']} "
            f"points): "
            f"{len(s['frames_with_stereo_mismatch'])}{ids(s['frames_with_stereo_mismatch'])}",
        ]
    )
