"""Prepared splits: one validated KITTI split packed into one HDF5 file, and a map dataset that reads it.

``prepare_split`` first validates every frame of the split (all files present and parseable, stereo
pairs of equal size); any problem raises :class:`~stereodistill.errors.InputError` naming the file
(and line) before anything is written. It then writes ``.OUT.h5.tmp-<pid>`` and renames it to
``OUT.h5`` when complete, so a file named ``OUT.h5`` is always finished; on error the temp file is
removed (a killed process can leave a ``.tmp-<pid>`` file, never an ``OUT.h5``; the next run deletes it).

Schema (``schema_version`` 1). ``F`` frames, ``G`` label lines, ``P`` LiDAR points, ``D`` depth rows;
``*/offsets`` are ``(F+1,)`` int64 and frame ``i`` owns rows ``offsets[i]:offsets[i+1]``::

    attrs   schema_version (int), split (split-list stem, e.g. "train"), subset ("training"/"testing"),
            source_root (the data root as given: a relative one stays relative, so a split prepared in
            two checkouts of the project is the same bytes), split_sha256 (hex digest of the split-list bytes),
            num_frames (F), has_labels (bool), image_hw_max ((Hmax, Wmax))
    frame_id            (F,)              str     6-digit KITTI ids, in split-list order
    image_2, image_3    (F, Hmax, Wmax, 3) uint8  RGB, top-left aligned, zero padded; chunk = one frame,
                                                  uncompressed
    image_shape         (F, 2)            int32   original (height, width)
    calib/P0..P3        (F, 3, 4)         float64
    calib/R0_rect       (F, 3, 3)         float64
    calib/Tr_velo_to_cam (F, 3, 4)        float64
    calib/Tr_imu_to_velo (F, 3, 4)        float64 all NaN where the calib file has none
    gt/offsets          (F+1,)            int64   (all zero when has_labels is false)
    gt/type             (G,)              str     KITTI class, every line kept (DontCare, Misc, ...)
    gt/boxes            (G, 7)            float32 project boxes (x, y, z_centre, l, w, h, heading); NaN for DontCare
    gt/truncated        (G,)              float64 the label fields as parsed, so label files can be
    gt/occluded         (G,)              int8    re-written exactly (see PreparedSplit.objects)
    gt/alpha            (G,)              float64
    gt/bbox             (G, 4)            float64 x1, y1, x2, y2 in image_2 pixels
    gt/dimensions       (G, 3)            float64 h, w, l
    gt/location         (G, 3)            float64 bottom centre, rect camera frame
    gt/rotation_y       (G,)              float64
    gt/score            (G,)              float64 NaN when the line has no score (always, for labels)
    lidar/offsets       (F+1,)            int64
    lidar/points        (P, 4)            float32 x, y, z in the project frame (calib.velo_to_project
                                                  of the raw Velodyne points), intensity; all points kept
    depth/offsets       (F+1,)            int64
    depth/uvd           (D, 3)            float32 sparse LiDAR depth of image_2: (u, v, depth) per point

Depth rows: every LiDAR point of the frame projected with ``P2`` (``calib.project_to_image(.., 2)``),
kept when ``depth > 0`` and its pixel lies in the image: ``-0.5 <= u < W - 0.5`` and
``-0.5 <= v < H - 0.5``. ``u, v`` are kept **fractional** (not rounded), so a consumer can crop, flip
or rescale first and round last; ``np.floor(u + 0.5)`` (or ``np.rint``) of an unmodified row is a
valid column index in ``[0, W-1]``. ``depth`` is the third homogeneous coordinate of ``P2 @ x``
(``z_rect + P2[2, 3]``), so ``calib.image_to_project(uv, depth, 2)`` gives the point back. Several
points can land in one pixel; all are kept (densifying keeps the nearest, for example).
"""

from __future__ import annotations

import hashlib
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from stereodistill.data.kitti import (
    KittiObjectDataset,
    check_same_size,
    default_subset,
    read_image_size,
    read_split_file,
    read_velodyne,
)
from stereodistill.data.labels import KittiObject, read_label_file
from stereodistill.errors import InputError
from stereodistill.files import remove_stale_temp_files, temp_path
from stereodistill.geometry.calibration import Calibration

