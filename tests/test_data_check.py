"""`stereodistill data check` on the hand-made fixture: JSON report, summary, exit status, pictures."""

import json

import numpy as np
import pytest
from kitti_fixtures import CAR_POINTS, VAN_POINTS, KittiFixture
from PIL import Image


def check_json(run_cli, root, tmp_path, *args):
    out = tmp_path / "report.json"
    result = run_cli("data", "check", root, "--json", out, *args)
    return result, json.loads(out.read_text())


def test_report_shape_and_points_in_boxes(run_cli, kitti_readonly: KittiFixture, tmp_path):
    result, report = check_json(run_cli, kitti_readonly.root, tmp_path)
    assert result.exit_code == 0, result.output
    assert set(report) == {"frames", "summary"}
    assert list(report["frames"]) == ["000000", "000001", "000002"]
    frame = report["frames"]["000000"]
    assert frame["missing"] == [] and frame["corrupt"] == []
    # DontCare is not an object; everything else is, in label order
    assert [o["type"] for o in frame["objects"]] == ["Car", "Pedestrian"]
    assert [o["type"] for o in report["frames"]["000001"]["objects"]] == [
        "Van",
        "Person_sitting",
        "Misc",
        "Cyclist",
    ]
    assert report["frames"]["000002"]["objects"] == []
    car = frame["objects"][0]
    assert {"type", "box", "points_in_box", "bbox_label", "bbox_projected", "bbox_iou"} <= set(car)
    assert car["points_in_box"] == CAR_POINTS
    assert frame["objects"][1]["points_in_box"] == 0
    assert [o["points_in_box"] for o in report["frames"]["000001"]["objects"]] == [VAN_POINTS, 0, 0, 0]
    np.testing.assert_allclose(car["box"], [10.0, -1.0, -0.9, 4.0, 1.6, 1.5, -np.pi / 2], atol=1e-4)
    assert car["bbox_label"] == [535.85, 182.85, 849.47, 302.19]


def test_projected_bbox_by_hand(run_cli, kitti_readonly: KittiFixture, tmp_path):
    _, report = check_json(run_cli, kitti_readonly.root, tmp_path, "--frames", "000000")
    car = report["frames"]["000000"]["objects"][0]
    # Car: bottom centre (1, 1.65, 10) rect, h w l = 1.5 1.6 4, rotation_y = 0 -> axis-aligned in rect:
    # x in [-1, 3], y in [0.15, 1.65], z in [9.2, 10.8]. P2 of KITTI frame 000000:
    fu, cu, tx = 721.5377, 609.5593, 44.85728
    fv, cv, ty = 721.5377, 172.854, 0.2163791
    tz = 2.745884e-3
    us, vs = [], []
    for x in (-1.0, 3.0):
        for y in (0.15, 1.65):
            for z in (9.2, 10.8):
                us.append((fu * x + cu * z + tx) / (z + tz))
                vs.append((fv * y + cv * z + ty) / (z + tz))
    expected = [min(us), min(vs), max(us), max(vs)]
    # u: nearest face (z = 9.2) bounds both sides; v: top edge is far (z = 10.8), bottom edge near
    np.testing.assert_allclose(expected, [535.847, 182.849, 849.466, 302.194], atol=1e-3)
    np.testing.assert_allclose(car["bbox_projected"], expected, atol=0.006)  # the report keeps 2 decimals
    assert car["bbox_iou"] == pytest.approx(1.0, abs=1e-3)


def test_iou_of_the_misplaced_label_box(run_cli, kitti_readonly: KittiFixture, tmp_path):
    _, report = check_json(run_cli, kitti_readonly.root, tmp_path, "--frames", "000000")
    pedestrian = report["frames"]["000000"]["objects"][1]
    label, projected = pedestrian["bbox_label"], pedestrian["bbox_projected"]
    assert label == [440.0, 160.0, 470.0, 240.0]
    inter = (min(label[2], projected[2]) - max(label[0], projected[0])) * (
        min(label[3], projected[3]) - max(label[1], projected[1])
    )
    union = 30.0 * 80.0 + (projected[2] - projected[0]) * (projected[3] - projected[1]) - inter
    assert pedestrian["bbox_iou"] == pytest.approx(inter / union, abs=1e-3)
    assert pedestrian["bbox_iou"] == pytest.approx(0.336, abs=0.002)


def test_summary_on_stdout(run_cli, kitti_readonly: KittiFixture, tmp_path):
    result, report = check_json(run_cli, kitti_readonly.root, tmp_path)
    summary = report["summary"]
    assert summary["frames_checked"] == 3 and summary["objects"] == 6
    assert summary["objects_with_0_points"] == 4  # Pedestrian, Person_sitting, Misc, Cyclist
    assert summary["objects_with_bbox_iou_below_threshold"] == 1  # the Pedestrian
    assert summary["frames_with_missing_files"] == [] and summary["frames_with_corrupt_files"] == []
    lines = result.stdout.splitlines()
    assert "frames checked: 3" in lines
    assert "frames with missing files: 0" in lines
    assert "objects (DontCare excluded): 6" in lines
    assert "objects with 0 LiDAR points: 4" in lines
    assert "objects with 2D IoU(label box, projected 3D box) < 0.9: 1" in lines


