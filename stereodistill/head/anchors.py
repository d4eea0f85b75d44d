"""The anchor grid shared by the LiDAR teacher and the stereo student (the ``grid`` section of params.yaml).

Geometry (project frame, metres). The BEV plane ``[x_min, x_max) x [y_min, y_max)`` of ``point_cloud_range``
is cut into square cells of ``bev_cell_size``; ``nx = round((x_max - x_min) / cell)`` and likewise ``ny``.
Every cell carries one anchor per (class, rotation), centred on the **cell centre**:

    x = x_min + (ix + 0.5) * cell,   y = y_min + (iy + 0.5) * cell,   z = bottom_z + h / 2

with the class's ``size = (l, w, h)`` and ``heading = rotation``. That is the default ``anchor_placement:
cell_centre``. The alternative ``range_corners`` reproduces OpenPCDet's ``align_center: False`` (needed to decode
an imported OpenPCDet head, :mod:`stereodistill.teacher.import_openpcdet`): centres spread from ``x_min`` to
``x_max`` inclusive,

    x = x_min + ix * (x_max - x_min) / (nx - 1),   y = y_min + iy * (y_max - y_min) / (ny - 1)

a step slightly larger than the cell, so every anchor lies within half a cell of its cell's centre. Heights
are the same in both (OpenPCDet also shifts its bottom heights up by ``h / 2``).

Order. Anchors form a tensor of shape ``(ny, nx, C, R)`` flattened row-major, so

    anchor index = ((iy * nx + ix) * C + c) * R + r

i.e. per cell the ``A = C * R`` anchors are ordered ``[class][rotation]`` (as LIGA-Stereo / OpenPCDet). A dense
head output ``(B, A * K, ny, nx)`` has channel ``a * K + k`` for anchor ``a = c * R + r`` of the cell and value
``k``; :meth:`AnchorGrid.flatten_dense` turns it into ``(B, ny * nx * A, K)`` in anchor-index order.

Training targets. ``related_classes`` says how KITTI's Van and Person_sitting labels enter training (both
networks and the teacher cache's coverage, through :func:`~stereodistill.head.assigner.ground_truth_from_labels`):
``ignore`` (default) makes the anchors they overlap ignored, ``merge`` (LIGA-Stereo) trains on them as Car and
Pedestrian. Evaluation is KITTI's either way. It is optional in params.yaml.

The grid is part of the teacher/student contract: it is stored (:meth:`AnchorGrid.to_dict`) in every checkpoint
and in the teacher cache, and compared on load (:meth:`AnchorGrid.check_compatible`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stereodistill.errors import InputError

# Absolute tolerance for comparing two grids' floats and for "the cell divides the range".
FLOAT_TOLERANCE = 1e-6

_GRID_KEYS = ("point_cloud_range", "bev_cell_size", "rotations", "classes")
# Optional keys: absent means the default, and to_dict() writes them only when not at the default, so grids
# written before the key existed compare equal to new default grids.
_OPTIONAL_GRID_KEYS = ("anchor_placement", "related_classes")

CELL_CENTRE = "cell_centre"  # anchors at cell centres (default)
RANGE_CORNERS = "range_corners"  # OpenPCDet align_center False: x_min..x_max inclusive
ANCHOR_PLACEMENTS = (CELL_CENTRE, RANGE_CORNERS)
# How training reads KITTI's related types (Van for Car, Person_sitting for Pedestrian); the rule itself is
# stereodistill.head.assigner.ground_truth_from_labels.
RELATED_IGNORED = "ignore"  # anchors they overlap are neither positive nor negative (default, SECOND)
RELATED_MERGED = "merge"  # they are GT boxes of the related class (LIGA-Stereo's training)
RELATED_CLASS_RULES = (RELATED_IGNORED, RELATED_MERGED)
_CLASS_KEYS = ("name", "size", "bottom_z", "matched_iou", "unmatched_iou")


@dataclass(frozen=True)
class AnchorClass:
    """One detected class: anchor size ``(l, w, h)`` in metres, anchor bottom height and IoU thresholds."""

    name: str
    size: tuple[float, float, float]
    bottom_z: float
    matched_iou: float
    unmatched_iou: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": list(self.size),
            "bottom_z": self.bottom_z,
            "matched_iou": self.matched_iou,
            "unmatched_iou": self.unmatched_iou,
        }


@dataclass(frozen=True)
class AnchorGrid:
    """Anchor grid: BEV range and cell, anchor rotations and per-class anchors. Validated on construction.

    Construct with :meth:`from_params` (the ``grid`` section of params.yaml) or :meth:`from_dict`.
    Raises :class:`~stereodistill.errors.InputError` naming the offending field (``grid.classes[1].size``).
    """

    point_cloud_range: tuple[float, float, float, float, float, float]
    bev_cell_size: float
    rotations: tuple[float, ...]
    classes: tuple[AnchorClass, ...]
    anchor_placement: str = CELL_CENTRE  # CELL_CENTRE or RANGE_CORNERS (see the module docstring)
    related_classes: str = RELATED_IGNORED  # RELATED_IGNORED or RELATED_MERGED (see the module docstring)
    # Where the grid came from (params path, checkpoint), for error messages only; not compared or stored.
    source: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ construction and serialisation
    @classmethod
    def from_params(cls, section: Mapping[str, Any], source: str | Path | None = None) -> AnchorGrid:
        """Build from the ``grid`` mapping of params.yaml; ``source`` (e.g. the params path) prefixes errors."""
        src = None if source is None else str(source)
        if not isinstance(section, Mapping):
            raise InputError(f"grid: expected a mapping, got {type(section).__name__}", src)
        _check_keys(section, _GRID_KEYS, "grid", src, optional=_OPTIONAL_GRID_KEYS)
        placement = section.get("anchor_placement", CELL_CENTRE)
        if placement not in ANCHOR_PLACEMENTS:
            raise InputError(
                f"grid.anchor_placement: expected one of {', '.join(ANCHOR_PLACEMENTS)}, got {placement!r}",
                src,
            )
        related = section.get("related_classes", RELATED_IGNORED)
        if related not in RELATED_CLASS_RULES:
            raise InputError(
                f"grid.related_classes: expected one of {', '.join(RELATED_CLASS_RULES)}, got {related!r}",
                src,
            )
        raw_classes = section["classes"]
        if not isinstance(raw_classes, Sequence) or isinstance(raw_classes, str):
            raise InputError("grid.classes: expected a list of classes", src)
        classes = []
        for i, entry in enumerate(raw_classes):
            where = f"grid.classes[{i}]"
            if not isinstance(entry, Mapping):
                raise InputError(f"{where}: expected a mapping, got {type(entry).__name__}", src)
            _check_keys(entry, _CLASS_KEYS, where, src)
            if not isinstance(entry["name"], str) or not entry["name"]:
                raise InputError(f"{where}.name: expected a non-empty string, got {entry['name']!r}", src)
            size = _floats(entry["size"], f"{where}.size", src, length=3)
            classes.append(
                AnchorClass(
                    name=entry["name"],
                    size=(size[0], size[1], size[2]),
                    bottom_z=_float(entry["bottom_z"], f"{where}.bottom_z", src),
                    matched_iou=_float(entry["matched_iou"], f"{where}.matched_iou", src),
                    unmatched_iou=_float(entry["unmatched_iou"], f"{where}.unmatched_iou", src),
                )
            )
        pc_range = _floats(section["point_cloud_range"], "grid.point_cloud_range", src, length=6)
        return cls(
            point_cloud_range=(pc_range[0], pc_range[1], pc_range[2], pc_range[3], pc_range[4], pc_range[5]),
            bev_cell_size=_float(section["bev_cell_size"], "grid.bev_cell_size", src),
            rotations=tuple(_floats(section["rotations"], "grid.rotations", src)),
            classes=tuple(classes),
            anchor_placement=placement,
            related_classes=related,
            source=src,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path | None = None) -> AnchorGrid:
        """Inverse of :meth:`to_dict` (same layout as the params.yaml section)."""
        return cls.from_params(data, source)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict in the params.yaml layout (for checkpoints and the cache attributes).

        ``anchor_placement`` and ``related_classes`` are included only when not at their defaults.
        """
        out: dict[str, Any] = {
            "point_cloud_range": list(self.point_cloud_range),
            "bev_cell_size": self.bev_cell_size,
            "rotations": list(self.rotations),
            "classes": [c.to_dict() for c in self.classes],
        }
        if self.anchor_placement != CELL_CENTRE:
            out["anchor_placement"] = self.anchor_placement
        if self.related_classes != RELATED_IGNORED:
            out["related_classes"] = self.related_classes
        return out

    # ------------------------------------------------------------------ comparison
    def diff(self, other: AnchorGrid) -> str | None:
        """The first field where ``other`` differs, as ``"grid.<field>: <self value> != <other value>"``; else None.

        Floats are equal when within ``FLOAT_TOLERANCE`` (so a float32 round trip of a value still matches).
        """
        for key in ("point_cloud_range", "bev_cell_size", "rotations", "anchor_placement", "related_classes"):
            a, b = getattr(self, key), getattr(other, key)
            if not _values_equal(a, b):
                return f"grid.{key}: {_show(a)} != {_show(b)}"
        if len(self.classes) != len(other.classes):
            return f"grid.classes: {list(self.class_names)} != {list(other.class_names)}"
        for i, (ca, cb) in enumerate(zip(self.classes, other.classes, strict=True)):
            for key in _CLASS_KEYS:
                a, b = getattr(ca, key), getattr(cb, key)
                if not _values_equal(a, b):
                    return f"grid.classes[{i}].{key}: {_show(a)} != {_show(b)}"
        return None

    def check_compatible(self, other: AnchorGrid, what: str = "the stored anchor grid") -> None:
        """Raise :class:`InputError` if ``other`` (e.g. read from ``what``, a checkpoint) differs from ``self``.

        The message names the first differing field with this grid's value first.
        """
        difference = self.diff(other)
        if difference is not None:
            raise InputError(
                f"{what} does not match the configured anchor grid (configured != stored): {difference}",
                other.source,
            )

    # ------------------------------------------------------------------ sizes
    @property
    def nx(self) -> int:
        return round((self.point_cloud_range[3] - self.point_cloud_range[0]) / self.bev_cell_size)

    @property
    def ny(self) -> int:
        return round((self.point_cloud_range[4] - self.point_cloud_range[1]) / self.bev_cell_size)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_rotations(self) -> int:
        return len(self.rotations)

    @property
    def anchors_per_cell(self) -> int:
        """``A = C * R``."""
        return self.num_classes * self.num_rotations

    @property
    def num_anchors(self) -> int:
        return self.ny * self.nx * self.anchors_per_cell

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def class_id(self, name: str) -> int:
        """Index of class ``name`` in this grid; ``KeyError`` if absent."""
        try:
            return self.class_names.index(name)
        except ValueError:
            raise KeyError(f"class {name!r} is not in the anchor grid {list(self.class_names)}") from None

    # ------------------------------------------------------------------ anchors
    def anchor_index(self, iy: int, ix: int, class_id: int, rotation_id: int) -> int:
        """Flat index of the anchor of cell ``(iy, ix)``, class ``class_id`` and rotation ``rotation_id``."""
        return ((iy * self.nx + ix) * self.num_classes + class_id) * self.num_rotations + rotation_id

    def anchors(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """All anchors as project boxes ``(ny * nx * C * R, 7)`` in anchor-index order (computed in float64)."""
        x_min, y_min = self.point_cloud_range[0], self.point_cloud_range[1]
        cell = self.bev_cell_size
        f64 = torch.float64
        if self.anchor_placement == RANGE_CORNERS:
            x_max, y_max = self.point_cloud_range[3], self.point_cloud_range[4]
            xs = x_min + torch.arange(self.nx, dtype=f64) * ((x_max - x_min) / (self.nx - 1))
            ys = y_min + torch.arange(self.ny, dtype=f64) * ((y_max - y_min) / (self.ny - 1))
        else:
            xs = x_min + (torch.arange(self.nx, dtype=f64) + 0.5) * cell
            ys = y_min + (torch.arange(self.ny, dtype=f64) + 0.5) * cell
        shape = (self.ny, self.nx, self.num_classes, self.num_rotations)
        out = torch.empty(*shape, 7, dtype=f64)
        out[..., 0] = xs.view(1, -1, 1, 1)
        out[..., 1] = ys.view(-1, 1, 1, 1)
        per_class = torch.tensor([[c.bottom_z + c.size[2] / 2, *c.size] for c in self.classes], dtype=f64)
        out[..., 2:6] = per_class.view(1, 1, -1, 1, 4)
        out[..., 6] = torch.tensor(self.rotations, dtype=f64).view(1, 1, 1, -1)
        return out.reshape(-1, 7).to(device=device, dtype=dtype)

    def shared_anchors(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Tensor:
        """:meth:`anchors` built once per grid, device and dtype and shared by every caller: never modify it.

        Training and inference need them every step or frame (525k anchors on the KITTI grid, built in float64
        on the CPU): building and copying them each time costs more than the head's decoding.
        """
        return _shared_anchors(self, torch.device(device), dtype)

    def anchor_class_ids(self, device: torch.device | str | None = None) -> Tensor:
        """Class id of every anchor, ``(num_anchors,)`` long."""
        ids = torch.arange(self.num_classes, device=device).repeat_interleave(self.num_rotations)
        return ids.repeat(self.ny * self.nx)

    # ------------------------------------------------------------------ head-output layout
    def flatten_dense(self, dense: Tensor, values_per_anchor: int) -> Tensor:
        """Dense head output ``(B, A * K, ny, nx)`` -> per-anchor ``(B, ny * nx * A, K)`` in anchor-index order."""
        a, k = self.anchors_per_cell, values_per_anchor
        expected = (a * k, self.ny, self.nx)
        if dense.dim() != 4 or tuple(dense.shape[1:]) != expected:
            raise ValueError(
                f"expected a dense head output of shape (B, {a}*{k}, {self.ny}, {self.nx}), got {tuple(dense.shape)}"
            )
        b = dense.shape[0]
        return dense.permute(0, 2, 3, 1).reshape(b, self.num_anchors, k)

    def unflatten_dense(self, per_anchor: Tensor) -> Tensor:
        """Inverse of :meth:`flatten_dense`: ``(B, ny * nx * A, K)`` -> ``(B, A * K, ny, nx)``."""
        if per_anchor.dim() != 3 or per_anchor.shape[1] != self.num_anchors:
            raise ValueError(
                f"expected per-anchor values of shape (B, {self.num_anchors}, K), got {tuple(per_anchor.shape)}"
            )
        b, _, k = per_anchor.shape
        return per_anchor.reshape(b, self.ny, self.nx, self.anchors_per_cell * k).permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=8)
def _shared_anchors(grid: AnchorGrid, device: torch.device, dtype: torch.dtype) -> Tensor:
    return grid.anchors(device=device, dtype=dtype)


# ---------------------------------------------------------------------- validation helpers
def _check_keys(
    mapping: Mapping[str, Any],
    required: Sequence[str],
    where: str,
    src: str | None,
    optional: Sequence[str] = (),
) -> None:
    for key in required:
        if key not in mapping:
            raise InputError(f"{where}: missing key {key!r}", src)
    unknown = [k for k in mapping if k not in required and k not in optional]
    if unknown:
        expected = ", ".join([*required, *(f"{k} (optional)" for k in optional)])
        raise InputError(f"{where}: unknown key {unknown[0]!r} (expected {expected})", src)


def _float(value: Any, where: str, src: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: expected a number, got {value!r}", src)
    if not math.isfinite(value):
        raise InputError(f"{where}: expected a finite number, got {value!r}", src)
    return float(value)


def _floats(value: Any, where: str, src: str | None, length: int | None = None) -> list[float]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InputError(f"{where}: expected a list of numbers, got {value!r}", src)
    if length is not None and len(value) != length:
        raise InputError(f"{where}: expected {length} numbers, got {len(value)}", src)
    return [_float(v, f"{where}[{i}]", src) for i, v in enumerate(value)]


def _validate(grid: AnchorGrid) -> None:
    src = grid.source
    x_min, y_min, z_min, x_max, y_max, z_max = grid.point_cloud_range
    for axis, lo, hi in (("x", x_min, x_max), ("y", y_min, y_max), ("z", z_min, z_max)):
        if not hi > lo:
            raise InputError(
                f"grid.point_cloud_range: {axis}_max ({hi}) must be greater than {axis}_min ({lo})", src
            )
    cell = grid.bev_cell_size
    if not cell > 0:
        raise InputError(f"grid.bev_cell_size: must be positive, got {cell}", src)
    for axis, extent in (("x", x_max - x_min), ("y", y_max - y_min)):
        cells = extent / cell
        if round(cells) < 1 or abs(cells - round(cells)) * cell > FLOAT_TOLERANCE:
            raise InputError(
                f"grid.bev_cell_size: {cell} does not divide the {axis} extent {extent:g} of "
                f"grid.point_cloud_range into whole cells ({cells:g})",
                src,
            )
    if grid.anchor_placement not in ANCHOR_PLACEMENTS:
        raise InputError(
            f"grid.anchor_placement: expected one of {', '.join(ANCHOR_PLACEMENTS)}, got {grid.anchor_placement!r}",
            src,
        )
    if grid.anchor_placement == RANGE_CORNERS and (
        round((x_max - x_min) / cell) < 2 or round((y_max - y_min) / cell) < 2
    ):
        raise InputError("grid.anchor_placement: range_corners needs at least 2 cells in x and in y", src)
    if not grid.rotations:
        raise InputError("grid.rotations: needs at least one rotation", src)
    if not grid.classes:
        raise InputError("grid.classes: needs at least one class", src)
    seen: set[str] = set()
    for i, c in enumerate(grid.classes):
        where = f"grid.classes[{i}]"
        if c.name in seen:
            raise InputError(f"{where}.name: duplicate class name {c.name!r}", src)
        seen.add(c.name)
        if len(c.size) != 3 or not all(s > 0 for s in c.size):
            raise InputError(
                f"{where}.size: expected three positive numbers l, w, h, got {list(c.size)}", src
            )
        if not 0 < c.unmatched_iou <= c.matched_iou <= 1:
            raise InputError(
                f"{where}: need 0 < unmatched_iou <= matched_iou <= 1, "
                f"got unmatched_iou {c.unmatched_iou}, matched_iou {c.matched_iou}",
                src,
            )


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, tuple | list):
        return (
            isinstance(b, tuple | list)
            and len(a) == len(b)
            and all(_values_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, float):
        return isinstance(b, int | float) and abs(a - b) <= FLOAT_TOLERANCE
    return a == b


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)
