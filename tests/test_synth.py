"""The synthetic KITTI-layout benchmark: layout and formats, determinism, and geometric consistency of
images, LiDAR, calibration and labels."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from stereodistill.data.labels import read_label_file
from stereodistill.data.synth import (
    DEFAULT_PRESET_NAME,
    generate_dataset,
    generate_frame,
    lidar_profile_by_name,
    preset_by_name,
)
from stereodistill.data.synth.annotate import dont_care, occlusion_level, truncation
from stereodistill.data.synth.camera import CAMERA_HEIGHT, camera_centre
from stereodistill.data.synth.frame import frame_seed
from stereodistill.data.synth.lidar import Scan, scan
from stereodistill.data.synth.sensors import IDEAL, LidarProfile
from stereodistill.data.synth.writer import split_ids
from stereodistill.errors import InputError
from stereodistill.geometry.boxes import (
    boxes_to_image_2d,
    points_in_boxes,
    project_to_kitti_boxes,
    wrap_angle,
)
from stereodistill.geometry.calibration import Calibration

SEED = 0
FRAMES = 3
PRESET = preset_by_name(DEFAULT_PRESET_NAME)
IDS = [f"{i:06d}" for i in range(FRAMES)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "synthetic"
    generate_dataset(
        out, frames=FRAMES, seed=SEED, val_fraction=0.5, progress=False, workers=1, lidar="ideal"
    )
    return out


@pytest.fixture(scope="module")
def frames() -> list:
    """The same frames in memory (with the generator's internals: scene, per-point owners), ideal LiDAR: the
    geometry tests below need its exact returns."""
    return [generate_frame(PRESET, SEED, i, IDEAL) for i in range(FRAMES)]


def _points(root: Path, frame_id: str) -> np.ndarray:
    return np.fromfile(root / "training" / "velodyne" / f"{frame_id}.bin", dtype="<f4").reshape(-1, 4)


def _calib(root: Path, frame_id: str) -> Calibration:
    return Calibration.from_file(root / "training" / "calib" / f"{frame_id}.txt")


def _labels(root: Path, frame_id: str):
    return read_label_file(root / "training" / "label_2" / f"{frame_id}.txt")


# ------------------------------------------------------------------------------------------- layout, formats
def test_layout_and_file_formats(root: Path) -> None:
    training = root / "training"
    assert sorted(p.name for p in training.iterdir()) == [
        "calib",
        "image_2",
        "image_3",
        "label_2",
        "velodyne",
    ]
    for frame_id in IDS:
        for camera in ("image_2", "image_3"):
            with Image.open(training / camera / f"{frame_id}.png") as image:
                assert image.format == "PNG" and image.mode == "RGB"
                assert image.size == (PRESET.image_width, PRESET.image_height)
        size = (training / "velodyne" / f"{frame_id}.bin").stat().st_size
        assert size % 16 == 0 and size // 16 > 10_000
        points = _points(root, frame_id)
        assert np.all(np.isfinite(points)) and points[:, 3].min() >= 0.0 and points[:, 3].max() <= 1.0
        calib = _calib(root, frame_id)
        assert calib.Tr_imu_to_velo is not None
        labels = _labels(root, frame_id)
        assert 5 <= sum(obj.type != "DontCare" for obj in labels) <= 25
    train = (root / "ImageSets" / "train.txt").read_text().split()
    val = (root / "ImageSets" / "val.txt").read_text().split()
    assert sorted(train + val) == IDS and not set(train) & set(val) and len(val) == 2  # round(3 * 0.5) = 2


def test_files_equal_in_memory_frames(root: Path, frames: list) -> None:
    for frame_id, frame in zip(IDS, frames, strict=True):
        assert np.array_equal(
            np.asarray(Image.open(root / "training" / "image_2" / f"{frame_id}.png")), frame.left
        )
        assert np.array_equal(
            np.asarray(Image.open(root / "training" / "image_3" / f"{frame_id}.png")), frame.right
        )
        assert np.array_equal(_points(root, frame_id), frame.scan.points)


def test_same_seed_same_bytes_and_frames_are_independent(root: Path, tmp_path: Path) -> None:
    # Two frames instead of three, two processes instead of one: frames 0 and 1 must not change.
    again = tmp_path / "again"
    generate_dataset(again, frames=2, seed=SEED, progress=False, workers=2, lidar="ideal")
    for sub in ("image_2", "image_3", "velodyne", "calib", "label_2"):
        for path in sorted((again / "training" / sub).iterdir()):
            assert path.read_bytes() == (root / "training" / sub / path.name).read_bytes(), path
    other = tmp_path / "other"
    generate_dataset(other, frames=1, seed=SEED + 1, progress=False, workers=1)
    for sub, name in (("image_2", "000000.png"), ("velodyne", "000000.bin"), ("label_2", "000000.txt")):
        assert (other / "training" / sub / name).read_bytes() != (root / "training" / sub / name).read_bytes()


def test_extra_val_frames_grow_val_and_keep_train(root: Path, tmp_path: Path) -> None:
    # The module's dataset plus two extra val frames: train keeps its frames, val gains frames 3 and 4, and
    # every one of the first three frames is byte-identical.
    grown = tmp_path / "grown"
    generate_dataset(
        grown,
        frames=FRAMES,
        seed=SEED,
        val_fraction=0.5,
        progress=False,
        workers=2,
        lidar="ideal",
        extra_val_frames=2,
    )
    sets = {
        name: (
            (folder / "ImageSets" / "train.txt").read_text(),
            (folder / "ImageSets" / "val.txt").read_text(),
        )
        for name, folder in (("root", root), ("grown", grown))
    }
    assert sets["grown"][0] == sets["root"][0]
    assert sets["grown"][1].split() == sets["root"][1].split() + ["000003", "000004"]
    for sub in ("image_2", "image_3", "velodyne", "calib", "label_2"):
        for path in sorted((root / "training" / sub).iterdir()):
            assert path.read_bytes() == (grown / "training" / sub / path.name).read_bytes(), path
        assert len(list((grown / "training" / sub).iterdir())) == FRAMES + 2
    with pytest.raises(InputError, match="extra_val_frames must be a non-negative integer"):
        generate_dataset(tmp_path / "x", frames=1, seed=0, extra_val_frames=-1, progress=False)


def test_split_is_deterministic_and_complete() -> None:
    train, val = split_ids(10, 0.5, seed=3)
    assert (train, val) == split_ids(10, 0.5, seed=3)
    assert len(val) == 5 and sorted(train + val) == list(range(10))
    assert split_ids(10, 0.5, seed=4) != (train, val)
    assert split_ids(2, 0.5, seed=0)[1] and split_ids(2, 0.5, seed=0)[0]
    assert split_ids(2, 0.01, seed=0)[1] != []  # a non-zero fraction keeps one val frame
    assert split_ids(4, 0.0, seed=0) == ([0, 1, 2, 3], [])
    assert split_ids(4, 1.0, seed=0) == ([], [0, 1, 2, 3])


# ------------------------------------------------------------------------------------------- calibration
def test_calibration_is_kitti_like(root: Path) -> None:
    calib = _calib(root, IDS[0])
    assert calib.focal_length == PRESET.focal
    assert calib.P2[0, 3] == pytest.approx(PRESET.focal * 0.06 + PRESET.cu * 0.0027)
    assert calib.baseline == pytest.approx(0.5331, abs=1e-4)
    # R0_rect: a rotation, but not the identity, and below half a degree
    angle = math.degrees(math.acos((np.trace(calib.R0_rect) - 1) / 2))
    np.testing.assert_allclose(calib.R0_rect @ calib.R0_rect.T, np.eye(3), atol=1e-12)
    assert 0.0 < angle < 0.5
    # Velodyne origin about 0.27 m behind and 0.08 m above camera 0
    velo = calib.velo_to_project(np.zeros((1, 3)))[0]
    np.testing.assert_allclose(velo, [-0.272, 0.004, 0.076], atol=0.012)
    # A linear solve: its zero comes back as +-1e-20 or so, depending on the LAPACK build (atol, not rtol).
    np.testing.assert_allclose(camera_centre(calib, 2), [-0.0027, 0.06, 0.0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(camera_centre(calib, 3), [-0.0027, -0.4731, 0.0], rtol=0, atol=1e-9)


def test_object_centre_disparity_is_f_b_over_depth(root: Path) -> None:
    calib = _calib(root, IDS[0])
    boxes = np.array([obj.project_box() for obj in _labels(root, IDS[0]) if obj.type != "DontCare"])
    uv2, depth2 = calib.project_to_image(boxes[:, :3], camera=2)
    uv3, depth3 = calib.project_to_image(boxes[:, :3], camera=3)
    np.testing.assert_allclose(depth2, depth3, atol=1e-9)
    np.testing.assert_allclose(uv2[:, 1], uv3[:, 1], atol=1e-9)
    np.testing.assert_allclose(
        uv2[:, 0] - uv3[:, 0], calib.focal_length * calib.baseline / depth2, rtol=1e-9, atol=1e-9
    )


def test_rendered_road_has_the_disparity_of_the_ground_plane(root: Path) -> None:
    """Matching image_3 to image_2 along the road rows is best at the ground's disparity ``b (v - cv) / h``."""
    calib = _calib(root, IDS[0])
    left = np.asarray(Image.open(root / "training" / "image_2" / "000000.png"), dtype=np.float64).mean(-1)
    right = np.asarray(Image.open(root / "training" / "image_3" / "000000.png"), dtype=np.float64).mean(-1)
    cols = np.arange(left.shape[1], dtype=np.float64)
    offsets = np.arange(-4, 5)
    cost = np.zeros(len(offsets))
    for v in range(int(PRESET.cv) + 40, PRESET.image_height):
        disparity = calib.baseline * (v - calib.P2[1, 2]) / CAMERA_HEIGHT
        start = int(disparity) + 6
        for i, offset in enumerate(offsets):
            warped = np.interp(cols[start:] - disparity - offset, cols, right[v])
            cost[i] += np.median(np.abs(left[v, start:] - warped))  # median: cars on the road are outliers
    assert int(np.argmin(cost)) == 4, cost
    assert min(cost[0], cost[-1]) > 1.2 * cost[4], cost


# ------------------------------------------------------------------------------------------- LiDAR
def test_lidar_points_lie_in_their_objects_boxes(root: Path, frames: list) -> None:
    near_counts = []
    for frame_id, frame in zip(IDS, frames, strict=True):
        calib = _calib(root, frame_id)
        points = calib.velo_to_project(_points(root, frame_id)[:, :3].astype(np.float64))
        for obj in _labels(root, frame_id):
            if obj.type == "DontCare":
                continue
            inside = int(points_in_boxes(points, obj.project_box()[None])[0].sum())
            if obj.location[2] < 20.0 and obj.occluded == 0 and obj.truncated < 0.3:
                near_counts.append(inside)
        # every return from an object is within 10 cm (range noise) of that object's box
        owner = frame.scan.owner
        for index, scene_obj in enumerate(frame.scene.objects):
            own = points[owner == index]
            grown = scene_obj.box.copy()
            grown[3:6] += 0.2
            assert points_in_boxes(own, grown[None])[0].all()
    assert len(near_counts) >= 3
    assert np.mean(np.array(near_counts) > 10) >= 0.9, near_counts


def test_lidar_ground_points_are_at_ground_height(root: Path, frames: list) -> None:
    for frame_id, frame in zip(IDS, frames, strict=True):
        points = _calib(root, frame_id).velo_to_project(_points(root, frame_id)[:, :3].astype(np.float64))
        ground = points[frame.scan.owner == -2]
        assert len(ground) > 0.3 * len(points)
        offset = ground[:, 2] + CAMERA_HEIGHT
        # 2 cm range noise along rays that meet the ground at a slant: a few cm at most
        assert np.median(np.abs(offset)) < 0.01 and np.abs(offset).max() < 0.1
        # points far from the ground are not ground: nothing scenery-free floats below it
        assert points[:, 2].min() > -CAMERA_HEIGHT - 0.1


# ------------------------------------------------------------------------------------------- LiDAR profiles
# sha256 of frame 0's float32 points (seed 0, default preset) from the scanner before sensor profiles existed
IDEAL_FRAME0_SHA256 = "de946a0c8713043c692ad36cfc5c89b9028ef75963d50c5e108e2ef964142059"


def _rescan(frame, index: int, profile: LidarProfile) -> Scan:
    """Frame ``index``'s sweep again, by ``profile``, from the frame's own LiDAR stream."""
    lidar_seq = frame_seed(SEED, index).spawn(4)[3]
    prims = frame.scene.primitives()
    return scan(frame.scene, prims, frame.calib, PRESET, np.random.default_rng(lidar_seq), profile)


def test_ideal_profile_scan_is_unchanged(frames: list) -> None:
    assert frames[0].scan.points.shape == (36445, 4)
    assert hashlib.sha256(frames[0].scan.points.tobytes()).hexdigest() == IDEAL_FRAME0_SHA256
    assert lidar_profile_by_name("ideal") == IDEAL


def test_lidar_profile_changes_the_scan_only(frames: list) -> None:
    sparse = generate_frame(PRESET, SEED, 0, lidar_profile_by_name("vlp16"))
    ideal = frames[0]
    assert np.array_equal(sparse.left, ideal.left) and np.array_equal(sparse.right, ideal.right)
    assert sparse.labels == ideal.labels and sparse.label_sources == ideal.label_sources
    assert np.array_equal(sparse.calib.P2, ideal.calib.P2)
    assert len(sparse.scan.points) < 0.5 * len(ideal.scan.points)


def _far_object_points(frame, sweep: Scan) -> int:
    """Returns of ``sweep`` on the frame's labelled objects more than 15 m ahead."""
    far = [
        source
        for label, source in zip(frame.labels, frame.label_sources, strict=True)
        if label.location[2] > 15
    ]
    return int(np.isin(sweep.owner, far).sum())


def test_real_sensor_profiles_see_far_objects_with_fewer_points(frames: list) -> None:
    far = {"ideal": 0, "vlp16": 0, "hdl32": 0}
    for index, frame in enumerate(frames):
        far["ideal"] += _far_object_points(frame, frame.scan)
        for name, beams_below_horizon in (("vlp16", 8), ("hdl32", 24)):
            sweep = _rescan(frame, index, lidar_profile_by_name(name))
            far[name] += _far_object_points(frame, sweep)
            # ground returns come from the beams below the horizon only (2.0 / 1.33 degrees apart)
            ground = sweep.points[sweep.owner == -2]
            elevation = np.degrees(np.arctan2(ground[:, 2], np.hypot(ground[:, 0], ground[:, 1])))
            assert len(np.unique(np.round(elevation, 1))) <= beams_below_horizon
    assert 0 < far["vlp16"] < far["hdl32"] < 0.6 * far["ideal"], far


def test_glass_dropout_removes_only_car_window_returns(frames: list) -> None:
    no_glass = _rescan(frames[0], 0, IDEAL)
    glass = _rescan(frames[0], 0, replace(IDEAL, name="glass", glass_dropout=1.0))
    kept = {tuple(p) for p in glass.points.tolist()}
    assert kept <= {tuple(p) for p in no_glass.points.tolist()}  # same draws, returns on glass lost
    lost = np.array([tuple(p) not in kept for p in no_glass.points.tolist()])
    assert lost.sum() > 20
    cars = {i for i, o in enumerate(frames[0].scene.objects) if o.kind in ("Car", "Van")}
    assert set(no_glass.owner[lost].tolist()) <= cars
    # windows are above the body: lost returns are in the upper part of their car
    boxes = np.array([frames[0].scene.objects[o].box for o in no_glass.owner[lost]])
    z = frames[0].calib.velo_to_project(no_glass.points[lost, :3].astype(np.float64))[:, 2]
    assert np.all(z > boxes[:, 2] - 0.1 * boxes[:, 5])  # above the box's lower part (centre z - 10% h)


def test_dark_paint_returns_less_with_albedo_weight(frames: list) -> None:
    dim = replace(IDEAL, name="dim", albedo_weight=1.0, detection_range=40.0)
    kept: dict[bool, list[float]] = {True: [], False: []}  # dark paint? -> per car, share of returns kept
    for index, frame in enumerate(frames):
        ideal, sparse = frame.scan, _rescan(frame, index, dim)
        for source, obj in enumerate(frame.scene.objects):
            if obj.kind != "Car" or (ideal.owner == source).sum() < 20:
                continue
            paint = frame.scene.materials.items[obj.parts[0].material].colour  # the body box's paint
            luminance = float(np.dot(paint, [0.2126, 0.7152, 0.0722]))
            if luminance < 0.1 or luminance > 0.3:
                share = (sparse.owner == source).sum() / (ideal.owner == source).sum()
                kept[luminance < 0.1].append(float(share))
    assert kept[True] and kept[False], kept
    assert np.mean(kept[True]) < np.mean(kept[False]) - 0.2, kept


# ------------------------------------------------------------------------------------------- labels
def test_label_2d_box_is_the_projected_3d_box(root: Path) -> None:
    for frame_id in IDS:
        calib = _calib(root, frame_id)
        for obj in _labels(root, frame_id):
            if obj.type == "DontCare":
                continue
            projected, valid = boxes_to_image_2d(
                obj.project_box()[None], calib, image_size=(PRESET.image_height, PRESET.image_width)
            )
            assert valid[0]
            np.testing.assert_allclose(projected[0], obj.bbox, atol=0.011)


def test_labels_round_trip_through_the_project_frame(root: Path, frames: list) -> None:
    for frame_id, frame in zip(IDS, frames, strict=True):
        labels = _labels(root, frame_id)
        assert len(labels) == len(frame.label_sources)
        for obj, source in zip(labels, frame.label_sources, strict=True):
            if obj.type == "DontCare":
                continue
            box = obj.project_box()
            truth = frame.scene.objects[source].box
            np.testing.assert_allclose(box[:6], truth[:6], atol=1e-9)
            assert abs(float(wrap_angle(box[6] - truth[6]))) < 1e-9
            location, dims, ry = project_to_kitti_boxes(box[None])
            np.testing.assert_allclose(location[0], obj.location, atol=1e-9)
            np.testing.assert_allclose(dims[0], obj.dimensions, atol=1e-9)
            assert ry[0] == pytest.approx(obj.rotation_y, abs=1e-9)
            assert obj.location[1] == pytest.approx(CAMERA_HEIGHT)  # bottom centre on the ground


def test_label_values_are_in_kitti_ranges(root: Path) -> None:
    sizes = {
        "Car": ((3.5, 4.8), (1.5, 1.9), (1.4, 1.7)),
        "Van": ((4.5, 5.5), (1.8, 2.1), (1.9, 2.4)),
        "Pedestrian": ((0.5, 0.95), (0.45, 0.75), (1.5, 1.95)),
        "Cyclist": ((1.5, 1.95), (0.5, 0.8), (1.55, 1.85)),
    }
    seen = set()
    for frame_id in IDS:
        for obj in _labels(root, frame_id):
            seen.add(obj.type)
            if obj.type == "DontCare":
                assert obj.dimensions == (-1, -1, -1) and obj.location == (-1000, -1000, -1000)
                assert obj.rotation_y == -10 and obj.alpha == -10
                continue
            assert 0.0 <= obj.truncated <= 1.0 and obj.occluded in (0, 1, 2)
            assert 0.0 < obj.location[2] <= PRESET.label_range
            h, w, l = obj.dimensions
            if obj.type in sizes:
                (l0, l1), (w0, w1), (h0, h1) = sizes[obj.type]
                assert l0 <= l <= l1 and w0 <= w <= w1 and h0 <= h <= h1
            x1, y1, x2, y2 = obj.bbox
            assert 0 <= x1 < x2 <= PRESET.image_width - 1 and 0 <= y1 < y2 <= PRESET.image_height - 1
    assert {"Car", "Pedestrian", "Cyclist", "DontCare"} <= seen


def test_dont_care_line_matches_kitti() -> None:
    line = dont_care(np.array([503.89, 169.71, 590.61, 190.13])).to_line()
    assert (
        line
        == "DontCare -1.00 -1 -10.00 503.89 169.71 590.61 190.13 -1.00 -1.00 -1.00 -1000.00 -1000.00 -1000.00 -10.00"
    )


def test_occlusion_levels() -> None:
    assert occlusion_level(100, 100) == 0
    assert occlusion_level(80, 100) == 0
    assert occlusion_level(79, 100) == 1
    assert occlusion_level(40, 100) == 1
    assert occlusion_level(39, 100) == 2
    assert occlusion_level(0, 0) == 2


def test_truncation_is_the_share_of_the_2d_box_outside_the_image(root: Path) -> None:
    calib = _calib(root, IDS[0])
    size = (PRESET.image_height, PRESET.image_width)
    inside = np.array([15.0, 0.0, -0.85, 4.0, 1.7, 1.6, 0.0])
    assert truncation(inside, calib, size) == 0.0
    # a car whose projected 2D box straddles the left image edge: compare with the area share by hand
    car = np.array([6.0, 5.5, -0.85, 4.0, 1.7, 1.6, 0.0])
    full, _ = boxes_to_image_2d(car[None], calib)
    x1, y1, x2, y2 = full[0]
    assert x1 < 0 < x2
    expected = 1.0 - (x2 - 0.0) * (min(y2, size[0] - 1) - max(y1, 0)) / ((x2 - x1) * (y2 - y1))
    assert truncation(car, calib, size) == pytest.approx(expected)
    assert 0.1 < expected < 0.9


# ------------------------------------------------------------------------------------------- API and CLI
def test_bad_arguments_are_clear_errors(tmp_path: Path, root: Path) -> None:
    with pytest.raises(InputError, match="unknown synthetic preset 'huge'"):
        generate_dataset(tmp_path / "x", frames=1, seed=0, preset="huge", progress=False)
    with pytest.raises(InputError, match="unknown LiDAR profile 'hdl9' for data.synth.lidar"):
        generate_dataset(tmp_path / "x", frames=1, seed=0, lidar="hdl9", progress=False)
    with pytest.raises(InputError, match="frames must be a positive integer"):
        generate_dataset(tmp_path / "x", frames=0, seed=0, progress=False)
    with pytest.raises(InputError, match="val_fraction"):
        generate_dataset(tmp_path / "x", frames=1, seed=0, val_fraction=1.5, progress=False)
    with pytest.raises(InputError, match="not empty") as err:
        generate_dataset(root, frames=1, seed=0, progress=False)
    assert err.value.path == root
    assert not (tmp_path / "x").exists()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_cli_writes_layout_and_refuses_to_overwrite(tmp_path: Path) -> None:
    from stereodistill.cli import main
    from stereodistill.cli.synth import synth

    if "synth" not in main.commands:
        main.add_command(synth)
    out = tmp_path / "data"
    args = ["synth", "--out", str(out), "--frames", "1", "--seed", "5", "--workers", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "wrote 1 default frames (hdl32 LiDAR)" in result.output  # params.yaml's default sensor
    bad_lidar = CliRunner().invoke(main, [*args[:-2], "--lidar", "hdl9"])
    assert bad_lidar.exit_code == 2 and "'hdl9' is not one of 'ideal', 'vlp16', 'hdl32'" in bad_lidar.output
    for sub, name in (("image_2", "000000.png"), ("image_3", "000000.png"), ("velodyne", "000000.bin")):
        assert (out / "training" / sub / name).is_file()
    assert (out / "ImageSets" / "train.txt").read_text() == "000000\n"
    marker = out / "marker"
    marker.write_text("keep me")
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1
    assert "not empty" in refused.output and "--overwrite" in refused.output
    assert marker.exists()
    replaced = CliRunner().invoke(main, [*args, "--overwrite", "--extra-val-frames", "1"])
    assert replaced.exit_code == 0, replaced.output
    assert "wrote 2 default frames" in replaced.output
    assert not marker.exists() and (out / "training" / "label_2" / "000001.txt").is_file()
    assert (out / "ImageSets" / "train.txt").read_text() == "000000\n"
    assert (out / "ImageSets" / "val.txt").read_text() == "000001\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
