"""`stereodistill data check`'s stereo entry: LiDAR-implied disparities against image matching.

Synthetic frames (rendered stereo pairs) must pass; the same frames with swapped images, a right image from
another frame or ``P3``'s baseline off by 25 % must fail.
"""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from stereodistill.data.synth import generate_dataset
from stereodistill.geometry.calibration import Calibration

STEREO_KEYS = ["points", "median_abs_error_px", "share_within_1px", "ok"]


@pytest.fixture(scope="module")
def synthetic_readonly(tmp_path_factory):
    """Two default-preset synthetic frames. Do not modify; use ``synthetic`` for that."""
    root = tmp_path_factory.mktemp("stereo") / "data"
    generate_dataset(root, frames=2, seed=3, val_fraction=0.0, progress=False, workers=1)
    return root


@pytest.fixture()
def synthetic(synthetic_readonly, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_readonly, root)
    return root


def frame_file(root, folder, frame_id):
    ext = ".png" if folder.startswith("image") else ".txt" if folder == "calib" else ".bin"
    return root / "training" / folder / f"{frame_id}{ext}"


def check_json(run_cli, root, tmp_path, *args):
    out = tmp_path / "report.json"
    result = run_cli("data", "check", root, "--json", out, "--no-progress", *args)
    return result, json.loads(out.read_text())


def with_baseline(calib: Calibration, factor: float) -> Calibration:
    """``calib`` with image_3's optical centre moved along x_rect so that the baseline is ``factor`` times as long."""
    P3 = calib.P3.copy()
    centre_x = calib.camera_centre(2)[0] + factor * calib.baseline
    P3[0, 3] = -P3[0, 0] * centre_x + P3[0, 2] * P3[2, 3]  # P = K [I | -C]
    return replace(calib, P3=P3)


def test_synthetic_frames_pass(run_cli, synthetic_readonly, tmp_path):
    result, report = check_json(run_cli, synthetic_readonly, tmp_path)
    assert result.exit_code == 0, result.output
    for frame_id, frame in report["frames"].items():
        stereo = frame["stereo"]
        assert list(stereo) == STEREO_KEYS
        assert stereo["points"] == 500, frame_id  # capped; the frames have thousands of usable points
        # measured 0.43 / 0.45 px and 0.74 / 0.77 (seed 3); thresholds 1.5 px and 0.35
        assert stereo["median_abs_error_px"] < 0.8, frame_id
        assert stereo["share_within_1px"] > 0.6, frame_id
        assert stereo["ok"] is True
    summary = report["summary"]
    assert summary["frames_with_stereo_mismatch"] == [] and summary["frames_without_stereo_check"] == []
    assert summary["stereo_thresholds"] == {
        "min_points": 20,
        "max_median_abs_error_px": 1.5,
        "min_share_within_1px": 0.35,
    }
    lines = result.stdout.splitlines()
    assert "frames without a stereo check (image_3, velodyne or calib unusable): 0" in lines
    assert any(
        line.startswith("frames whose stereo pair disagrees") and line.endswith(": 0") for line in lines
    )


def assert_mismatch(run_cli, root, tmp_path):
    result, report = check_json(run_cli, root, tmp_path)
    assert result.exit_code == 0  # reported, not a failure (like low IoUs)
    broken, healthy = report["frames"]["000000"]["stereo"], report["frames"]["000001"]["stereo"]
    assert broken["ok"] is False and healthy["ok"] is True
    assert broken["points"] >= 20
    assert broken["median_abs_error_px"] > 3.0  # measured 3.6 px and more
    assert broken["share_within_1px"] < 0.15  # measured 0.08 and less
    assert report["summary"]["frames_with_stereo_mismatch"] == ["000000"]
    assert any(
        line.startswith("frames whose stereo pair disagrees") and line.endswith(": 1 (000000)")
        for line in result.stdout.splitlines()
    )


def test_swapped_images_fail(run_cli, synthetic, tmp_path):
    left, right = frame_file(synthetic, "image_2", "000000"), frame_file(synthetic, "image_3", "000000")
    swap = left.with_suffix(".tmp")
    left.rename(swap)
    right.rename(left)
    swap.rename(right)
    assert_mismatch(run_cli, synthetic, tmp_path)


@pytest.mark.parametrize("factor", [1.25, 0.75])
def test_baseline_off_by_25_percent_fails(run_cli, synthetic, tmp_path, factor):
    path = frame_file(synthetic, "calib", "000000")
    calib = Calibration.from_file(path)
    wrong = with_baseline(calib, factor)
    np.testing.assert_allclose(wrong.baseline / calib.baseline, factor, rtol=1e-9)
    np.testing.assert_array_equal(wrong.P2, calib.P2)
    path.write_text(wrong.to_text())
    assert_mismatch(run_cli, synthetic, tmp_path)


def test_right_image_from_another_frame_fails(run_cli, synthetic, tmp_path):
    shutil.copyfile(frame_file(synthetic, "image_3", "000001"), frame_file(synthetic, "image_3", "000000"))
    assert_mismatch(run_cli, synthetic, tmp_path)


@pytest.mark.parametrize("folder", ["image_3", "velodyne", "calib"])
def test_frame_without_image_3_velodyne_or_calib_has_no_stereo_entry(run_cli, synthetic, tmp_path, folder):
    frame_file(synthetic, folder, "000001").unlink()
    result, report = check_json(run_cli, synthetic, tmp_path)
    assert result.exit_code == 1  # a missing file
    assert report["frames"]["000001"]["stereo"] is None
    assert report["frames"]["000000"]["stereo"]["ok"] is True
    assert report["summary"]["frames_without_stereo_check"] == ["000001"]
    assert report["summary"]["frames_with_stereo_mismatch"] == []
    assert "frames without a stereo check (image_3, velodyne or calib unusable): 1 (000001)" in (
        result.stdout.splitlines()
    )


def test_json_layout(run_cli, synthetic_readonly, tmp_path):
    _, report = check_json(run_cli, synthetic_readonly, tmp_path, "--frames", "000000")
    frame = report["frames"]["000000"]
    assert list(frame) == ["missing", "corrupt", "objects", "stereo"]
    stereo = frame["stereo"]
    assert list(stereo) == STEREO_KEYS
    assert isinstance(stereo["points"], int) and isinstance(stereo["ok"], bool)
    assert isinstance(stereo["median_abs_error_px"], float) and isinstance(stereo["share_within_1px"], float)
    assert 0.0 <= stereo["share_within_1px"] <= 1.0
    assert list(report["summary"])[-3:] == [
        "frames_without_stereo_check",
        "frames_with_stereo_mismatch",
        "stereo_thresholds",
    ]


@pytest.mark.slow
def test_kitti_preset_frame_passes_and_its_perturbations_fail(run_cli, tmp_path):
    root = tmp_path / "kitti"
    generate_dataset(root, frames=2, seed=3, preset="kitti", val_fraction=0.0, progress=False, workers=1)
    _, report = check_json(run_cli, root, tmp_path)
    for frame in report["frames"].values():
        assert frame["stereo"]["ok"] is True  # measured median 0.63 / 0.71 px, share 0.66 / 0.63
        assert frame["stereo"]["median_abs_error_px"] < 1.0 and frame["stereo"]["share_within_1px"] > 0.5
    path = frame_file(root, "calib", "000000")
    path.write_text(with_baseline(Calibration.from_file(path), 1.25).to_text())
    assert_mismatch(run_cli, root, tmp_path)