SCHEMA_VERSION = 1
CALIB_KEYS: dict[str, tuple[int, int]] = {
    "P0": (3, 4),
    "P1": (3, 4),
    "P2": (3, 4),
    "P3": (3, 4),
    "R0_rect": (3, 3),
    "Tr_velo_to_cam": (3, 4),
    "Tr_imu_to_velo": (3, 4),
}
_POINT_CHUNK_ROWS = 1 << 16  # 1 MiB chunks of lidar points; a KITTI frame (~120k points) spans 2-3
_LABEL_CHUNK_ROWS = 4096
_STR = h5py.string_dtype()
_PER_ITEM = ("image_2", "image_3", "lidar/points", "depth/uvd")  # read per item; the rest is loaded at open


# =============================================================================================== writing
def validate_split(dataset: KittiObjectDataset, progress: bool = True) -> np.ndarray:
    """Check that every frame of ``dataset`` is complete and parseable; return image shapes ``(F, 2)`` (h, w).

    Raises ``InputError`` naming the first bad file (and line). Images are checked structurally (header,
    PNG chunk checksums, truncation) without decoding the pixels.
    """
    shapes = np.zeros((len(dataset), 2), dtype=np.int32)
    bar = tqdm(dataset.frame_ids, desc="validating", unit="frame", disable=None if progress else True)
    for i, frame_id in enumerate(bar):
        paths = dataset.paths(frame_id)
        for kind, path in paths.all().items():
            if not path.is_file():
                raise InputError(f"{kind} file of frame {frame_id} is missing", path)
        left = read_image_size(paths.image_2)
        check_same_size(left, read_image_size(paths.image_3), paths.image_2, paths.image_3)
        shapes[i] = left
        read_velodyne(paths.velodyne)
        Calibration.from_file(paths.calib)
        if paths.label_2 is not None:
            read_label_file(paths.label_2)
    return shapes


def depth_rows(points_project: np.ndarray, calib: Calibration, image_hw: tuple[int, int]) -> np.ndarray:
    """Sparse depth of image_2: ``(D, 3)`` float32 rows ``(u, v, depth)`` (see the module docstring)."""
    uv, depth = calib.project_to_image(points_project[:, :3], camera=2)
    height, width = image_hw
    with np.errstate(invalid="ignore"):
        keep = (
            (depth > 0)
            & (uv[:, 0] >= -0.5)
            & (uv[:, 0] < width - 0.5)
            & (uv[:, 1] >= -0.5)
            & (uv[:, 1] < height - 0.5)
        )
    return np.concatenate([uv[keep], depth[keep, None]], axis=1).astype(np.float32)


class _Appender:
    """A growable ``(rows, *row_shape)`` dataset plus its per-frame offsets."""

    def __init__(
        self, group: h5py.Group, name: str, row_shape: tuple[int, ...], dtype, chunk_rows: int
    ) -> None:
        self.dataset = group.create_dataset(
            name,
            shape=(0, *row_shape),
            maxshape=(None, *row_shape),
            dtype=dtype,
            chunks=(chunk_rows, *row_shape),
        )
        self.offsets = [0]

    def append(self, rows: np.ndarray) -> None:
        start = self.offsets[-1]
        if len(rows):
            self.dataset.resize(start + len(rows), axis=0)
            self.dataset[start:] = rows
        self.offsets.append(start + len(rows))


def _label_arrays(objects: list[KittiObject]) -> dict[str, np.ndarray]:
    n = len(objects)
    boxes = np.full((n, 7), np.nan, dtype=np.float32)
    for i, obj in enumerate(objects):
        if obj.type != "DontCare":
            boxes[i] = obj.project_box()
    return {
        "type": np.array([obj.type for obj in objects], dtype=object),
        "boxes": boxes,
        "truncated": np.array([obj.truncated for obj in objects], dtype=np.float64),
        "occluded": np.array([obj.occluded for obj in objects], dtype=np.int8),
        "alpha": np.array([obj.alpha for obj in objects], dtype=np.float64),
        "bbox": np.array([obj.bbox for obj in objects], dtype=np.float64).reshape(n, 4),
        "dimensions": np.array([obj.dimensions for obj in objects], dtype=np.float64).reshape(n, 3),
        "location": np.array([obj.location for obj in objects], dtype=np.float64).reshape(n, 3),
        "rotation_y": np.array([obj.rotation_y for obj in objects], dtype=np.float64),
        "score": np.array([np.nan if obj.score is None else obj.score for obj in objects], dtype=np.float64),
    }


_LABEL_LAYOUT: dict[str, tuple[tuple[int, ...], object]] = {
    "type": ((), _STR),
    "boxes": ((7,), np.float32),
    "truncated": ((), np.float64),
    "occluded": ((), np.int8),
    "alpha": ((), np.float64),
    "bbox": ((4,), np.float64),
    "dimensions": ((3,), np.float64),
    "location": ((3,), np.float64),
    "rotation_y": ((), np.float64),
    "score": ((), np.float64),
}


