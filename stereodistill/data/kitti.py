"""Reader for the official KITTI object-benchmark layout.

A KITTI root holds one folder per subset, ``training/`` and ``testing/``, each with::

    image_2/NNNNNN.png    left colour image (RGB, uint8)
    image_3/NNNNNN.png    right colour image, same size as image_2
    velodyne/NNNNNN.bin   LiDAR points, float32 little-endian rows (x, y, z, intensity), Velodyne frame
    calib/NNNNNN.txt      calibration (see :mod:`stereodistill.geometry.calibration`)
    label_2/NNNNNN.txt    labels (see :mod:`stereodistill.data.labels`); absent in ``testing/``

Split lists (``ImageSets/train.txt`` and friends) name frames by their 6-digit id, one per line.
Every loader here raises :class:`~stereodistill.errors.InputError` naming the file (and line) on bad input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stereodistill.data.labels import KittiObject, read_label_file
from stereodistill.errors import InputError, read_text_file
from stereodistill.geometry.calibration import Calibration

SUBSETS = ("training", "testing")
FRAME_ID = re.compile(r"^\d{6}$")

# Per-frame file kinds: folder name and file extension.
MODALITIES: dict[str, str] = {
    "image_2": ".png",
    "image_3": ".png",
    "velodyne": ".bin",
    "calib": ".txt",
    "label_2": ".txt",
}
_POINT_BYTES = 16  # 4 float32: x, y, z, intensity


# --------------------------------------------------------------------------------------------- split lists
class SplitList(list[str]):
    """Frame ids read from a split list, remembering the file and each id's line for error messages.

    A plain ``list`` otherwise; :class:`KittiObjectDataset` uses the provenance to name ``file:line`` of a
    listed frame that does not exist.
    """

    def __init__(self, ids: Sequence[str], path: Path, lines: dict[str, int]) -> None:
        super().__init__(ids)
        self.path = path
        self.lines = lines


def read_split_file(path: str | Path) -> SplitList:
    """Frame ids of a split list: one 6-digit id per line, in file order.

    Blank lines are skipped; a malformed id or a duplicate raises ``InputError`` naming ``file:line``.
    """
    path = Path(path)
    text = read_text_file(path, "split")
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        frame_id = raw.strip()
        if not frame_id:
            continue
        if not FRAME_ID.match(frame_id):
            raise InputError(f"expected a 6-digit frame id, got {frame_id[:40]!r}", path, lineno)
        if frame_id in first_line:
            raise InputError(
                f"frame {frame_id} is listed twice (first on line {first_line[frame_id]})", path, lineno
            )
        first_line[frame_id] = lineno
        ids.append(frame_id)
    if not ids:
        raise InputError("split file lists no frames", path)
    return SplitList(ids, path, first_line)


# --------------------------------------------------------------------------------------------- file loaders
@contextmanager
def _open_image(path: Path) -> Iterator[Image.Image]:
    """``Image.open(path)``; Pillow's failures, in the ``with`` block too, become ``InputError`` naming the file."""
    try:
        with Image.open(path) as image:
            yield image
    except FileNotFoundError:
        raise InputError("image file is missing", path) from None
    except UnidentifiedImageError:
        raise InputError("not an image file Pillow can read", path) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"image file is corrupt ({err})", path) from None


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB (other modes are converted)."""
    with _open_image(Path(path)) as image:
        image.load()
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image from its header, after checking the file's structure.

    Cheaper than :func:`read_image`: Pillow's ``verify()`` walks the file (PNG chunk CRCs, truncation)
    without decompressing the pixels.
    """
    with _open_image(Path(path)) as image:
        width, height = image.size
        image.verify()
    return height, width


def read_velodyne(path: str | Path) -> np.ndarray:
    """LiDAR points ``(N, 4)`` float32 (x, y, z, intensity) in the Velodyne frame.

    The file size must be a multiple of 16 bytes and every value finite; otherwise ``InputError``
    names the file (and the first bad point's index).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError("velodyne file is missing", path) from None
    if size % _POINT_BYTES:
        raise InputError(
            f"size {size} bytes is not a multiple of 16 (rows of 4 float32: x, y, z, intensity); "
            "the file is truncated or not a KITTI point cloud",
            path,
        )
    points = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        first = int(np.argmin(finite))
        raise InputError(
            f"point {first} (0-based) has a NaN or inf value {points[first].tolist()}; "
            f"{int((~finite).sum())} of {len(points)} points are bad",
            path,
        )
    return points.astype(np.float32, copy=False)


def check_same_size(left: tuple[int, int], right: tuple[int, int], left_path: Path, right_path: Path) -> None:
    """Raise ``InputError`` naming both files when a stereo pair's ``(h, w)`` differ."""
    if tuple(left) != tuple(right):
        raise InputError(
            f"stereo pair has different sizes: {left_path} is {left[1]}x{left[0]} (WxH), "
            f"{right_path} is {right[1]}x{right[0]}",
            right_path,
        )


# --------------------------------------------------------------------------------------------- dataset
@dataclass(frozen=True)
class FramePaths:
    """Files of one frame. ``label_2`` is ``None`` in a subset without labels."""

    frame_id: str
    image_2: Path
    image_3: Path
    velodyne: Path
    calib: Path
    label_2: Path | None

    def all(self) -> dict[str, Path]:
        """Modality name -> path for every file this frame should have."""
        files = {
            "image_2": self.image_2,
            "image_3": self.image_3,
            "velodyne": self.velodyne,
            "calib": self.calib,
        }
        if self.label_2 is not None:
            files["label_2"] = self.label_2
        return files


