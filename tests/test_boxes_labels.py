"""KITTI label boxes <-> project boxes, corners, points in boxes, 2D projection and label files."""

import math

import numpy as np
import pytest
from kitti_calib_000000 import CALIB_000000, LABEL_000000

from stereodistill.data.labels import KittiObject, parse_label_line, read_label_file, write_label_file
from stereodistill.errors import InputError
from stereodistill.geometry.boxes import (
    box_corners,
    boxes_to_image_2d,
    iou_2d,
    kitti_to_project_boxes,
    observation_angle,
    points_in_boxes,
    project_to_kitti_boxes,
    wrap_angle,
)
from stereodistill.geometry.calibration import Calibration


def test_kitti_000000_pedestrian_to_project_box_by_hand():
    obj = parse_label_line(LABEL_000000)
    # location (1.84, 1.47, 8.41) bottom centre in rect; h w l = 1.89 0.48 1.20; ry = 0.01
    # -> x = z = 8.41, y = -x = -1.84, z_centre = -y + h/2 = -1.47 + 0.945, heading = -0.01 - pi/2
    np.testing.assert_allclose(
        obj.project_box(), [8.41, -1.84, -0.525, 1.20, 0.48, 1.89, -0.01 - math.pi / 2], atol=1e-12
    )
    # KITTI's alpha (-0.20) is ry - atan2(x, z)
    assert observation_angle(np.array([obj.location]), np.array([obj.rotation_y]))[0] == pytest.approx(
        0.01 - math.atan2(1.84, 8.41)
    )
    assert observation_angle(np.array([obj.location]), np.array([obj.rotation_y]))[0] == pytest.approx(
        obj.alpha, abs=0.01
    )


@pytest.mark.parametrize(
    ("ry", "heading"),
    [
        (0.0, -math.pi / 2),
        (-math.pi / 2, 0.0),
        (math.pi / 2, -math.pi),
        (math.pi, math.pi / 2 - 2 * math.pi + 2 * math.pi),
    ],
)
def test_heading_convention(ry, heading):
    # ry = 0: length along +x_rect (right) = -y project -> heading -pi/2; ry = -pi/2: facing forward (+z_rect).
    box = kitti_to_project_boxes(np.zeros((1, 3)), np.ones((1, 3)), np.array([ry]))[0]
    assert math.isclose(float(wrap_angle(box[6] - heading)), 0.0, abs_tol=1e-12) or math.isclose(
        abs(float(wrap_angle(box[6] - heading))), 2 * math.pi, abs_tol=1e-12
    )
    assert -math.pi <= box[6] < math.pi


def test_kitti_project_round_trip():
    rng = np.random.default_rng(0)
    loc = rng.uniform([-20, -1, 2], [20, 3, 70], size=(200, 3))
    hwl = rng.uniform(0.3, 5, size=(200, 3))
    ry = rng.uniform(-math.pi, math.pi, size=200)
    boxes = kitti_to_project_boxes(loc, hwl, ry)
    loc2, hwl2, ry2 = project_to_kitti_boxes(boxes)
    np.testing.assert_allclose(loc2, loc, atol=1e-12)
    np.testing.assert_allclose(hwl2, hwl, atol=1e-12)
    np.testing.assert_allclose(np.abs(wrap_angle(ry2 - ry)), 0, atol=1e-12)


def test_corners_by_hand():
    corners = box_corners(np.array([[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]]))[0]
    np.testing.assert_allclose(
        corners,
        [
            [12, 1, -0.75],
            [8, 1, -0.75],
            [8, -1, -0.75],
            [12, -1, -0.75],
            [12, 1, 0.75],
            [8, 1, 0.75],
            [8, -1, 0.75],
            [12, -1, 0.75],
        ],
        atol=1e-12,
    )
    # heading +pi/2: the length now runs along y; front-left corner is (x - w/2, y + l/2)
    corners = box_corners(np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, math.pi / 2]]))[0]
    np.testing.assert_allclose(corners[0], [-1, 2, -0.5], atol=1e-12)


def test_points_in_rotated_box():
    box = np.array([[5.0, 5.0, 0.0, 4.0, 2.0, 2.0, math.pi / 4]])
    d = 1 / math.sqrt(2)
    pts = np.array(
        [
            [5, 5, 0],  # centre
            [5 + 1.9 * d, 5 + 1.9 * d, 0.9],  # 1.9 m along the length axis, near the top: inside
            [5 + 2.1 * d, 5 + 2.1 * d, 0],  # 2.1 m along the length: outside
            [5 - 0.9 * d, 5 + 0.9 * d, 0],  # 0.9 m across: inside
            [5 - 1.1 * d, 5 + 1.1 * d, 0],  # 1.1 m across: outside
            [5, 5, 1.01],  # above
            [6.5, 5, 0],  # 1.5 m in x = 1.06 along, 1.06 across: outside (across > 1)
        ]
    )
    np.testing.assert_array_equal(
        points_in_boxes(pts, box)[0], [True, True, False, True, False, False, False]
    )


