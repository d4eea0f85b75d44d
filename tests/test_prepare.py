"""`stereodistill prepare` and PreparedSplit: validation, round trip, DataLoader workers, atomic writes."""

import hashlib
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from kitti_fixtures import CAR_POINTS, KittiFixture, _image
from PIL import Image

import stereodistill.data.prepared as prepared_module
from stereodistill.data.kitti import read_image
from stereodistill.data.labels import read_label_file
from stereodistill.data.prepared import SCHEMA_VERSION, PreparedFrame, PreparedSplit, prepare_split
from stereodistill.errors import InputError
from stereodistill.geometry.boxes import points_in_boxes
from stereodistill.geometry.calibration import Calibration
from stereodistill.geometry.frames import project_to_rect


@pytest.fixture(scope="module")
def prepared(kitti_readonly: KittiFixture, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "train.h5"
    prepare_split(kitti_readonly.root, kitti_readonly.split_file("train"), out, progress=False)
    return out


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ----------------------------------------------------------------------------------------- bad input
def _write_points(kitti: KittiFixture, frame_id: str, points: np.ndarray) -> None:
    points.astype("<f4").tofile(kitti.path("training", "velodyne", frame_id))


def _with_bad_value(kitti: KittiFixture, value: float) -> None:
    points = kitti.frames["training", "000001"].points_velo.copy()
    points[5, 0] = value
    _write_points(kitti, "000001", points)


def _edit_line(path: Path, lineno: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = new
    path.write_text("\n".join(lines) + "\n")


DAMAGE = {
    "missing velodyne": (
        lambda k: k.path("training", "velodyne", "000001").unlink(),
        ["velodyne/000001.bin", "velodyne file of frame 000001 is missing"],
    ),
    "missing image_3": (
        lambda k: k.path("training", "image_3", "000000").unlink(),
        ["image_3/000000.png", "missing"],
    ),
    "missing label": (
        lambda k: k.path("training", "label_2", "000001").unlink(),
        ["label_2/000001.txt", "missing"],
    ),
    "truncated bin": (
        lambda k: k.path("training", "velodyne", "000000").write_bytes(
            k.path("training", "velodyne", "000000").read_bytes()[:-7]
        ),
        ["velodyne/000000.bin", "not a multiple of 16"],
    ),
    "calib without P3": (
        lambda k: k.path("training", "calib", "000001").write_text(
            "".join(
                line + "\n"
                for line in k.frames["training", "000001"].calib_text.splitlines()
                if not line.startswith("P3")
            )
        ),
        ["calib/000001.txt", "missing P3"],
    ),
    "label field count": (
        lambda k: _edit_line(
            k.path("training", "label_2", "000000"), 2, "Pedestrian 0.00 2 1.40 440.00 160.00"
        ),
        ["label_2/000000.txt:2:", "expected 15 fields"],
    ),
    "unknown class": (
        lambda k: _edit_line(
            k.path("training", "label_2", "000001"),
            3,
            "Bus 0.98 3 2.50 215.72 208.37 288.91 273.71 1.00 1.00 1.00 -6.00 1.50 12.00 2.80",
        ),
        ["label_2/000001.txt:3:", "unknown class 'Bus'"],
    ),
    "nan point": (lambda k: _with_bad_value(k, np.nan), ["velodyne/000001.bin", "point 5 (0-based)"]),
    "inf point": (lambda k: _with_bad_value(k, np.inf), ["velodyne/000001.bin", "point 5 (0-based)"]),
    "pair sizes differ": (
        lambda k: Image.fromarray(_image((370, 1220), 7)).save(k.path("training", "image_3", "000001")),
        ["image_2/000001.png", "image_3/000001.png", "different sizes"],
    ),
    "corrupt png": (
        lambda k: k.path("training", "image_2", "000001").write_bytes(
            k.path("training", "image_2", "000001").read_bytes()[:3000]
        ),
        ["image_2/000001.png", "corrupt"],
    ),
    "malformed split id": (
        lambda k: k.split_file("train").write_text("000000\n00001\n"),
        ["train.txt:2:", "6-digit"],
    ),
    "duplicate split id": (
        lambda k: k.split_file("train").write_text("000000\n000001\n000000\n"),
        ["train.txt:3:", "listed twice"],
    ),
    "frame not in dataset": (
        lambda k: k.split_file("train").write_text("000000\n000077\n"),
        ["image_2/000077.png", "missing"],
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_bad_input_fails_cleanly(run_cli, kitti: KittiFixture, tmp_path, case):
    damage, expected = DAMAGE[case]
    damage(kitti)
    out_dir = tmp_path / "out"
    result = run_cli(
        "prepare",
        "--root",
        kitti.root,
        "--split-file",
        kitti.split_file("train"),
        "--out",
        out_dir / "train.h5",
        "--no-progress",
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    for words in expected:
        assert words in result.stderr, result.stderr
    assert not out_dir.exists() or leftovers(out_dir) == []


def test_cli_writes_the_file(run_cli, kitti_readonly: KittiFixture, tmp_path):
    out = tmp_path / "prepared" / "val.h5"
    result = run_cli(
        "prepare",
        "--root",
        kitti_readonly.root,
        "--split-file",
        kitti_readonly.split_file("val"),
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {out}"
    assert leftovers(out.parent) == ["val.h5"]
    assert PreparedSplit(out).frame_ids == ["000002"]


def test_the_same_split_prepared_in_two_places_is_the_same_bytes(
    kitti_readonly: KittiFixture, tmp_path, monkeypatch
):
    outputs = []
    for place in ("a", "b/deeper"):
        project = tmp_path / place
        shutil.copytree(kitti_readonly.root, project / "data" / "kitti")
        monkeypatch.chdir(project)
        prepare_split(
            "data/kitti", "data/kitti/ImageSets/train.txt", "data/prepared/train.h5", progress=False
        )
        outputs.append((project / "data" / "prepared" / "train.h5").read_bytes())
    assert outputs[0] == outputs[1]
    assert (
        PreparedSplit(tmp_path / "a" / "data" / "prepared" / "train.h5").attrs["source_root"] == "data/kitti"
    )


# ----------------------------------------------------------------------------------------- round trip
def test_attributes(prepared: Path, kitti_readonly: KittiFixture):
    split = PreparedSplit(prepared)
    split_file = kitti_readonly.split_file("train")
    assert split.attrs["schema_version"] == SCHEMA_VERSION
    assert split.attrs["split"] == "train" and split.attrs["subset"] == "training"
    assert split.attrs["source_root"] == kitti_readonly.root.as_posix()
    assert split.attrs["split_sha256"] == hashlib.sha256(split_file.read_bytes()).hexdigest()
    assert split.attrs["num_frames"] == 2 and split.attrs["has_labels"] is True
    assert split.frame_ids == ["000000", "000001"] and len(split) == 2


def test_images_round_trip_with_padding(prepared: Path, kitti_readonly: KittiFixture):
    split = PreparedSplit(prepared)
    assert split.image_hw_max == (375, 1242)
    np.testing.assert_array_equal(split.image_shapes, [[375, 1242], [370, 1224]])
    for index, frame_id in enumerate(split.frame_ids):
        left, right = split.read_stereo_pair(index)
        np.testing.assert_array_equal(left, read_image(kitti_readonly.path("training", "image_2", frame_id)))
        np.testing.assert_array_equal(right, read_image(kitti_readonly.path("training", "image_3", frame_id)))
    with h5py.File(prepared) as f:
        image = f["image_2"]
        assert image.chunks == (1, 375, 1242, 3) and image.compression is None and image.dtype == np.uint8
        padded = image[1]
        assert not padded[370:].any() and not padded[:, 1224:].any()


def test_calibration_rebuilt_equals_parsed(prepared: Path, kitti_readonly: KittiFixture):
    split = PreparedSplit(prepared)
    for index, frame_id in enumerate(split.frame_ids):
        parsed = Calibration.from_file(kitti_readonly.path("training", "calib", frame_id))
        rebuilt = split.calibration(index)
        for key in ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam"):
            np.testing.assert_array_equal(getattr(rebuilt, key), getattr(parsed, key), err_msg=key)
        if parsed.Tr_imu_to_velo is None:
            assert rebuilt.Tr_imu_to_velo is None
        else:
            np.testing.assert_array_equal(rebuilt.Tr_imu_to_velo, parsed.Tr_imu_to_velo)
    assert split.calibration(1).Tr_imu_to_velo is None and split.calibration(0).Tr_imu_to_velo is not None


def test_labels_round_trip_exactly(prepared: Path, kitti_readonly: KittiFixture):
    split = PreparedSplit(prepared)
    for index, frame_id in enumerate(split.frame_ids):
        source = read_label_file(kitti_readonly.path("training", "label_2", frame_id))
        objects = split.objects(index)
        assert objects == source
        lines = kitti_readonly.frames["training", frame_id].label_lines
        for obj, line in zip(objects, lines, strict=True):
            if obj.type != "DontCare":  # DontCare's "-1" fields are written back as "-1.00"
                assert obj.to_line() == line
        labels = split.labels(index)
        assert list(labels.types) == [o.type for o in source]
        assert labels.boxes.dtype == np.float32 and labels.boxes.shape == (len(source), 7)
        for row, obj in zip(labels.boxes, source, strict=True):
            if obj.type == "DontCare":
                assert np.isnan(row).all()
            else:
                np.testing.assert_array_equal(row, obj.project_box().astype(np.float32))
        np.testing.assert_array_equal(labels.occluded, [o.occluded for o in source])
        np.testing.assert_array_equal(labels.bbox, [o.bbox for o in source])


def test_points_are_in_the_project_frame(prepared: Path, kitti_readonly: KittiFixture):
    split = PreparedSplit(prepared)
    for index, frame_id in enumerate(split.frame_ids):
        spec = kitti_readonly.frames["training", frame_id]
        points = split.read_points(index)
        assert points.dtype == np.float32 and points.shape == spec.points_velo.shape
        expected = spec.calib.velo_to_project(spec.points_velo[:, :3]).astype(np.float32)
        np.testing.assert_array_equal(points[:, :3], expected)
        np.testing.assert_array_equal(points[:, 3], spec.points_velo[:, 3])
    # and they sit where the fixture placed them: CAR_POINTS inside the Car
    frame = split[0]
    assert points_in_boxes(frame.points, frame.labels.boxes[:1]).sum() == CAR_POINTS


def test_depth_rows_reproject_to_the_right_pixels(prepared: Path, kitti_readonly: KittiFixture):
    split = PreparedSplit(prepared)
    for index, frame_id in enumerate(split.frame_ids):
        spec = kitti_readonly.frames["training", frame_id]
        height, width = spec.image_hw
        P2 = spec.calib.P2
        project = spec.calib.velo_to_project(spec.points_velo[:, :3])
        rect = project_to_rect(project)
        hom = rect @ P2[:, :3].T + P2[:, 3]
        d = hom[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = hom[:, 0] / d, hom[:, 1] / d
        inside = (d > 0) & (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)
        depth = split.read_depth(index)
        assert depth.dtype == np.float32 and depth.shape == (inside.sum(), 3)
        assert 0 < len(depth) < len(project)  # points behind and beside the camera are dropped
        np.testing.assert_allclose(depth[:, 0], u[inside], atol=1e-3)
        np.testing.assert_allclose(depth[:, 1], v[inside], atol=1e-3)
        np.testing.assert_allclose(depth[:, 2], d[inside], rtol=1e-6, atol=1e-6)
        cols, rows = np.floor(depth[:, 0] + 0.5), np.floor(depth[:, 1] + 0.5)
        assert cols.min() >= 0 and cols.max() <= width - 1 and rows.min() >= 0 and rows.max() <= height - 1
        np.testing.assert_array_equal(cols, np.floor(u[inside] + 0.5))
        back = spec.calib.image_to_project(depth[:, :2], depth[:, 2], camera=2)
        np.testing.assert_allclose(back, project[inside], atol=2e-3)


def test_depth_rows_keep_points_whose_pixel_is_in_the_image(kitti_readonly: KittiFixture):
    calib = kitti_readonly.frames["training", "000000"].calib
    height, width = 375, 1242
    uv = np.array(
        [
            [-0.6, 100],
            [-0.4, 100],
            [width - 0.6, 100],
            [width - 0.4, 100],
            [600, -0.6],
            [600, -0.4],
            [600, height - 0.6],
            [600, height - 0.4],
            [600, 100],
        ]
    )
    depth = np.array([10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, -5.0])
    points = calib.image_to_project(uv, depth, camera=2)
    rows = prepared_module.depth_rows(points, calib, (height, width))
    np.testing.assert_allclose(rows[:, :2], uv[[1, 2, 5, 6]], atol=1e-3)
    np.testing.assert_allclose(rows[:, 2], 10.0, rtol=1e-6, atol=1e-6)


def test_item_has_everything(prepared: Path):
    split = PreparedSplit(prepared)
    frame = split[-1]
    assert isinstance(frame, PreparedFrame) and frame.index == 1 and frame.frame_id == "000001"
    assert frame.image_2.shape == (370, 1224, 3) and frame.image_3.shape == (370, 1224, 3)
    assert frame.calib.P2[0, 0] == 707.0493
    np.testing.assert_array_equal(frame.depth, split.read_depth(1))
    with pytest.raises(IndexError):
        split[2]


def test_testing_split_has_no_labels(kitti_readonly: KittiFixture, tmp_path):
    out = tmp_path / "test.h5"
    prepare_split(kitti_readonly.root, kitti_readonly.split_file("test"), out, progress=False)
    split = PreparedSplit(out)
    assert split.attrs["subset"] == "testing" and split.attrs["has_labels"] is False
    frame = split[0]
    assert frame.labels.types.shape == (0,) and frame.labels.boxes.shape == (0, 7)
    assert len(frame.points) == len(kitti_readonly.frames["testing", "000000"].points_velo)


def test_reader_errors(tmp_path, prepared: Path):
    with pytest.raises(InputError, match="prepared split is missing"):
        PreparedSplit(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a readable HDF5 file"):
        PreparedSplit(tmp_path / "junk.h5")
    old = tmp_path / "old.h5"
    old.write_bytes(prepared.read_bytes())
    with h5py.File(old, "a") as f:
        f.attrs["schema_version"] = 0
    with pytest.raises(InputError, match="schema_version is 0"):
        PreparedSplit(old)


# ----------------------------------------------------------------------------------------- workers
def _first(batch: list) -> PreparedFrame:
    return batch[0]


def test_dataloader_fork_workers_match_direct_access(prepared: Path):
    split = PreparedSplit(prepared)
    direct = [split[i] for i in range(len(split))]  # the parent has its handle open before the fork
    loader = torch.utils.data.DataLoader(
        split, batch_size=1, num_workers=2, multiprocessing_context="fork", collate_fn=_first
    )
    for _ in range(2):  # two epochs: workers fork twice, the parent keeps reading in between
        loaded = list(loader)
        assert [f.frame_id for f in loaded] == split.frame_ids
        for a, b in zip(direct, loaded, strict=True):
            for name in ("image_2", "image_3", "points", "depth"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
            np.testing.assert_array_equal(a.labels.boxes, b.labels.boxes)
            np.testing.assert_array_equal(a.calib.P3, b.calib.P3)
        np.testing.assert_array_equal(split.read_points(1), direct[1].points)


def test_pickles_without_its_handle(prepared: Path):
    split = PreparedSplit(prepared)
    split.read_image(0)
    assert split._file is not None
    clone = pickle.loads(pickle.dumps(split))
    assert clone._file is None
    np.testing.assert_array_equal(clone.read_image(1, camera=3), split.read_image(1, camera=3))


# ----------------------------------------------------------------------------------------- atomic write
def _fail_on_second_frame(monkeypatch, out: Path, seen: list) -> None:
    real = prepared_module.depth_rows

    def flaky(*args, **kwargs):
        seen.append((out.exists(), sorted(p.name for p in out.parent.iterdir())))
        if len(seen) == 2:
            raise RuntimeError("simulated crash mid-way")
        return real(*args, **kwargs)

    monkeypatch.setattr(prepared_module, "depth_rows", flaky)


def test_failure_mid_way_leaves_nothing(kitti_readonly: KittiFixture, tmp_path, monkeypatch):
    out = tmp_path / "out" / "train.h5"
    seen: list = []
    _fail_on_second_frame(monkeypatch, out, seen)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_split(kitti_readonly.root, kitti_readonly.split_file("train"), out, progress=False)
    # while writing, only the temp file existed
    assert seen[0][0] is False and len(seen[0][1]) == 1 and seen[0][1][0].startswith(".train.h5.tmp-")
    assert leftovers(out.parent) == []


def test_failure_keeps_an_earlier_file_untouched(
    prepared: Path, kitti_readonly: KittiFixture, tmp_path, monkeypatch
):
    out = tmp_path / "train.h5"
    out.write_bytes(prepared.read_bytes())
    before = out.read_bytes()
    _fail_on_second_frame(monkeypatch, out, [])
    with pytest.raises(RuntimeError):
        prepare_split(kitti_readonly.root, kitti_readonly.split_file("train"), out, progress=False)
    assert leftovers(tmp_path) == ["train.h5"] and out.read_bytes() == before