def _write_split(
    f: h5py.File, dataset: KittiObjectDataset, shapes: np.ndarray, attrs: dict[str, object], progress: bool
) -> None:
    n = len(dataset)
    hmax, wmax = (int(v) for v in shapes.max(axis=0))
    f.attrs.update(attrs)
    f.attrs["image_hw_max"] = np.array([hmax, wmax], dtype=np.int32)
    f.create_dataset("frame_id", data=np.array(dataset.frame_ids, dtype=object), dtype=_STR)
    f.create_dataset("image_shape", data=shapes)
    images = {
        name: f.create_dataset(
            name, shape=(n, hmax, wmax, 3), dtype=np.uint8, chunks=(1, hmax, wmax, 3), fillvalue=0
        )
        for name in ("image_2", "image_3")
    }
    calib = {key: np.full((n, *shape), np.nan) for key, shape in CALIB_KEYS.items()}
    gt_group, lidar_group, depth_group = (
        f.create_group("gt"),
        f.create_group("lidar"),
        f.create_group("depth"),
    )
    gt = {
        name: _Appender(gt_group, name, row_shape, dtype, _LABEL_CHUNK_ROWS)
        for name, (row_shape, dtype) in _LABEL_LAYOUT.items()
    }
    points_out = _Appender(lidar_group, "points", (4,), np.float32, _POINT_CHUNK_ROWS)
    depth_out = _Appender(depth_group, "uvd", (3,), np.float32, _POINT_CHUNK_ROWS)
    padded = np.zeros((hmax, wmax, 3), dtype=np.uint8)

    bar = tqdm(dataset.frame_ids, desc="packing", unit="frame", disable=None if progress else True)
    for i, frame_id in enumerate(bar):
        h, w = (int(v) for v in shapes[i])
        for name, image in zip(("image_2", "image_3"), dataset.read_stereo_pair(frame_id), strict=True):
            if image.shape[:2] != (h, w):
                raise InputError(
                    f"image changed size since validation ({image.shape[:2]} vs {(h, w)})",
                    getattr(dataset.paths(frame_id), name),
                )
            padded[:h, :w] = image
            if h < hmax:
                padded[h:] = 0
            if w < wmax:
                padded[:, w:] = 0
            images[name][i] = padded

        frame_calib = dataset.read_calib(frame_id)
        for key in CALIB_KEYS:
            value = getattr(frame_calib, key)
            if value is not None:
                calib[key][i] = value

        labels = _label_arrays(dataset.read_objects(frame_id) or [])
        for name, appender in gt.items():
            appender.append(labels[name])

        raw = dataset.read_points(frame_id)
        points = np.empty_like(raw)
        points[:, :3] = frame_calib.velo_to_project(raw[:, :3])
        points[:, 3] = raw[:, 3]
        points_out.append(points)
        depth_out.append(depth_rows(points, frame_calib, (h, w)))

    calib_group = f.create_group("calib")
    for key, values in calib.items():
        calib_group.create_dataset(key, data=values)
    gt_group.create_dataset("offsets", data=np.array(gt["type"].offsets, dtype=np.int64))
    lidar_group.create_dataset("offsets", data=np.array(points_out.offsets, dtype=np.int64))
    depth_group.create_dataset("offsets", data=np.array(depth_out.offsets, dtype=np.int64))


