"""Bad input, end to end through the CLI: every refusal names the file / frame / field, exits non-zero, and leaves
nothing behind at the output path it was given.

Promises (numbers as in the reliability brief): 1 missing frame files, 2 truncated point clouds, 3 NaN/inf points,
4 broken calibration, 5 broken label lines (lower-case class names included), 6 stereo pairs of different sizes, 7 empty frames are valid (through the teacher and the cache too), 8 split
lists naming frames that do not exist, 9 teachers of another grid, 10 caches of another teacher/grid/split/views
and damaged caches, 11 params files with unknown keys or wrong types.
"""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr
from click.testing import Result
from kitti_fixtures import KittiFixture, _image
from PIL import Image
from student_fixtures import NO_PRETRAINING, TINY_STUDENT_MODEL, TINY_STUDENT_TRAIN

from stereodistill.data.prepared import PreparedSplit
from stereodistill.distill.settings import DistillSettings
from stereodistill.params import Params, load_params, read_params_yaml
from stereodistill.settings import load_settings, to_dict
from stereodistill.student.settings import StudentSettings
from stereodistill.teacher.settings import TeacherSettings

REPO = Path(__file__).resolve().parents[2]


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def assert_refused(result: Result, *names: object) -> None:
    """Non-zero exit, one ``error:`` line on stderr naming every one of ``names``."""
    assert result.exit_code != 0, result.output
    assert result.stderr.startswith("error: "), result.stderr
    for name in names:
        assert str(name) in result.stderr, f"{name!r} not in {result.stderr!r}"


# ============================================================================================== prepare
def run_prepare(
    run_cli: Callable[..., Result], kitti: KittiFixture, out: Path, split: str = "train"
) -> Result:
    return run_cli(
        "prepare",
        "--root",
        kitti.root,
        "--split-file",
        kitti.split_file(split),
        "--out",
        out,
        "--no-progress",
    )


def assert_prepare_refused(result: Result, out: Path, *names: object) -> None:
    assert_refused(result, *names)
    assert not out.exists()
    assert files_under(out.parent) == []  # no temp file left either


@pytest.mark.parametrize("folder", ["image_3", "velodyne", "calib", "label_2"])
def test_1_missing_file_of_a_frame_names_it(run_cli, kitti: KittiFixture, tmp_path, folder):
    missing = kitti.path("training", folder, "000001")
    missing.unlink()
    out = tmp_path / "prepared" / "train.h5"
    assert_prepare_refused(run_prepare(run_cli, kitti, out), out, missing, "frame 000001", "missing")


def test_2_truncated_point_cloud_names_the_file(run_cli, kitti: KittiFixture, tmp_path):
    # An empty .bin is a valid frame without points (test_7); a size that is not whole points is an error.
    velodyne = kitti.path("training", "velodyne", "000001")
    velodyne.write_bytes(velodyne.read_bytes()[:-5])
    out = tmp_path / "prepared" / "train.h5"
    assert_prepare_refused(run_prepare(run_cli, kitti, out), out, velodyne, "not a multiple of 16")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_3_nan_or_inf_point_names_file_and_point(run_cli, kitti: KittiFixture, tmp_path, bad):
    velodyne = kitti.path("training", "velodyne", "000000")
    points = np.fromfile(velodyne, dtype="<f4").reshape(-1, 4)
    points[7, 1] = bad
    points.tofile(velodyne)
    out = tmp_path / "prepared" / "train.h5"
    assert_prepare_refused(run_prepare(run_cli, kitti, out), out, velodyne, "point 7 (0-based)", "NaN or inf")


