"""Calibration parsing and every frame transform, checked against hand-computed KITTI cases."""

import math

import numpy as np
import pytest
import torch
from kitti_calib_000000 import CALIB_000000

from stereodistill.errors import InputError
from stereodistill.geometry.calibration import Calibration
from stereodistill.geometry.frames import project_to_rect, rect_to_project


@pytest.fixture()
def calib() -> Calibration:
    return Calibration.from_text(CALIB_000000)


def test_rect_project_axes_by_hand():
    # rect (x right, y down, z forward) = (1, 2, 3) -> project (x fwd, y left, z up) = (3, -1, -2)
    np.testing.assert_array_equal(rect_to_project(np.array([1.0, 2.0, 3.0])), [3.0, -1.0, -2.0])
    np.testing.assert_array_equal(project_to_rect(np.array([3.0, -1.0, -2.0])), [1.0, 2.0, 3.0])
    t = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(project_to_rect(rect_to_project(t)), t)


def test_parse_kitti_000000(calib):
    assert calib.P2.shape == (3, 4) and calib.R0_rect.shape == (3, 3)
    assert calib.P2[0, 3] == pytest.approx(44.85728)
    assert calib.Tr_imu_to_velo is not None and calib.Tr_imu_to_velo[0, 3] == pytest.approx(-0.8086759)
    # f_u and the baseline between image_2 and image_3: (44.85728 - (-339.5242)) / 721.5377
    assert calib.focal_length == 721.5377
    # camera centres: -(P[0,3] - cu*tz) / fu along x_rect
    c2 = -(44.85728 - 609.5593 * 2.745884e-3) / 721.5377
    c3 = -(-339.5242 - 609.5593 * 2.729905e-3) / 721.5377
    assert calib.camera_centre(2)[0] == pytest.approx(c2, abs=1e-12)
    assert calib.camera_centre(2)[2] == pytest.approx(-2.745884e-3, abs=1e-12)
    assert calib.baseline == pytest.approx(c3 - c2, abs=1e-12)
    assert calib.baseline == pytest.approx(0.5327, abs=1e-4)
    # depth from disparity: 10 px -> f * b / 10
    assert calib.disparity_to_depth(np.array([10.0]))[0] == pytest.approx(721.5377 * (c3 - c2) / 10, abs=1e-9)


def test_text_round_trip_is_lossless(calib):
    again = Calibration.from_text(calib.to_text())
    for key in ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"):
        np.testing.assert_array_equal(getattr(again, key), getattr(calib, key))


def test_tracking_benchmark_key_aliases(calib):
    text = CALIB_000000.replace("R0_rect:", "R_rect:").replace("Tr_velo_to_cam:", "Tr_velo_cam:")
    np.testing.assert_array_equal(Calibration.from_text(text).R0_rect, calib.R0_rect)


def test_rect_to_image_by_hand(calib):
    # rect point (0, 0, 10): P2 @ [0, 0, 10, 1] = (609.5593*10 + 44.85728, 172.854*10 + 0.2163791, 10.002745884)
    uv, depth = calib.rect_to_image(np.array([[0.0, 0.0, 10.0]]), camera=2)
    d = 10 + 2.745884e-3
    assert depth[0] == pytest.approx(d)
    assert uv[0, 0] == pytest.approx((6095.593 + 44.85728) / d, abs=1e-9)
    assert uv[0, 1] == pytest.approx((1728.54 + 0.2163791) / d, abs=1e-9)
    # image_3 has its own (tiny) tz, hence its own depth
    uv3, depth3 = calib.rect_to_image(np.array([[0.0, 0.0, 10.0]]), camera=3)
    d3 = 10 + 2.729905e-3
    assert depth3[0] == pytest.approx(d3)
    assert uv3[0, 0] == pytest.approx((6095.593 - 339.5242) / d3, abs=1e-9)


def test_image_to_rect_inverts_rect_to_image(calib):
    rng = np.random.default_rng(0)
    pts = rng.uniform([-20, -3, 1], [20, 3, 70], size=(100, 3))
    for cam in (0, 1, 2, 3):
        uv, depth = calib.rect_to_image(pts, cam)
        np.testing.assert_allclose(calib.image_to_rect(uv, depth, cam), pts, atol=1e-9)
    uv, depth = calib.project_to_image(rect_to_project(pts))
    np.testing.assert_allclose(calib.image_to_project(uv, depth), rect_to_project(pts), atol=1e-9)


