"""LIGA's stereo flip: images swapped and mirrored, calibration and depth rows consistent with them.

The flipped frame's boxes are the hflip view's ground truth (tests/test_views.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from kitti_calib_000000 import CALIB_000000

from stereodistill.data.prepared import PreparedFrame, PreparedSplit, depth_rows, prepare_split
from stereodistill.data.synth import generate_dataset
from stereodistill.geometry.calibration import Calibration
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import read_params_yaml
from stereodistill.student.depth import depth_loss, depth_target_map
from stereodistill.student.flip import flip_stereo
from stereodistill.student.model import StereoStudent, calibration_tensors, images_to_tensor
from stereodistill.student.settings import StudentConfig

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"

HEIGHT, WIDTH = 375, 1242
# Project-frame points in front of the KITTI rig, each painted with its own colour.
POINTS = np.array([[8.0, 1.5, -0.5], [15.0, -3.0, 0.2], [30.0, 4.0, -1.2], [6.0, -1.0, 0.8]])
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)


def _pixel(uv: np.ndarray) -> tuple[int, int]:
    return int(np.floor(uv[1] + 0.5)), int(np.floor(uv[0] + 0.5))


def _painted_pair(calib: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """Black left/right images with each point's colour at its projection in image_2 / image_3."""
    left = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    right = np.zeros_like(left)
    for camera, image in ((2, left), (3, right)):
        uv, depth = calib.project_to_image(POINTS, camera)
        assert np.all(depth > 0)
        for k in range(len(POINTS)):
            image[_pixel(uv[k])] = COLOURS[k]
    return left, right


def test_flipped_calibration_projects_mirrored_points_onto_the_same_content() -> None:
    calib = Calibration.from_text(CALIB_000000)
    left, right = _painted_pair(calib)
    flipped = flip_stereo(left, right, calib)
    mirrored = POINTS * np.array([1.0, -1.0, 1.0])
    for camera, image in ((2, flipped.left), (3, flipped.right)):
        uv, depth = flipped.calib.project_to_image(mirrored, camera)
        assert np.all(depth > 0)
        for k in range(len(POINTS)):
            assert np.array_equal(image[_pixel(uv[k])], COLOURS[k]), (camera, k)
    # The new left column is the mirrored old right column, exactly.
    uv3, _ = calib.project_to_image(POINTS, 3)
    uv2_new, _ = flipped.calib.project_to_image(mirrored, 2)
    assert np.allclose(uv2_new[:, 0], WIDTH - 1 - uv3[:, 0], atol=1e-9)
    assert np.allclose(uv2_new[:, 1], uv3[:, 1], atol=1e-9)
    assert flipped.calib.baseline == pytest.approx(calib.baseline, abs=1e-9)


def test_flipped_depth_rows_are_the_mirrored_points_in_the_new_left_image() -> None:
    calib = Calibration.from_text(CALIB_000000)
    left, right = _painted_pair(calib)
    rows = depth_rows(POINTS, calib, (HEIGHT, WIDTH))
    assert len(rows) == len(POINTS)
    flipped = flip_stereo(left, right, calib, depth=rows)
    mirrored = POINTS * np.array([1.0, -1.0, 1.0])
    uv, depth = flipped.calib.project_to_image(mirrored, 2)
    assert flipped.depth is not None and flipped.depth.shape == (len(POINTS), 3)
    assert np.allclose(flipped.depth[:, :2], uv, atol=1e-3)
    assert np.allclose(flipped.depth[:, 2], depth, atol=1e-4)
    # They are not the old rows mirrored in u (the new left camera is the old right one).
    assert not np.allclose(flipped.depth[:, 0], WIDTH - 1 - rows[:, 0], atol=1.0)
    # A row whose mirrored point leaves the new left image is dropped.
    edge = np.array([[6.0, 4.9, 0.0]])  # u = 28 in image_2, u = -36 (outside) in image_3
    edge_rows = depth_rows(edge, calib, (HEIGHT, WIDTH))
    assert len(edge_rows) == 1
    assert len(flip_stereo(left, right, calib, depth=edge_rows).depth) == 0