def _drop_line(text: str, key: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith(key + ":"))


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda text: _drop_line(text, "P3"), "missing P3"),
        (
            lambda text: _drop_line(text, "R0_rect") + "R0_rect:" + " 0" * 9 + "\n",
            "R0_rect is not invertible",
        ),
        (
            lambda text: (
                _drop_line(text, "R0_rect") + "R0_rect: 1 0 0 0 1 0 1 0 0\n"
            ),  # rank 2: rows 1 and 3 equal
            "R0_rect is not invertible",
        ),
    ],
    ids=["no P3", "zero R0_rect", "rank-2 R0_rect"],
)
def test_4_broken_calibration_names_file_and_field(run_cli, kitti: KittiFixture, tmp_path, damage, field):
    calib = kitti.path("training", "calib", "000001")
    calib.write_text(damage(calib.read_text()))
    out = tmp_path / "prepared" / "train.h5"
    assert_prepare_refused(run_prepare(run_cli, kitti, out), out, calib, field)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Car 0.00 0 -1.62 584.73 151.98 692.46 277.05 2.20 1.90 5.10 0.50 1.70 15.00", "found 14"),
        (
            "Bus 0.00 0 -1.62 584.73 151.98 692.46 277.05 2.20 1.90 5.10 0.50 1.70 15.00 -1.59",
            "unknown class 'Bus'",
        ),
        (
            "car 0.00 0 -1.62 584.73 151.98 692.46 277.05 2.20 1.90 5.10 0.50 1.70 15.00 -1.59",
            "class 'car' must be spelt 'Car': KITTI class names are case-sensitive",
        ),
        (
            "Car 0.00 0 -1.62 584.73 151.98 692.46 277.05 2.20 -1.90 5.10 0.50 1.70 15.00 -1.59",
            "negative size",
        ),
    ],
    ids=["14 fields", "unknown class", "lower-case class", "negative size"],
)
def test_5_broken_label_line_names_file_and_line(run_cli, kitti: KittiFixture, tmp_path, line, message):
    label = kitti.path("training", "label_2", "000001")
    lines = label.read_text().splitlines()
    lines[1] = line
    label.write_text("\n".join(lines) + "\n")
    out = tmp_path / "prepared" / "train.h5"
    assert_prepare_refused(run_prepare(run_cli, kitti, out), out, f"{label}:2:", message)


def test_6_stereo_pair_of_different_sizes_names_both_files(run_cli, kitti: KittiFixture, tmp_path):
    left, right = kitti.path("training", "image_2", "000000"), kitti.path("training", "image_3", "000000")
    Image.fromarray(_image((375, 1240), 7)).save(right, compress_level=1)
    out = tmp_path / "prepared" / "train.h5"
    assert_prepare_refused(run_prepare(run_cli, kitti, out), out, left, right, "different sizes")


@pytest.mark.parametrize("empty", ["points", "objects", "points and objects"])
def test_7_empty_frame_is_valid_and_prepared(run_cli, kitti: KittiFixture, tmp_path, empty):
    if "points" in empty:
        kitti.path("training", "velodyne", "000001").write_bytes(b"")
    if "objects" in empty:
        kitti.path("training", "label_2", "000001").write_text("")
    out = tmp_path / "prepared" / "train.h5"
    result = run_prepare(run_cli, kitti, out)
    assert result.exit_code == 0, result.output
    split = PreparedSplit(out)
    assert split.frame_ids == ["000000", "000001"]
    assert (len(split.read_points(1)) == 0) == ("points" in empty)
    assert len(split.read_depth(1)) == 0 or "points" not in empty
    assert (len(split.labels(1).types) == 0) == ("objects" in empty)
    assert len(split.read_points(0)) > 0 and len(split.labels(0).types) == 3  # the other frame is untouched
    check = run_cli("data", "check", kitti.root, "--frames", "000001", "--json", tmp_path / "check.json")
    assert check.exit_code == 0, check.output