def test_missing_image_3_is_reported_and_the_rest_still_checked(run_cli, kitti: KittiFixture, tmp_path):
    kitti.path("training", "image_3", "000000").unlink()
    result, report = check_json(run_cli, kitti.root, tmp_path)
    assert result.exit_code == 1
    frame = report["frames"]["000000"]
    assert frame["missing"] == ["training/image_3/000000.png"]
    assert frame["objects"][0]["points_in_box"] == CAR_POINTS
    assert frame["objects"][0]["bbox_iou"] == pytest.approx(1.0, abs=1e-3)
    assert report["summary"]["frames_with_missing_files"] == ["000000"]
    assert "frames with missing files: 1 (000000)" in result.stdout.splitlines()


def test_corrupt_files_are_reported(run_cli, kitti: KittiFixture, tmp_path):
    points = kitti.frames["training", "000001"].points_velo.copy()
    points[3, 1] = np.nan
    points.tofile(kitti.path("training", "velodyne", "000001"))
    label = kitti.path("training", "label_2", "000000")
    label.write_text(label.read_text() + "Car 0 0 0 1 2 3\n")
    result, report = check_json(run_cli, kitti.root, tmp_path)
    assert result.exit_code == 1
    corrupt1 = report["frames"]["000001"]["corrupt"]
    assert [c["file"] for c in corrupt1] == ["training/velodyne/000001.bin"]
    assert "point 3 (0-based)" in corrupt1[0]["error"]
    assert all(o["points_in_box"] is None for o in report["frames"]["000001"]["objects"])
    corrupt0 = report["frames"]["000000"]["corrupt"]
    assert corrupt0[0]["file"] == "training/label_2/000000.txt" and "000000.txt:4:" in corrupt0[0]["error"]
    assert "frames with corrupt files: 2 (000000, 000001)" in result.stdout.splitlines()


def test_stereo_pair_size_mismatch_is_corrupt(run_cli, kitti: KittiFixture, tmp_path):
    Image.new("RGB", (1240, 375)).save(kitti.path("training", "image_3", "000002"))
    result, report = check_json(run_cli, kitti.root, tmp_path, "--frames", "000002")
    assert result.exit_code == 1
    [problem] = report["frames"]["000002"]["corrupt"]
    assert "different sizes" in problem["error"] and "image_2/000002.png" in problem["error"]


def test_frame_selection(run_cli, kitti_readonly: KittiFixture, tmp_path):
    _, report = check_json(run_cli, kitti_readonly.root, tmp_path, "--frames", "000002,000000")
    assert list(report["frames"]) == ["000002", "000000"]
    _, report = check_json(run_cli, kitti_readonly.root, tmp_path, "--frames", "000001", "--frames", "000000")
    assert list(report["frames"]) == ["000001", "000000"]
    _, report = check_json(
        run_cli, kitti_readonly.root, tmp_path, "--split-file", kitti_readonly.split_file("val")
    )
    assert list(report["frames"]) == ["000002"]
    both = run_cli(
        "data",
        "check",
        kitti_readonly.root,
        "--frames",
        "000000",
        "--split-file",
        kitti_readonly.split_file("val"),
    )
    assert both.exit_code == 2 and "not both" in both.stderr
    bad = run_cli("data", "check", kitti_readonly.root, "--frames", "12")
    assert bad.exit_code == 2 and "6-digit" in bad.stderr


def test_frame_that_does_not_exist_is_all_missing(run_cli, kitti_readonly: KittiFixture, tmp_path):
    result, report = check_json(run_cli, kitti_readonly.root, tmp_path, "--frames", "000042")
    assert result.exit_code == 1
    assert len(report["frames"]["000042"]["missing"]) == 5


def test_testing_subset_has_no_labels(run_cli, kitti_readonly: KittiFixture, tmp_path):
    result, report = check_json(run_cli, kitti_readonly.root, tmp_path, "--subset", "testing")
    assert result.exit_code == 0
    frame = report["frames"]["000000"]
    # the fixture's images are no real stereo pair; the stereo entry is tested in tests/test_data_check_stereo.py
    assert frame.pop("stereo") is not None
    assert report["frames"] == {"000000": {"missing": [], "corrupt": [], "objects": []}}


def test_bad_split_file_is_an_error(run_cli, kitti_readonly: KittiFixture, tmp_path):
    split = tmp_path / "bad.txt"
    split.write_text("000000\n0001\n")
    result = run_cli("data", "check", kitti_readonly.root, "--split-file", split)
    assert result.exit_code == 1 and f"{split}:2:" in result.stderr


def test_png_pictures(run_cli, kitti_readonly: KittiFixture, tmp_path):
    out = tmp_path / "pictures"
    result = run_cli("data", "check", kitti_readonly.root, "--frames", "000000,000001", "--png", out)
    assert result.exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "000000_bev.png",
        "000000_image.png",
        "000001_bev.png",
        "000001_image.png",
    ]
    overlay = np.asarray(Image.open(out / "000001_image.png"))
    assert overlay.shape == (370, 1224, 3)
    with Image.open(out / "000000_bev.png") as bev:
        assert bev.size == (800, 700)
    # the Car's wireframe is drawn in green along its projected 2D box's left edge (u ~ 536)
    image = np.asarray(Image.open(out / "000000_image.png"))
    column = image[200:290, 534:539]
    assert ((column == [0, 255, 0]).all(axis=-1)).any()