def test_points_on_faces_count_as_inside():
    box = np.array([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    assert points_in_boxes(np.array([[1.0, 1.0, 1.0], [-1.0, 0.0, -1.0]]), box).all()


def test_2d_box_matches_the_kitti_devkit_corner_construction():
    """Independent check of the heading convention: the devkit's computeBox3D, written out in rect coordinates."""
    calib = Calibration.from_text(CALIB_000000)
    obj = parse_label_line(LABEL_000000)
    h, w, l = obj.dimensions
    ry = obj.rotation_y
    rot = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    x_c = [l / 2, l / 2, -l / 2, -l / 2, l / 2, l / 2, -l / 2, -l / 2]
    y_c = [0, 0, 0, 0, -h, -h, -h, -h]
    z_c = [w / 2, -w / 2, -w / 2, w / 2, w / 2, -w / 2, -w / 2, w / 2]
    corners_rect = (rot @ np.array([x_c, y_c, z_c])).T + np.array(obj.location)
    hom = corners_rect @ calib.P2[:, :3].T + calib.P2[:, 3]
    uv = hom[:, :2] / hom[:, 2:]
    expected = [uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()]
    box2d, valid = boxes_to_image_2d(obj.project_box()[None], calib, image_size=(375, 1242))
    assert valid[0]
    np.testing.assert_allclose(box2d[0], expected, atol=1e-9)
    # and it overlaps the annotated (tight) 2D box of the pedestrian well
    assert iou_2d(box2d, np.array([obj.bbox]))[0, 0] > 0.7


def test_2d_box_clips_against_image_and_camera_plane():
    calib = Calibration.from_text(CALIB_000000)
    boxes = np.array(
        [
            [10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],  # ahead: valid, inside the image
            [1.0, 0.0, 0.0, 6.0, 2.0, 1.5, 0.0],  # straddles the camera plane: valid, clipped to the image
            [-10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],  # behind: invalid
            [10.0, 40.0, 0.0, 4.0, 2.0, 1.5, 0.0],  # far left, outside the field of view: invalid
        ]
    )
    box2d, valid = boxes_to_image_2d(boxes, calib, image_size=(375, 1242))
    np.testing.assert_array_equal(valid, [True, True, False, False])
    assert np.isnan(box2d[2]).all()
    assert box2d[1, 0] == 0 and box2d[1, 2] == 1241
    assert 0 < box2d[0, 0] < box2d[0, 2] < 1241


def test_iou_2d_by_hand():
    a = np.array([[0, 0, 2, 2]], dtype=float)
    b = np.array([[1, 1, 3, 3], [2, 0, 4, 2], [0, 0, 2, 2]], dtype=float)
    np.testing.assert_allclose(iou_2d(a, b)[0], [1 / 7, 0, 1], atol=1e-12)


def test_label_line_round_trip(tmp_path):
    obj = parse_label_line(LABEL_000000)
    assert obj == KittiObject(
        "Pedestrian",
        0.0,
        0,
        -0.2,
        (712.4, 143.0, 810.73, 307.92),
        (1.89, 0.48, 1.2),
        (1.84, 1.47, 8.41),
        0.01,
    )
    assert obj.to_line() == LABEL_000000
    result = parse_label_line(LABEL_000000 + " 0.9312")
    assert result.score == pytest.approx(0.9312)
    path = tmp_path / "000000.txt"
    write_label_file(path, [obj, obj])
    assert read_label_file(path) == [obj, obj]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (LABEL_000000.rsplit(" ", 1)[0], "expected 15 fields"),
        ("Truck2 " + LABEL_000000.split(" ", 1)[1], "unknown class 'Truck2'"),
        ("pedestrian " + LABEL_000000.split(" ", 1)[1], "class 'pedestrian' must be spelt 'Pedestrian'"),
        (
            "PERSON_SITTING " + LABEL_000000.split(" ", 1)[1],
            "must be spelt 'Person_sitting': KITTI class names",
        ),
        (LABEL_000000.replace("8.41", "nan"), "NaN or inf"),
        (LABEL_000000.replace("8.41", "x"), "not a number"),
        (LABEL_000000.replace(" 0 -0.20", " 5 -0.20"), "occluded must be"),
        (LABEL_000000.replace("1.89 0.48 1.20", "1.89 -0.48 1.20"), "negative size"),
    ],
)
def test_bad_label_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "000007.txt"
    path.write_text(LABEL_000000 + "\n" + line + "\n")
    with pytest.raises(InputError, match=message) as err:
        read_label_file(path)
    assert err.value.line == 2 and str(err.value).startswith(f"{path}:2:")


def test_dontcare_keeps_its_sentinel_size():
    line = "DontCare -1 -1 -10 503.89 169.71 590.74 190.13 -1 -1 -1 -1000 -1000 -1000 -10"
    assert parse_label_line(line).dimensions == (-1.0, -1.0, -1.0)


def test_missing_label_file(tmp_path):
    with pytest.raises(InputError, match="missing"):
        read_label_file(tmp_path / "x.txt")
    assert read_label_file(tmp_path / "x.txt", missing_ok=True) == []


def test_torch_bev_membership_agrees_with_numpy_points_in_boxes():
    import torch

    from stereodistill.geometry.bev import points_in_bev_boxes

    rng = np.random.default_rng(3)
    boxes = np.concatenate(
        [rng.uniform([0, -5, -1, 1, 1, 1, -3], [10, 5, 1, 5, 3, 2, 3], size=(6, 7))], axis=0
    )
    points = np.concatenate([rng.uniform([-1, -6], [11, 6], size=(2000, 2)), np.zeros((2000, 1))], axis=1)
    tall = boxes.copy()
    tall[:, 2], tall[:, 5] = 0.0, 10.0  # membership in z is not part of the BEV test
    expected = points_in_boxes(points, tall).any(axis=0)
    got = points_in_bev_boxes(torch.from_numpy(points[:, :2]).float(), torch.from_numpy(boxes).float())
    assert got.numpy().tolist() == expected.tolist()
    assert not points_in_bev_boxes(torch.zeros(3, 2), torch.zeros(0, 7)).any()