def test_7_frame_without_points_runs_through_teacher_predict_and_the_cache(
    teacher_cache_setup, tmp_path, monkeypatch
):
    """An empty cloud never reaches spconv's PointToVoxel (its CUDA kernel refuses a zero-size launch), and the
    frame still gets a full answer: detections written and a complete cache entry. Checked on CPU by refusing
    empty clouds in the generator, as CUDA would."""
    import torch

    from stereodistill.cache.reader import TeacherCache
    from stereodistill.cache.run import cache_teacher_from_params
    from stereodistill.head.settings import DecodeSettings
    from stereodistill.params import parse_params
    from stereodistill.teacher.checkpoint import load_teacher
    from stereodistill.teacher.predict import predict_to_kitti
    from stereodistill.teacher.voxelize import Voxelizer

    read_points = PreparedSplit.read_points
    monkeypatch.setattr(
        PreparedSplit, "read_points", lambda self, i: read_points(self, i)[: 0 if i == 1 else None]
    )
    generator = Voxelizer._generator

    def cuda_like(self, device):
        def run(points):
            assert points.shape[0] > 0, "an empty cloud reached PointToVoxel"
            return generator(self, device)(points)

        return run

    monkeypatch.setattr(Voxelizer, "_generator", cuda_like)
    setup = teacher_cache_setup
    split = PreparedSplit(setup["split"])
    assert len(split.read_points(1)) == 0 and len(split.read_points(0)) > 0
    model = load_teacher(Path(setup["params"]["teacher"]["out_dir"]) / "teacher.pt", "cpu", setup["grid"])
    results = predict_to_kitti(model, split, DecodeSettings(), tmp_path / "pred", progress=False)
    assert list(results) == split.frame_ids and (tmp_path / "pred" / f"{split.frame_ids[1]}.txt").exists()
    params = read_params_yaml(Path(setup["params_path"]).read_text())
    params["cache"]["store"] = str(tmp_path / "cache.zarr")
    cache_teacher_from_params(parse_params(params, setup["params_path"]), progress=False)
    cache = TeacherCache(tmp_path / "cache.zarr")
    for view in ("identity", "hflip"):
        cached = cache.read(split.frame_ids[1], view)
        assert cached.cls_logits.shape == (setup["grid"].num_anchors, setup["grid"].num_classes)
        assert bool(torch.isfinite(cached.cls_logits).all())


def test_8_split_listing_a_frame_that_does_not_exist_names_split_file_and_frame(
    run_cli, kitti: KittiFixture, tmp_path
):
    split = kitti.split_file("train")
    split.write_text("000000\n\n000009\n000001\n")
    out = tmp_path / "prepared" / "train.h5"
    assert_prepare_refused(
        run_prepare(run_cli, kitti, out), out, f"{split}:3:", "frame 000009", "does not exist"
    )
    report = tmp_path / "report" / "check.json"
    result = run_cli("data", "check", kitti.root, "--split-file", split, "--json", report)
    assert_refused(result, f"{split}:3:", "frame 000009")
    assert not report.parent.exists()


# ============================================================================================== teacher and cache
def _params(setup: dict, tmp_path: Path, **sections: dict) -> Path:
    """The teacher-cache fixture's params with every output under ``tmp_path/out``, sections updated."""
    params = read_params_yaml(Path(setup["params_path"]).read_text())
    out = tmp_path / "out"
    params["cache"]["store"] = str(out / "cache.zarr")
    params["evaluate"].update(
        split="train",
        teacher_predictions=str(out / "teacher_pred"),
        teacher_metrics=str(out / "teacher.json"),
        student_predictions=str(out / "student_pred"),
        student_metrics=str(out / "student.json"),
    )
    params["student"].update(
        out_dir=str(out / "student"),
        pretrain=dict(NO_PRETRAINING),
        model=dict(TINY_STUDENT_MODEL),
        train={**params["student"]["train"], **TINY_STUDENT_TRAIN, "frame_limit": 2},
    )
    for name, values in sections.items():
        params[name].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _other_grid(setup: dict) -> list:
    classes = [dict(c) for c in setup["params"]["grid"]["classes"]]
    classes[0]["size"] = [4.2, 1.6, 1.56]
    return classes


