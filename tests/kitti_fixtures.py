"""A tiny hand-made dataset in the official KITTI object layout, with known geometry.

``write_kitti_dataset(root)`` writes::

    training/{image_2,image_3,velodyne,calib,label_2}/00000{0,1,2}.*
    testing/{image_2,image_3,velodyne,calib}/000000.*
    ImageSets/{train,val,test}.txt          train: 000000 000001, val: 000002, test: 000000

- training 000000: KITTI's real calibration of frame 000000 (P2 fu = 721.5377), 375x1242 images.
  A Car straight ahead (bottom centre (1, 1.65, 10) rect, h w l = 1.5 1.6 4, rotation_y 0) with
  ``CAR_POINTS`` LiDAR points placed inside it; a Pedestrian with no points and a label 2D box that
  is deliberately off; a DontCare region.
- training 000001: a second calibration (fu = 707.0493, no Tr_imu_to_velo line) and 370x1224 images
  (KITTI's other common size); Van (``VAN_POINTS`` points inside), Person_sitting, Misc, Cyclist, DontCare.
- training 000002: no objects (empty label file), points only.
- testing 000000: no label_2.

Every other LiDAR point lies outside every box: a ground plane below all box bottoms, a wall above
them, points behind the camera and points beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from kitti_calib_000000 import CALIB_000000
from PIL import Image

from stereodistill.geometry.boxes import kitti_to_project_boxes
from stereodistill.geometry.calibration import Calibration

CALIB_707 = """\
P0: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 0.000000000000e+00 0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P1: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 -3.797842000000e+02 0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P2: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 4.575831000000e+01 0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 -3.454157000000e-01 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 4.981016000000e-03
P3: 7.070493000000e+02 0.000000000000e+00 6.040814000000e+02 -3.341081000000e+02 0.000000000000e+00 7.070493000000e+02 1.805066000000e+02 2.330660000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 3.201153000000e-03
R0_rect: 9.999128000000e-01 1.009263000000e-02 -8.511932000000e-03 -1.012729000000e-02 9.999406000000e-01 -4.037671000000e-03 8.470675000000e-03 4.123522000000e-03 9.999556000000e-01
Tr_velo_to_cam: 6.927964000000e-03 -9.999722000000e-01 -2.757829000000e-03 -2.457729000000e-02 -1.162982000000e-03 2.749836000000e-03 -9.999955000000e-01 -6.127237000000e-02 9.999753000000e-01 6.931141000000e-03 -1.143899000000e-03 -3.321029000000e-01
"""

# Hand-written label lines. Each 2D box is the projected 3D box (rounded to 0.01 px), except the
# Pedestrian's, which is deliberately off (IoU 0.34 with its projection).
CAR_LINE = "Car 0.12 1 -0.10 535.85 182.85 849.47 302.19 1.50 1.60 4.00 1.00 1.65 10.00 0.00"
PEDESTRIAN_LINE = "Pedestrian 0.00 2 1.40 440.00 160.00 470.00 240.00 1.80 0.60 0.80 -4.00 1.70 20.00 1.20"
DONTCARE_LINE = "DontCare -1 -1 -10 800.00 160.00 850.00 190.00 -1 -1 -1 -1000 -1000 -1000 -10"
VAN_LINE = "Van 0.00 0 -1.62 584.73 151.98 692.46 277.05 2.20 1.90 5.10 0.50 1.70 15.00 -1.59"
PERSON_SITTING_LINE = (
    "Person_sitting 0.50 1 0.30 171.13 204.91 233.45 263.77 1.10 0.70 0.90 -8.00 1.60 14.00 -0.20"
)
MISC_LINE = "Misc 0.98 3 2.50 215.72 208.37 288.91 273.71 1.00 1.00 1.00 -6.00 1.50 12.00 2.80"
CYCLIST_LINE = "Cyclist 0.00 0 -2.80 803.52 182.37 882.10 250.47 1.70 0.60 1.80 6.00 1.75 18.00 -3.10"

CAR_POINTS = 37
VAN_POINTS = 12
GROUND_Z = -1.80  # project frame; every box bottom in the fixture is above this
WALL_Z = 3.0  # every box top is below this


@dataclass
class FrameSpec:
    """What was written for one frame (raw values, before any parsing)."""

    subset: str
    image_hw: tuple[int, int]
    calib_text: str
    label_lines: list[str] | None
    points_velo: np.ndarray  # (N, 4) float32, exactly as written to the .bin file
    points_in_box: dict[int, int] = field(default_factory=dict)  # label line index -> points placed inside

    @property
    def calib(self) -> Calibration:
        return Calibration.from_text(self.calib_text)


@dataclass
class KittiFixture:
    root: Path
    frames: dict[tuple[str, str], FrameSpec]  # (subset, frame id) -> spec

    def path(self, subset: str, folder: str, frame_id: str) -> Path:
        ext = {"image_2": ".png", "image_3": ".png", "velodyne": ".bin", "calib": ".txt", "label_2": ".txt"}[
            folder
        ]
        return self.root / subset / folder / f"{frame_id}{ext}"

    def split_file(self, name: str) -> Path:
        return self.root / "ImageSets" / f"{name}.txt"


def _box_of(line: str) -> np.ndarray:
    f = line.split()
    return kitti_to_project_boxes(
        np.array([[float(v) for v in f[11:14]]]),
        np.array([[float(v) for v in f[8:11]]]),
        np.array([float(f[14])]),
    )[0]


def _points_inside(box: np.ndarray, count: int, rng: np.random.Generator, margin: float = 0.05) -> np.ndarray:
    """``count`` project-frame points strictly inside project ``box (7,)`` (``margin`` metres from every face)."""
    half = box[3:6] / 2 - margin
    local = rng.uniform(-half, half, size=(count, 3))
    c, s = np.cos(box[6]), np.sin(box[6])
    xy = np.stack([local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c], axis=-1)
    return np.concatenate([xy, local[:, 2:]], axis=1) + box[:3]


def _background_points(rng: np.random.Generator) -> np.ndarray:
    """Project-frame points outside every fixture box: ground, a high wall, behind and beside the camera."""
    gx, gy = np.meshgrid(np.arange(3.0, 50.0, 1.0), np.arange(-15.0, 15.5, 1.0), indexing="ij")
    ground = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, GROUND_Z)], axis=-1)
    wx, wz = np.meshgrid(np.arange(5.0, 40.0, 0.5), np.arange(WALL_Z, WALL_Z + 2.0, 0.25), indexing="ij")
    wall = np.stack([wx.ravel(), np.full(wx.size, 8.0), wz.ravel()], axis=-1)
    behind = np.stack(
        [rng.uniform(-20, -1, 200), rng.uniform(-10, 10, 200), rng.uniform(-1.5, 1, 200)], axis=-1
    )
    beside = np.stack(
        [rng.uniform(0.5, 3, 100), rng.uniform(15, 25, 100), rng.uniform(-1.5, 1, 100)], axis=-1
    )
    return np.concatenate([ground, wall, behind, beside])


def _to_velo_bin(points_project: np.ndarray, calib: Calibration, rng: np.random.Generator) -> np.ndarray:
    velo = calib.project_to_velo(points_project)
    intensity = rng.uniform(0.0, 1.0, (len(velo), 1))
    return np.concatenate([velo, intensity], axis=1).astype("<f4")


def _image(hw: tuple[int, int], shift: int) -> np.ndarray:
    """A smooth, deterministic RGB test picture (quick to PNG-encode); ``shift`` tells left from right."""
    h, w = hw
    v, u = np.mgrid[0:h, 0:w]
    return np.stack([(u + shift) % 256, (v * 2) % 256, ((u + v) // 3 + shift) % 256], axis=-1).astype(
        np.uint8
    )


def _write_frame(root: Path, subset: str, frame_id: str, spec: FrameSpec) -> None:
    folders = ["image_2", "image_3", "velodyne", "calib"] + (
        ["label_2"] if spec.label_lines is not None else []
    )
    for folder in folders:
        (root / subset / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(_image(spec.image_hw, 0)).save(
        root / subset / "image_2" / f"{frame_id}.png", compress_level=1
    )
    Image.fromarray(_image(spec.image_hw, 7)).save(
        root / subset / "image_3" / f"{frame_id}.png", compress_level=1
    )
    spec.points_velo.tofile(root / subset / "velodyne" / f"{frame_id}.bin")
    (root / subset / "calib" / f"{frame_id}.txt").write_text(spec.calib_text)
    if spec.label_lines is not None:
        (root / subset / "label_2" / f"{frame_id}.txt").write_text(
            "".join(line + "\n" for line in spec.label_lines)
        )


def write_kitti_dataset(root: str | Path, seed: int = 0) -> KittiFixture:
    root = Path(root)
    rng = np.random.default_rng(seed)
    frames: dict[tuple[str, str], FrameSpec] = {}

    calib0 = Calibration.from_text(CALIB_000000)
    lines0 = [CAR_LINE, PEDESTRIAN_LINE, DONTCARE_LINE]
    pts0 = np.concatenate([_points_inside(_box_of(CAR_LINE), CAR_POINTS, rng), _background_points(rng)])
    frames["training", "000000"] = FrameSpec(
        "training", (375, 1242), CALIB_000000, lines0, _to_velo_bin(pts0, calib0, rng), {0: CAR_POINTS, 1: 0}
    )

    calib1 = Calibration.from_text(CALIB_707)
    lines1 = [VAN_LINE, PERSON_SITTING_LINE, MISC_LINE, CYCLIST_LINE, DONTCARE_LINE]
    pts1 = np.concatenate([_background_points(rng)[::2], _points_inside(_box_of(VAN_LINE), VAN_POINTS, rng)])
    frames["training", "000001"] = FrameSpec(
        "training",
        (370, 1224),
        CALIB_707,
        lines1,
        _to_velo_bin(pts1, calib1, rng),
        {0: VAN_POINTS, 1: 0, 2: 0, 3: 0},
    )

    frames["training", "000002"] = FrameSpec(
        "training", (375, 1242), CALIB_000000, [], _to_velo_bin(_background_points(rng)[::3], calib0, rng)
    )
    frames["testing", "000000"] = FrameSpec(
        "testing", (375, 1242), CALIB_000000, None, _to_velo_bin(_background_points(rng)[1::3], calib0, rng)
    )

    for (subset, frame_id), spec in frames.items():
        _write_frame(root, subset, frame_id, spec)
    split_dir = root / "ImageSets"
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / "train.txt").write_text("000000\n000001\n")
    (split_dir / "val.txt").write_text("000002\n")
    (split_dir / "test.txt").write_text("000000\n")
    return KittiFixture(root, frames)
