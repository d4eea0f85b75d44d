"""Writing frames in KITTI's object-benchmark layout, the ImageSets split, and the atomic output directory.

DIR/training/image_2/NNNNNN.png   left colour image (RGB uint8)
DIR/training/image_3/NNNNNN.png   right colour image
DIR/training/velodyne/NNNNNN.bin  float32 little-endian x, y, z, intensity (Velodyne frame)
DIR/training/calib/NNNNNN.txt     P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo
DIR/training/label_2/NNNNNN.txt   KITTI labels of image_2
DIR/ImageSets/train.txt, val.txt  6-digit frame ids, one per line
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from stereodistill.data.labels import write_label_file
from stereodistill.data.synth.frame import SynthFrame
from stereodistill.errors import InputError

SUBDIRS = ("image_2", "image_3", "velodyne", "calib", "label_2")


def frame_id(index: int) -> str:
    return f"{index:06d}"


def make_layout(root: Path) -> None:
    for name in SUBDIRS:
        (root / "training" / name).mkdir(parents=True, exist_ok=True)
    (root / "ImageSets").mkdir(parents=True, exist_ok=True)


def write_frame(root: Path, index: int, frame: SynthFrame) -> None:
    """Write one frame's five files under ``root/training``."""
    training = root / "training"
    name = frame_id(index)
    Image.fromarray(frame.left, mode="RGB").save(training / "image_2" / f"{name}.png", format="PNG")
    Image.fromarray(frame.right, mode="RGB").save(training / "image_3" / f"{name}.png", format="PNG")
    frame.scan.points.astype("<f4").tofile(training / "velodyne" / f"{name}.bin")
    (training / "calib" / f"{name}.txt").write_text(frame.calib.to_text())
    write_label_file(training / "label_2" / f"{name}.txt", frame.labels)


def split_ids(frames: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic random train / val split of ``range(frames)``; both sorted.

    The val share is ``round(frames * val_fraction)``, kept to at least one frame on each side whenever
    ``0 < val_fraction < 1`` and ``frames >= 2``.
    """
    n_val = int(round(frames * val_fraction))
    if 0.0 < val_fraction < 1.0 and frames >= 2:
        n_val = min(max(n_val, 1), frames - 1)
    order = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(2**32 - 1,))).permutation(
        frames
    )
    val = sorted(int(i) for i in order[:n_val])
    train = sorted(int(i) for i in order[n_val:])
    return train, val


def write_image_sets(root: Path, train: list[int], val: list[int]) -> None:
    for name, ids in (("train", train), ("val", val)):
        (root / "ImageSets" / f"{name}.txt").write_text("".join(frame_id(i) + "\n" for i in ids))


@contextmanager
def atomic_directory(out_dir: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a fresh sibling temp directory that replaces ``out_dir`` when the block succeeds.

    Refuses an existing non-empty ``out_dir`` unless ``overwrite``; on failure the temp directory is removed
    and ``out_dir`` is left as it was.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a directory", out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(
            "output directory exists and is not empty (pass --overwrite / overwrite=True to replace it)", out
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / "replaced")
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