@pytest.mark.parametrize("command", [["cache-teacher"], ["teacher", "evaluate"]])
def test_9_teacher_of_another_grid_is_refused_naming_the_field(
    run_cli, teacher_cache_setup, tmp_path, command
):
    grid = {**teacher_cache_setup["params"]["grid"], "classes": _other_grid(teacher_cache_setup)}
    params = _params(teacher_cache_setup, tmp_path, grid=grid)
    result = run_cli(*command, "--params", params, "--no-progress")
    assert_refused(result, "teacher.pt", "grid.classes[0].size", "[4.2, 1.6, 1.56] != [3.9, 1.6, 1.56]")
    assert files_under(tmp_path / "out") == []


def _copy_store(setup: dict, tmp_path: Path) -> Path:
    store = tmp_path / "cache" / "store.zarr"
    shutil.copytree(setup["params"]["cache"]["store"], store)
    return store


def _edit_identity(store: Path, **changes: Any) -> None:
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    identity = dict(root.attrs["identity"])
    for key, value in changes.items():
        identity[key] = value
    root.attrs["identity"] = identity
    if "views" in changes:
        root.attrs["views"] = changes["views"]


def _train_student(run_cli, setup: dict, tmp_path: Path, store: Path, **sections: dict) -> Result:
    params = _params(setup, tmp_path, cache={"store": str(store)}, **sections)
    return run_cli("train-student", "--params", params, "--no-progress")


def _assert_student_wrote_nothing(tmp_path: Path) -> None:
    # train_student creates student.out_dir before it opens the cache: allowed empty here, see
    # test_10_refused_train_student_creates_no_out_dir.
    assert files_under(tmp_path / "out" / "student") == []
    assert [p for p in files_under(tmp_path / "out") if p != "student"] == []


def _another_teacher(store: Path, setup: dict) -> tuple[str, ...]:
    teacher = dict(zarr.open_group(store, mode="r").attrs["identity"]["teacher"])
    _edit_identity(store, teacher={**teacher, "sha256": "0" * 64})
    return ("teacher", "0000000000000000", "rerun `stereodistill cache-teacher`")


def _another_split(store: Path, setup: dict) -> tuple[str, ...]:
    _edit_identity(store, split_fingerprint="f" * 64)
    return ("split_fingerprint", "different prepared split")


def _another_views(store: Path, setup: dict) -> tuple[str, ...]:
    _edit_identity(store, views=["identity"])
    return ("student.train.flip_probability", "hflip")


MISMATCHES = {"teacher": _another_teacher, "split": _another_split, "views": _another_views}


@pytest.mark.parametrize("change", [*MISMATCHES, "grid"])
def test_10_cache_of_another_teacher_grid_split_or_views_is_refused(
    run_cli, teacher_cache_setup, tmp_path, change
):
    store = _copy_store(teacher_cache_setup, tmp_path)
    if change == "grid":
        grid = {**teacher_cache_setup["params"]["grid"], "classes": _other_grid(teacher_cache_setup)}
        result = _train_student(run_cli, teacher_cache_setup, tmp_path, store, grid=grid)
        names: tuple[str, ...] = ("grid.classes[0].size", "[4.2, 1.6, 1.56] != [3.9, 1.6, 1.56]")
    else:
        names = MISMATCHES[change](store, teacher_cache_setup)
        result = _train_student(run_cli, teacher_cache_setup, tmp_path, store)
    assert_refused(result, store, *names)
    _assert_student_wrote_nothing(tmp_path)


def _shard_chunks(shard: Path) -> list[tuple[int, int]]:
    """``(offset, nbytes)`` of each inner chunk of a Zarr v3 shard (index at the end: uint64 pairs + crc32c)."""
    data = shard.read_bytes()
    count = 4  # 2 frames x 2 views per shard in the fixture
    index = data[-(count * 16 + 4) : -4]
    pairs = struct.unpack(f"<{2 * count}Q", index)
    return [(pairs[2 * i], pairs[2 * i + 1]) for i in range(count)]


