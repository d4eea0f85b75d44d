"""The KITTI object-layout reader on the hand-made fixture (tests/kitti_fixtures.py)."""

import numpy as np
import pytest
from kitti_fixtures import CAR_LINE, KittiFixture, _image
from PIL import Image

from stereodistill.data.kitti import (
    KittiObjectDataset,
    default_subset,
    read_image,
    read_image_size,
    read_split_file,
    read_velodyne,
)
from stereodistill.errors import InputError
from stereodistill.geometry.calibration import Calibration


# ----------------------------------------------------------------------------------------- split lists
def test_split_file_ids_in_order(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("000003\n000001\n\n  000007  \r\n")
    assert read_split_file(path) == ["000003", "000001", "000007"]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("000001\n12345\n", 2, "6-digit"),
        ("000001\n000002\nabcdef\n", 3, "6-digit"),
        ("000001\n0000012\n", 2, "6-digit"),
        ("000001\n000002\n000001\n", 3, r"listed twice \(first on line 1\)"),
    ],
)
def test_split_file_errors_name_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "val.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=words) as err:
        read_split_file(path)
    assert err.value.path == path and err.value.line == line
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_split_file_empty_or_missing(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(InputError, match="lists no frames"):
        read_split_file(tmp_path / "empty.txt")
    with pytest.raises(InputError, match="missing"):
        read_split_file(tmp_path / "nope.txt")


def test_default_subset_follows_kitti_split_names():
    assert default_subset("ImageSets/test.txt") == "testing"
    assert default_subset("ImageSets/train.txt") == "training"
    assert default_subset("ImageSets/val.txt") == "training"


# ----------------------------------------------------------------------------------------- dataset
def test_frame_listing_and_paths(kitti_readonly: KittiFixture):
    training = KittiObjectDataset(kitti_readonly.root)
    assert training.frame_ids == ["000000", "000001", "000002"] and len(training) == 3
    assert training.has_labels
    paths = training.paths("000001")
    assert paths.image_3 == kitti_readonly.root / "training" / "image_3" / "000001.png"
    assert paths.velodyne == kitti_readonly.root / "training" / "velodyne" / "000001.bin"
    assert paths.label_2 == kitti_readonly.root / "training" / "label_2" / "000001.txt"

    testing = KittiObjectDataset(kitti_readonly.root, "testing")
    assert testing.frame_ids == ["000000"] and not testing.has_labels
    assert testing.paths("000000").label_2 is None
    frame = testing[0]
    assert frame.objects is None and frame.image_2.shape == (375, 1242, 3)

    chosen = KittiObjectDataset(kitti_readonly.root, frame_ids=["000002", "000000"])
    assert chosen.frame_ids == ["000002", "000000"]


def test_listing_includes_frames_with_files_missing(kitti: KittiFixture):
    kitti.path("training", "image_2", "000002").unlink()
    (kitti.root / "training" / "velodyne" / "000009.bin").write_bytes(b"")  # a frame with only a point cloud
    (kitti.root / "training" / "velodyne" / "notes.bin").write_bytes(b"")  # not a frame id: ignored
    assert KittiObjectDataset(kitti.root).frame_ids == ["000000", "000001", "000002", "000009"]


def test_missing_subset_folder(tmp_path):
    with pytest.raises(InputError, match="no 'training' folder"):
        KittiObjectDataset(tmp_path)


def test_every_field_of_a_label_line(kitti_readonly: KittiFixture):
    # CAR_LINE = "Car 0.12 1 -0.10 535.85 182.85 849.47 302.19 1.50 1.60 4.00 1.00 1.65 10.00 0.00"
    assert CAR_LINE.startswith("Car 0.12 1 -0.10 ")
    car = KittiObjectDataset(kitti_readonly.root).read_objects("000000")[0]
    assert car.type == "Car"
    assert car.truncated == 0.12
    assert car.occluded == 1
    assert car.alpha == -0.10
    assert car.bbox == (535.85, 182.85, 849.47, 302.19)
    assert car.dimensions == (1.50, 1.60, 4.00)  # h, w, l
    assert car.location == (1.00, 1.65, 10.00)
    assert car.rotation_y == 0.0
    assert car.score is None
    # project box by hand: centre (z_rect, -x_rect, -y_rect + h/2), heading -ry - pi/2
    np.testing.assert_allclose(car.project_box(), [10.0, -1.0, -0.9, 4.0, 1.6, 1.5, -np.pi / 2], atol=1e-12)


def test_all_classes_kept(kitti_readonly: KittiFixture):
    dataset = KittiObjectDataset(kitti_readonly.root)
    assert [o.type for o in dataset.read_objects("000000")] == ["Car", "Pedestrian", "DontCare"]
    assert [o.type for o in dataset.read_objects("000001")] == [
        "Van",
        "Person_sitting",
        "Misc",
        "Cyclist",
        "DontCare",
    ]
    assert dataset.read_objects("000002") == []
    dont_care = dataset.read_objects("000000")[2]
    assert dont_care.location == (-1000.0, -1000.0, -1000.0) and dont_care.rotation_y == -10.0


def test_calibration_via_reader(kitti_readonly: KittiFixture):
    dataset = KittiObjectDataset(kitti_readonly.root)
    calib = dataset.read_calib("000000")
    assert calib.P2[0, 0] == 721.5377 and calib.P2[0, 3] == 44.85728
    assert calib.Tr_imu_to_velo is not None
    other = dataset.read_calib("000001")
    assert other.P2[0, 0] == 707.0493 and other.Tr_imu_to_velo is None
    expected = Calibration.from_text(kitti_readonly.frames["training", "000001"].calib_text)
    np.testing.assert_array_equal(other.Tr_velo_to_cam, expected.Tr_velo_to_cam)


# ----------------------------------------------------------------------------------------- velodyne
def test_velodyne_round_trip(kitti_readonly: KittiFixture, tmp_path):
    dataset = KittiObjectDataset(kitti_readonly.root)
    for frame_id in dataset.frame_ids:
        points = dataset.read_points(frame_id)
        written = kitti_readonly.frames["training", frame_id].points_velo
        assert points.dtype == np.float32 and points.shape == written.shape and points.shape[1] == 4
        np.testing.assert_array_equal(points, written)
    path = tmp_path / "x.bin"
    values = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    values.tofile(path)
    np.testing.assert_array_equal(read_velodyne(path), values)
    path.write_bytes(b"")
    assert read_velodyne(path).shape == (0, 4)


def test_velodyne_size_not_multiple_of_16(tmp_path):
    path = tmp_path / "000004.bin"
    path.write_bytes(np.zeros(10, dtype=np.float32).tobytes())  # 40 bytes
    with pytest.raises(InputError, match="40 bytes is not a multiple of 16") as err:
        read_velodyne(path)
    assert err.value.path == path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_velodyne_nan_inf_names_first_bad_point(tmp_path, bad):
    points = np.ones((20, 4), dtype=np.float32)
    points[7, 2] = bad
    points[12, 0] = bad
    path = tmp_path / "000005.bin"
    points.tofile(path)
    with pytest.raises(InputError, match=r"point 7 \(0-based\) has a NaN or inf.*2 of 20 points") as err:
        read_velodyne(path)
    assert err.value.path == path


def test_velodyne_missing(tmp_path):
    with pytest.raises(InputError, match="missing"):
        read_velodyne(tmp_path / "000000.bin")


# ----------------------------------------------------------------------------------------- images
def test_images_decode_to_rgb_uint8(kitti_readonly: KittiFixture):
    dataset = KittiObjectDataset(kitti_readonly.root)
    left, right = dataset.read_stereo_pair("000001")
    assert left.dtype == np.uint8 and left.shape == (370, 1224, 3) and right.shape == (370, 1224, 3)
    np.testing.assert_array_equal(left, _image((370, 1224), 0))
    np.testing.assert_array_equal(right, _image((370, 1224), 7))
    assert read_image_size(kitti_readonly.path("training", "image_2", "000001")) == (370, 1224)


def test_grey_image_becomes_rgb(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((4, 6), 200, dtype=np.uint8)).save(path)
    image = read_image(path)
    assert image.shape == (4, 6, 3) and (image == 200).all()


def test_stereo_pair_of_different_sizes_names_both_files(kitti: KittiFixture):
    right = kitti.path("training", "image_3", "000000")
    Image.fromarray(_image((375, 1240), 7)).save(right)
    with pytest.raises(InputError, match="different sizes") as err:
        KittiObjectDataset(kitti.root).read_stereo_pair("000000")
    message = str(err.value)
    assert str(kitti.path("training", "image_2", "000000")) in message and str(right) in message
    assert "1242x375" in message and "1240x375" in message


@pytest.mark.parametrize("damage", ["truncate", "garbage", "bad_checksum"])
def test_corrupt_image_names_file(kitti: KittiFixture, damage):
    path = kitti.path("training", "image_2", "000001")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a png at all" * 10)
    else:
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(flipped))
    with pytest.raises(InputError) as err:
        read_image_size(path)  # structure check (what `prepare` validates with)
    assert err.value.path == path
    if damage != "bad_checksum":  # decoding alone does not look at chunk checksums
        with pytest.raises(InputError) as err:
            read_image(path)
        assert err.value.path == path