def prepare_split(
    root: str | Path,
    split_file: str | Path,
    out_path: str | Path,
    progress: bool = True,
    subset: str | None = None,
) -> None:
    """Validate the frames listed in ``split_file`` under ``root`` and pack them into ``out_path``.

    ``subset`` is the KITTI folder the frames live in; by default ``testing`` for a split list named
    ``test.txt`` and ``training`` otherwise. ``progress`` shows tqdm bars on a terminal. On any error
    nothing is left at ``out_path`` (an existing file there is left untouched).
    """
    root, split_file, out_path = Path(root), Path(split_file), Path(out_path)
    frame_ids = read_split_file(split_file)
    dataset = KittiObjectDataset(root, subset or default_subset(split_file), frame_ids)
    shapes = validate_split(dataset, progress)
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "split": split_file.stem,
        "subset": dataset.subset,
        "source_root": root.as_posix(),
        "split_sha256": hashlib.sha256(split_file.read_bytes()).hexdigest(),
        "num_frames": len(frame_ids),
        "has_labels": dataset.has_labels,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out_path)
    tmp_path = temp_path(out_path)
    try:
        with h5py.File(tmp_path, "w") as f:
            _write_split(f, dataset, shapes, attrs, progress)
        os.replace(tmp_path, out_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


# =============================================================================================== reading
@dataclass(frozen=True)
class FrameLabels:
    """Label lines of one frame as arrays (``G`` lines, every class; empty without labels)."""

    types: np.ndarray  # (G,) str
    boxes: np.ndarray  # (G, 7) float32 project boxes, NaN rows for DontCare
    truncated: np.ndarray  # (G,) float64
    occluded: np.ndarray  # (G,) int8
    alpha: np.ndarray  # (G,) float64
    bbox: np.ndarray  # (G, 4) float64
    dimensions: np.ndarray  # (G, 3) float64, h w l
    location: np.ndarray  # (G, 3) float64, rect camera frame
    rotation_y: np.ndarray  # (G,) float64
    score: np.ndarray  # (G,) float64, NaN for none

    def to_objects(self) -> list[KittiObject]:
        """The frame's label lines as :class:`KittiObject` (equal to what ``read_label_file`` parsed)."""
        return [
            KittiObject(
                type=str(self.types[i]),
                truncated=float(self.truncated[i]),
                occluded=int(self.occluded[i]),
                alpha=float(self.alpha[i]),
                bbox=tuple(float(v) for v in self.bbox[i]),
                dimensions=tuple(float(v) for v in self.dimensions[i]),
                location=tuple(float(v) for v in self.location[i]),
                rotation_y=float(self.rotation_y[i]),
                score=None if np.isnan(self.score[i]) else float(self.score[i]),
            )
            for i in range(len(self.types))
        ]


@dataclass(frozen=True)
class PreparedFrame:
    """One frame of a prepared split.

    Images are ``(h, w, 3)`` uint8 views of the padded chunk (writable, not necessarily contiguous);
    ``points`` ``(P, 4)`` float32 project frame + intensity; ``depth`` ``(D, 3)`` float32 ``(u, v, depth)``.
    """

    index: int
    frame_id: str
    image_2: np.ndarray
    image_3: np.ndarray
    calib: Calibration
    labels: FrameLabels
    points: np.ndarray
    depth: np.ndarray


# Every open PreparedSplit; their HDF5 handles are closed before the process forks (h5py's advice:
# never fork with a file open), and each process reopens lazily.
_OPEN_SPLITS: weakref.WeakSet[PreparedSplit] = weakref.WeakSet()


def _close_before_fork() -> None:
    for split in list(_OPEN_SPLITS):
        split.close()


os.register_at_fork(before=_close_before_fork)


class PreparedSplit:
    """Map dataset over a file written by :func:`prepare_split` (``len``, ``split[i] -> PreparedFrame``).

    Small per-frame data (ids, shapes, calibration, labels, offsets) is read once into memory; images,
    points and depth are read per item. The HDF5 handle is opened lazily in the process that reads,
    reopened when the process id changes, closed before a fork and never pickled, so the object works
    in DataLoader workers under fork, spawn and forkserver.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("prepared split is missing (run `stereodistill prepare`)", self.path)
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise InputError(f"not a readable HDF5 file ({err})", self.path) from None
        with f:
            version = f.attrs.get("schema_version")
            if version != SCHEMA_VERSION:
                raise InputError(
                    f"schema_version is {version}, this code reads {SCHEMA_VERSION}; re-run `stereodistill prepare`",
                    self.path,
                )
            self.attrs = {key: _plain(value) for key, value in f.attrs.items()}
            self.frame_ids: list[str] = list(f["frame_id"].asstr()[()])
            self.image_shapes: np.ndarray = f["image_shape"][()]
            self._calib = {key: f["calib"][key][()] for key in CALIB_KEYS}
            self._gt = {name: f["gt"][name][()] for name in _LABEL_LAYOUT}
            self._gt["type"] = f["gt"]["type"].asstr()[()].astype(str)
            self._gt_offsets = f["gt/offsets"][()]
            self._point_offsets = f["lidar/offsets"][()]
            self._depth_offsets = f["depth/offsets"][()]
            self._direct_chunks = all(
                f[name].id.get_create_plist().get_nfilters() == 0
                and f[name].chunks == (1, *f[name].shape[1:])
                for name in ("image_2", "image_3")
            )
            self.image_hw_max: tuple[int, int] = tuple(int(v) for v in f["image_2"].shape[1:3])
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._open_datasets: dict[str, h5py.Dataset] = {}

    # ----------------------------------------------------------------- handle management
    def _datasets(self) -> dict[str, h5py.Dataset]:
        """The per-item datasets of this process's handle (opened on first use, reopened after a fork)."""
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            self._open_datasets = {name: self._file[name] for name in _PER_ITEM}
            _OPEN_SPLITS.add(self)
        return self._open_datasets

    def close(self) -> None:
        """Close the HDF5 handle of this process (it reopens on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None
        self._open_datasets = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_file=None, _pid=None, _open_datasets={})
        return state

    # ----------------------------------------------------------------- per-frame reads
    def __len__(self) -> int:
        return len(self.frame_ids)

    def _check_index(self, index: int) -> int:
        n = len(self.frame_ids)
        if not -n <= index < n:
            raise IndexError(f"frame index {index} out of range for {n} frames")
        return index % n

    def read_image(self, index: int, camera: int = 2) -> np.ndarray:
        """``image_2`` (``camera=2``) or ``image_3`` of frame ``index``: ``(h, w, 3)`` uint8."""
        index = self._check_index(index)
        if camera not in (2, 3):
            raise ValueError(f"camera must be 2 or 3, got {camera}")
        dataset = self._datasets()[f"image_{camera}"]
        hmax, wmax = self.image_hw_max
        if self._direct_chunks:
            # One uncompressed chunk per frame: read its bytes straight into a buffer (no selection machinery).
            buffer = np.empty(hmax * wmax * 3, dtype=np.uint8)
            dataset.id.read_direct_chunk((index, 0, 0, 0), out=buffer)
            padded = buffer.reshape(hmax, wmax, 3)
        else:
            padded = dataset[index]
        h, w = self.image_shapes[index]
        return padded[:h, :w]

    def read_stereo_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.read_image(index, 2), self.read_image(index, 3)

    def read_points(self, index: int) -> np.ndarray:
        """LiDAR points ``(P, 4)`` float32 in the project frame (x, y, z, intensity)."""
        index = self._check_index(index)
        start, stop = self._point_offsets[index], self._point_offsets[index + 1]
        return self._datasets()["lidar/points"][start:stop]

    def read_depth(self, index: int) -> np.ndarray:
        """Sparse image_2 depth ``(D, 3)`` float32 rows ``(u, v, depth)`` (see the module docstring)."""
        index = self._check_index(index)
        start, stop = self._depth_offsets[index], self._depth_offsets[index + 1]
        return self._datasets()["depth/uvd"][start:stop]

    def calibration(self, index: int) -> Calibration:
        index = self._check_index(index)
        imu = self._calib["Tr_imu_to_velo"][index]
        return Calibration(
            **{key: self._calib[key][index].copy() for key in CALIB_KEYS if key != "Tr_imu_to_velo"},
            Tr_imu_to_velo=None if np.isnan(imu).all() else imu.copy(),
        )

    def labels(self, index: int) -> FrameLabels:
        index = self._check_index(index)
        rows = slice(self._gt_offsets[index], self._gt_offsets[index + 1])
        g = self._gt
        return FrameLabels(
            types=g["type"][rows],
            boxes=g["boxes"][rows],
            truncated=g["truncated"][rows],
            occluded=g["occluded"][rows],
            alpha=g["alpha"][rows],
            bbox=g["bbox"][rows],
            dimensions=g["dimensions"][rows],
            location=g["location"][rows],
            rotation_y=g["rotation_y"][rows],
            score=g["score"][rows],
        )

    def objects(self, index: int) -> list[KittiObject]:
        """Frame ``index``'s label lines, ready for :func:`stereodistill.data.labels.write_label_file`."""
        return self.labels(index).to_objects()

    def __getitem__(self, index: int) -> PreparedFrame:
        index = self._check_index(index)
        left, right = self.read_stereo_pair(index)
        return PreparedFrame(
            index=index,
            frame_id=self.frame_ids[index],
            image_2=left,
            image_3=right,
            calib=self.calibration(index),
            labels=self.labels(index),
            points=self.read_points(index),
            depth=self.read_depth(index),
        )


def _plain(value: object) -> object:
    """HDF5 attribute value -> plain Python (numpy scalars and small arrays become int/float/bool/list)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def split_fingerprint(split: PreparedSplit) -> str:
    """Fingerprint of a prepared split's content that is cheap to compute: ids, labels and point counts."""
    digest = hashlib.sha256("\n".join(split.frame_ids).encode())
    for i in range(len(split)):
        labels = split.labels(i)
        digest.update(np.ascontiguousarray(labels.boxes).tobytes())
        digest.update("|".join(labels.types.tolist()).encode())
        digest.update(np.int64(len(split.read_points(i))).tobytes())
    return digest.hexdigest()