def _nan_box(store: Path) -> tuple[str, str]:
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    assert (root["covered_count"][1] > 0).all()
    boxes = root["boxes"][0:2]
    boxes[1, :, 0, 2] = np.nan  # frame 1, both views, the first covered anchor's z
    root["boxes"][0:2] = boxes
    return "frame 1 view identity: boxes contain NaN", "frame 000001 view"


def _unwritten_logits(store: Path) -> tuple[str, str]:
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    logits = root["cls_logits"][0:2]
    logits[1, :, 100] = -32768  # the fill value: what a lost write leaves (int16 logits cannot hold NaN)
    root["cls_logits"][0:2] = logits
    return "cls_logits has unwritten (fill) values (frames [1])", "frame 000001 view"


def _damaged_chunk_headers(store: Path) -> tuple[str, str]:
    shard = store / "boxes" / "c.0.0.0.0"
    data = bytearray(shard.read_bytes())
    for offset, _ in _shard_chunks(shard):
        data[offset : offset + 16] = b"\xde\xad\xbe\xef" * 4
    shard.write_bytes(bytes(data))
    return "shard 0 (frames 0..1): unreadable (array boxes", "array boxes is unreadable"


def _damaged_shard_index(store: Path) -> tuple[str, str]:
    shard = store / "dir_logits" / "c.0.0.0.0"
    data = bytearray(shard.read_bytes())
    data[-12:-4] = b"\xde\xad\xbe\xef" * 2  # the last chunk's nbytes: the index checksum no longer matches
    shard.write_bytes(bytes(data))
    return "shard 0 (frames 0..1): unreadable (array dir_logits", "array dir_logits is unreadable"