def test_double_flip() -> None:
    calib = Calibration.from_text(CALIB_000000)
    left, right = _painted_pair(calib)
    rows = depth_rows(POINTS, calib, (HEIGHT, WIDTH))
    once = flip_stereo(left, right, calib, rows)
    twice = flip_stereo(once.left, once.right, once.calib, once.depth)
    assert np.array_equal(twice.left, left) and np.array_equal(twice.right, right)
    assert np.allclose(twice.calib.P2, calib.P2) and np.allclose(twice.calib.P3, calib.P3)
    assert np.allclose(twice.depth, rows, atol=1e-3)
    with pytest.raises(ValueError, match="one shape"):
        flip_stereo(left, right[:-1], calib)


# ----------------------------------------------------------------------------------------------- rendered data
@pytest.fixture(scope="module")
def rendered_frame(tmp_path_factory: pytest.TempPathFactory) -> PreparedFrame:
    """Frame 0 of a one-frame synthetic default-preset split (640 x 192, rendered stereo pair + LiDAR)."""
    root = tmp_path_factory.mktemp("student_flip") / "data"
    generate_dataset(root, frames=1, seed=101, val_fraction=0.0, progress=False)
    out = root.parent / "train.h5"
    prepare_split(root, root / "ImageSets" / "train.txt", out, progress=False)
    return PreparedSplit(out)[0]


def _photo_consistent_fraction(
    left: np.ndarray, right: np.ndarray, rows: np.ndarray, calib: Calibration
) -> float:
    """Fraction of depth rows whose left pixel and disparity-matched right pixel differ by < 10 grey levels."""
    u, v, d = rows.T.astype(np.float64)
    u_right = u - calib.focal_length * calib.baseline / d
    ok = (u_right >= 0) & (u_right <= left.shape[1] - 1)
    rows_i = np.rint(v[ok]).astype(int)
    a = left[rows_i, np.rint(u[ok]).astype(int)].astype(np.float64)
    b = right[rows_i, np.rint(u_right[ok]).astype(int)].astype(np.float64)
    return float(np.mean(np.abs(a - b).mean(axis=1) < 10))


def test_flipped_rendered_frame_stays_photo_consistent(rendered_frame: PreparedFrame) -> None:
    f = rendered_frame
    original = _photo_consistent_fraction(f.image_2, f.image_3, f.depth, f.calib)
    flipped = flip_stereo(f.image_2, f.image_3, f.calib, depth=f.depth)
    after = _photo_consistent_fraction(flipped.left, flipped.right, flipped.depth, flipped.calib)
    naive = f.depth.copy()
    naive[:, 0] = f.image_2.shape[1] - 1 - naive[:, 0]  # old rows mirrored in u: wrong camera
    wrong = _photo_consistent_fraction(flipped.left, flipped.right, naive, flipped.calib)
    assert original > 0.9
    assert after >= original - 0.01
    assert wrong < after - 0.04
    assert abs(len(flipped.depth) - len(f.depth)) < 0.05 * len(f.depth)


def test_student_runs_on_a_prepared_frame_and_its_flip(rendered_frame: PreparedFrame, one_thread) -> None:
    f = rendered_frame
    flipped = flip_stereo(f.image_2, f.image_3, f.calib, depth=f.depth)
    grid = AnchorGrid.from_params(read_params_yaml(PARAMS.read_text())["grid"], PARAMS)
    config = StudentConfig()
    torch.manual_seed(0)
    model = StereoStudent(config, grid)
    left = images_to_tensor([f.image_2, flipped.left])
    right = images_to_tensor([f.image_3, flipped.right])
    P2, baseline = calibration_tensors([f.calib, flipped.calib])
    hw = f.image_2.shape[:2]
    depth_range = (config.depth_min, config.depth_max)
    target = torch.stack(
        [depth_target_map(rows, hw, config.feature_stride, depth_range) for rows in (f.depth, flipped.depth)]
    )
    assert target.shape == (2, 48, 160)
    assert 1000 < int((target > 0).sum()) < 2 * 48 * 160
    with torch.no_grad():
        out = model(left, right, P2, baseline)
        loss = depth_loss(out.depth_logits, target, model.plane_depths)
    assert out.head.cls.shape == (2, grid.anchors_per_cell * grid.num_classes, grid.ny, grid.nx)
    assert math.isfinite(loss.item()) and loss.item() > 0