@dataclass(frozen=True)
class KittiFrame:
    """One fully loaded frame.

    ``image_2``/``image_3``: ``(H, W, 3)`` uint8 RGB; ``points_velo``: ``(N, 4)`` float32 (x, y, z,
    intensity) in the Velodyne frame; ``objects``: every label line (all classes, DontCare included),
    ``None`` when the subset has no labels.
    """

    frame_id: str
    image_2: np.ndarray
    image_3: np.ndarray
    points_velo: np.ndarray
    calib: Calibration
    objects: list[KittiObject] | None


class KittiObjectDataset:
    """Frames of one subset (``training`` or ``testing``) of a KITTI object-layout root.

    ``frame_ids`` (for example from :func:`read_split_file`) selects and orders the frames; without it,
    every 6-digit file stem found in any of the subset's folders is listed, sorted, so a frame with
    some files missing still shows up (and fails to load, naming the missing file).

    ``has_labels`` is true for ``training`` (labels required) and for any subset with a ``label_2``
    folder. When ``frame_ids`` is a :class:`SplitList`, a listed frame with none of its files in the subset
    raises ``InputError`` naming the split file, line and frame id.
    """

    def __init__(
        self, root: str | Path, subset: str = "training", frame_ids: Sequence[str] | None = None
    ) -> None:
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
        self.root = Path(root)
        self.subset = subset
        self.folder = self.root / subset
        if not self.folder.is_dir():
            raise InputError(f"no '{subset}' folder in this KITTI root", self.root)
        self.has_labels = subset == "training" or (self.folder / "label_2").is_dir()
        if frame_ids is None:
            self.frame_ids = self._list_frames()
        else:
            for frame_id in frame_ids:
                if not FRAME_ID.match(frame_id):
                    raise InputError(f"expected a 6-digit frame id, got {frame_id!r}")
            self.frame_ids = list(frame_ids)
            if isinstance(frame_ids, SplitList):
                self._check_listed_frames_exist(frame_ids)

    def _list_frames(self) -> list[str]:
        stems: set[str] = set()
        for folder, ext in MODALITIES.items():
            directory = self.folder / folder
            if directory.is_dir():
                stems.update(
                    p.stem for p in directory.iterdir() if p.suffix == ext and FRAME_ID.match(p.stem)
                )
        return sorted(stems)

    def _check_listed_frames_exist(self, split: SplitList) -> None:
        """A frame the split lists must have at least one file here (a partly missing frame fails later,
        naming the missing file)."""
        for frame_id in split:
            paths = self.paths(frame_id)
            if not any(path.exists() for path in paths.all().values()):
                raise InputError(
                    f"frame {frame_id} is listed but does not exist in {self.folder} "
                    f"(no image_2, image_3, velodyne, calib or label_2 file; {paths.image_2} is missing)",
                    split.path,
                    split.lines.get(frame_id),
                )

    def __len__(self) -> int:
        return len(self.frame_ids)

    def __getitem__(self, index: int) -> KittiFrame:
        return self.load_frame(self.frame_ids[index])

    def paths(self, frame_id: str) -> FramePaths:
        def path(folder: str) -> Path:
            return self.folder / folder / f"{frame_id}{MODALITIES[folder]}"

        return FramePaths(
            frame_id=frame_id,
            image_2=path("image_2"),
            image_3=path("image_3"),
            velodyne=path("velodyne"),
            calib=path("calib"),
            label_2=path("label_2") if self.has_labels else None,
        )

    # ----------------------------------------------------------------- per-modality loaders
    def read_stereo_pair(self, frame_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``image_2`` and ``image_3``, ``(H, W, 3)`` uint8 each; different sizes are an error."""
        paths = self.paths(frame_id)
        left, right = read_image(paths.image_2), read_image(paths.image_3)
        check_same_size(left.shape[:2], right.shape[:2], paths.image_2, paths.image_3)
        return left, right

    def read_points(self, frame_id: str) -> np.ndarray:
        """Velodyne-frame points ``(N, 4)`` float32."""
        return read_velodyne(self.paths(frame_id).velodyne)

    def read_calib(self, frame_id: str) -> Calibration:
        return Calibration.from_file(self.paths(frame_id).calib)

    def read_objects(self, frame_id: str) -> list[KittiObject] | None:
        """Every label line of the frame, or ``None`` when the subset has no labels."""
        label = self.paths(frame_id).label_2
        return None if label is None else read_label_file(label)

    def load_frame(self, frame_id: str) -> KittiFrame:
        left, right = self.read_stereo_pair(frame_id)
        return KittiFrame(
            frame_id=frame_id,
            image_2=left,
            image_3=right,
            points_velo=self.read_points(frame_id),
            calib=self.read_calib(frame_id),
            objects=self.read_objects(frame_id),
        )


def default_subset(split_file: str | Path) -> str:
    """KITTI's convention: ``test.txt`` lists ``testing/`` frames, every other split list ``training/`` ones."""
    return "testing" if Path(split_file).stem == "test" else "training"