def test_velodyne_to_project_by_hand(calib):
    # A point 10 m ahead of the Velodyne: Tr_velo_to_cam gives cam (x, y, z) =
    # (7.533745e-3*10 - 4.069766e-3, 1.480249e-2*10 - 7.631618e-2, 9.998621e-1*10 - 2.717806e-1); R0_rect rotates it.
    cam = np.array([7.533745e-3 * 10 - 4.069766e-3, 1.480249e-2 * 10 - 7.631618e-2, 9.998621 - 2.717806e-1])
    rect = calib.R0_rect @ cam
    expected = np.array([rect[2], -rect[0], -rect[1]])
    got = calib.velo_to_project(np.array([[10.0, 0.0, 0.0]]))[0]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # KITTI's Velodyne sits ~0.27 m behind and ~0.08 m above camera 0
    np.testing.assert_allclose(got, [9.727, 0.0004, -0.029], atol=2e-3)
    back = calib.project_to_velo(got[None])
    np.testing.assert_allclose(back[0], [10.0, 0.0, 0.0], atol=1e-9)


def test_flipped_calibration_mirrors_the_scene(calib):
    width = 1242
    flipped = calib.flipped(width)
    assert flipped.baseline == pytest.approx(calib.baseline)
    rng = np.random.default_rng(1)
    pts = rng.uniform([-10, -2, 5], [10, 2, 50], size=(50, 3))
    mirrored = pts * np.array([-1.0, 1.0, 1.0])
    # the mirrored point seen by the new left camera lands where the original was seen by the old right camera,
    # mirrored horizontally; likewise new right <- old left.
    uv_new_left, _ = flipped.rect_to_image(mirrored, 2)
    uv_old_right, _ = calib.rect_to_image(pts, 3)
    np.testing.assert_allclose(uv_new_left[:, 0], width - 1 - uv_old_right[:, 0], atol=1e-9)
    np.testing.assert_allclose(uv_new_left[:, 1], uv_old_right[:, 1], atol=1e-9)
    uv_new_right, _ = flipped.rect_to_image(mirrored, 3)
    uv_old_left, _ = calib.rect_to_image(pts, 2)
    np.testing.assert_allclose(uv_new_right[:, 0], width - 1 - uv_old_left[:, 0], atol=1e-9)
    # Velodyne points map to the mirrored rect positions
    velo = calib.rect_to_velo(pts)
    np.testing.assert_allclose(flipped.velo_to_rect(velo), mirrored, atol=1e-9)
    assert math.isclose(np.linalg.det(flipped.R0_rect), np.linalg.det(calib.R0_rect), abs_tol=1e-12)


@pytest.mark.parametrize(
    ("edit", "message", "line"),
    [
        (lambda t: "\n".join(ln for ln in t.splitlines() if not ln.startswith("P3")), "missing P3", None),
        (lambda t: t.replace("P2: 7.215377000000e+02 ", "P2: "), "P2 needs 12 numbers, found 11", 3),
        (lambda t: t.replace("R0_rect: 9.999239000000e-01", "R0_rect: abc"), "not a number", 5),
        (lambda t: t.replace("R0_rect: 9.999239000000e-01", "R0_rect: nan"), "NaN or inf", 5),
        (lambda t: t + "P2 1 2 3\n", "expected 'KEY: values'", 9),
        (lambda t: t.replace("P2: 7.215377000000e+02", "P2: -7.215377000000e+02"), "not a rectified", None),
        (
            lambda t: t.replace(
                "R0_rect: 9.999239000000e-01 9.837760000000e-03 -7.445048000000e-03", "R0_rect: 0 0 0"
            ),
            "R0_rect is not invertible",
            None,
        ),
    ],
)
def test_malformed_calibration_names_file_and_line(tmp_path, edit, message, line):
    path = tmp_path / "000000.txt"
    path.write_text(edit(CALIB_000000))
    with pytest.raises(InputError, match=message) as err:
        Calibration.from_file(path)
    assert err.value.path == path and err.value.line == line
    assert str(err.value).startswith(str(path))


def test_missing_calibration_file(tmp_path):
    with pytest.raises(InputError, match="calibration file is missing"):
        Calibration.from_file(tmp_path / "nope.txt")
