"""KITTI object label and result files (``label_2/NNNNNN.txt``).

One object per line, 15 space-separated fields (16 for detection results, the last being ``score``)::

    type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]

``type`` is one of :data:`KITTI_CLASSES`, spelt exactly (KITTI's devkit compares names case-sensitively). A
name in another case (``car``, ``VAN``, often from converted labels) is refused with the file, the line and the
KITTI spelling rather than accepted: accepting it silently would drop the object from training (the grid's
classes and the related-class rule match exact names) and from evaluation, and rewriting it would make our
reading of a file differ from the devkit's.

``x1 y1 x2 y2`` is the 2D box in image_2 pixels; ``h w l`` the 3D size in metres; ``x y z`` the bottom-face
centre in rectified camera-0 coordinates; ``rotation_y`` the yaw about the camera's y (down) axis.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stereodistill.errors import InputError
from stereodistill.geometry.boxes import kitti_to_project_boxes

KITTI_CLASSES: tuple[str, ...] = (
    "Car",
    "Van",
    "Truck",
    "Pedestrian",
    "Person_sitting",
    "Cyclist",
    "Tram",
    "Misc",
    "DontCare",
)


@dataclass(frozen=True)
class KittiObject:
    """One line of a KITTI label or result file."""

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]
    dimensions: tuple[float, float, float]  # h, w, l (metres)
    location: tuple[float, float, float]  # bottom centre, rect camera frame
    rotation_y: float
    score: float | None = None

    def project_box(self) -> np.ndarray:
        """This object as a project box ``(7,)``: ``x, y, z_centre, l, w, h, heading``."""
        return kitti_to_project_boxes(
            np.array(self.location), np.array(self.dimensions), np.array([self.rotation_y])
        )[0]

    def to_line(self) -> str:
        fields = [
            self.type,
            f"{self.truncated:.2f}",
            str(int(self.occluded)),
            f"{self.alpha:.2f}",
            *(f"{v:.2f}" for v in self.bbox),
            *(f"{v:.2f}" for v in self.dimensions),
            *(f"{v:.2f}" for v in self.location),
            f"{self.rotation_y:.2f}",
        ]
        if self.score is not None:
            fields.append(f"{self.score:.4f}")
        return " ".join(fields)


def parse_label_line(line: str, path: str | Path = "<label>", lineno: int | None = None) -> KittiObject:
    fields = line.split()
    if len(fields) not in (15, 16):
        raise InputError(f"expected 15 fields (16 with a score), found {len(fields)}", path, lineno)
    kind = fields[0]
    if kind not in KITTI_CLASSES:
        spelt = [name for name in KITTI_CLASSES if name.lower() == kind.lower()]
        if spelt:
            raise InputError(
                f"class {kind!r} must be spelt {spelt[0]!r}: KITTI class names are case-sensitive", path, lineno
            )
        raise InputError(f"unknown class {kind!r} (KITTI classes: {', '.join(KITTI_CLASSES)})", path, lineno)
    try:
        values = [float(v) for v in fields[1:]]
    except ValueError:
        raise InputError("a numeric field is not a number", path, lineno) from None
    if not np.all(np.isfinite(values)):
        raise InputError("a numeric field is NaN or inf", path, lineno)
    if kind != "DontCare" and min(values[7:10]) < 0:
        raise InputError(f"negative size (h w l = {' '.join(fields[8:11])}) for a {kind}", path, lineno)
    occluded = values[1]
    if occluded != int(occluded) or int(occluded) not in (-1, 0, 1, 2, 3):
        raise InputError(f"occluded must be one of -1, 0, 1, 2, 3, got {fields[2]}", path, lineno)
    return KittiObject(
        type=kind,
        truncated=values[0],
        occluded=int(occluded),
        alpha=values[2],
        bbox=(values[3], values[4], values[5], values[6]),
        dimensions=(values[7], values[8], values[9]),
        location=(values[10], values[11], values[12]),
        rotation_y=values[13],
        score=values[14] if len(values) == 15 else None,
    )


def read_label_file(path: str | Path, missing_ok: bool = False) -> list[KittiObject]:
    """Parse a label or result file. Blank lines are skipped; a missing file is an error unless ``missing_ok``."""
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return []
        raise InputError("label file is missing", path)
    objects = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            objects.append(parse_label_line(line, path, lineno))
    return objects


def write_label_file(path: str | Path, objects: Iterable[KittiObject]) -> None:
    lines = [obj.to_line() for obj in objects]
    Path(path).write_text("".join(line + "\n" for line in lines))