DAMAGE = {
    "NaN box": _nan_box,
    "unwritten logits": _unwritten_logits,
    "damaged chunk headers": _damaged_chunk_headers,
    "damaged shard index": _damaged_shard_index,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_10_damaged_cache_fails_verify_and_training_refuses_it(
    run_cli, teacher_cache_setup, tmp_path, damage
):
    store = _copy_store(teacher_cache_setup, tmp_path)
    assert run_cli("cache", "verify", store).exit_code == 0
    in_verify, in_training = DAMAGE[damage](store)
    result = run_cli("cache", "verify", store)
    assert result.exit_code != 0
    assert in_verify in result.stdout, result.stdout
    result = _train_student(run_cli, teacher_cache_setup, tmp_path, store)
    assert_refused(result, store, in_training, "damaged")
    _assert_student_wrote_nothing(tmp_path)


def test_10_bytes_flipped_inside_a_chunk_are_detected(run_cli, teacher_cache_setup, tmp_path):
    store = _copy_store(teacher_cache_setup, tmp_path)
    shard = store / "cls_logits" / "c.0.0.0.0"
    data = bytearray(shard.read_bytes())
    offset, nbytes = _shard_chunks(shard)[0]
    middle = offset + nbytes // 2
    data[middle : middle + 16] = b"\xde\xad\xbe\xef" * 4
    shard.write_bytes(bytes(data))
    assert run_cli("cache", "verify", store).exit_code != 0


def test_10_refused_train_student_creates_no_out_dir(run_cli, teacher_cache_setup, tmp_path):
    store = _copy_store(teacher_cache_setup, tmp_path)
    _another_split(store, teacher_cache_setup)
    assert_refused(_train_student(run_cli, teacher_cache_setup, tmp_path, store), "split_fingerprint")
    assert not (tmp_path / "out" / "student").exists()


# ============================================================================================== params
def _repo_params(tmp_path: Path, dotted: str, value: Any) -> Path:
    """params.yaml with every path under ``tmp_path/out`` and ``dotted`` set to ``value``."""
    params = read_params_yaml((REPO / "params.yaml").read_text())
    out = tmp_path / "out"
    params["data"].update(prepared_dir=str(out / "prepared"), root=str(out / "kitti"))
    params["teacher"]["out_dir"] = str(out / "teacher")
    params["student"]["out_dir"] = str(out / "student")
    params["cache"]["store"] = str(out / "cache.zarr")
    for key in ("teacher_predictions", "teacher_metrics", "student_predictions", "student_metrics"):
        params["evaluate"][key] = str(out / key)
    *parents, last = dotted.split(".")
    mapping = params
    for key in parents:
        mapping = mapping[key]
    mapping[last] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize(
    ("command", "dotted", "value", "message"),
    [
        (["train-student"], "student.train.epochs", "ten", "expected an integer, got 'ten'"),
        (["train-teacher"], "teacher.train.lr", [1], "expected a number, got [1]"),
        (["train-teacher"], "teacher.train.lr", "1e-3", "write 1.0e-3"),
        (["train-teacher"], "teacher.train.augment.scale", [0.9], "expected a list of 2 numbers"),
        (["train-teacher"], "teacher.train.learning_rate", 0.1, "unknown field(s)"),
        (["cache-teacher"], "cache.coverage.iou_flor", 0.3, "unknown field(s)"),
        (["cache-teacher"], "cache.frames_per_shard", "32", "expected an integer"),
        (["train-student"], "distill.cld.temperature", True, "expected a number"),
        (["train-student"], "distill.xgd.thresholds", [0.7, "high", 0.5], "expected a number"),
        (["student", "evaluate"], "student.decode.class_agnostic", "yes please", "expected true or false"),
        (["teacher", "evaluate"], "evaluate.classes", "Car", "expected a list of strings"),
        (["teacher", "evaluate"], "data.splits", ["train", 3], "expected a string"),
    ],
)
def test_11_bad_params_fail_before_any_work_naming_the_key(
    run_cli, tmp_path, command, dotted, value, message
):
    params = _repo_params(tmp_path, dotted, value)
    result = run_cli(*command, "--params", params, "--no-progress")
    index = {"distill.xgd.thresholds": "[1]", "data.splits": "[1]"}.get(dotted, "")
    assert_refused(result, params, dotted + index, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("command", "dotted", "value", "message"),
    [
        (["train-student"], "student.train.warmup_factor", 0.0, "0 < warmup_factor <= 1"),
        (["train-student"], "student.model.num_planes", 1, "at least 2 planes"),
    ],
)
def test_11_value_errors_name_the_params_file_given(run_cli, tmp_path, command, dotted, value, message):
    """Well-typed but invalid values, refused by the settings classes, name the ``--params`` file, not the default."""
    params = _repo_params(tmp_path, dotted, value)
    result = run_cli(*command, "--params", params, "--no-progress")
    assert_refused(result, f"{params}: ", message)
    assert not (tmp_path / "out").exists()


def test_11_the_shipped_params_files_pass_the_check():
    for path in (REPO / "params.yaml", REPO / "docs" / "presets" / "params.kitti.yaml"):
        load_params(path)


def test_11_the_settings_defaults_are_params_yaml():
    """Each settings class's defaults are params.yaml's values (the ``grid`` section is AnchorGrid's)."""
    params = load_params(REPO / "params.yaml")
    assert dataclasses.replace(params, grid=None, source=None) == Params()


def test_11_loading_the_params_imports_no_torch():
    """Every command reads its settings before any work: the settings layer must stay light."""
    code = "import sys; from stereodistill.params import load_params; load_params(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_11_to_dict_round_trips_through_yaml():
    params = load_params(REPO / "docs" / "presets" / "params.kitti.yaml")
    for cls, where, value in [
        (StudentSettings, "student", params.student),
        (TeacherSettings, "teacher", params.teacher),
        (DistillSettings, "distill", params.distill),
    ]:
        plain = read_params_yaml(yaml.safe_dump(to_dict(value)))
        assert plain == to_dict(value)
        assert load_settings(cls, plain, where) == value
