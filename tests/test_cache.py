"""The teacher cache (stage one): precision, coverage, views, determinism, resume after SIGKILL, several ranks,
the writer lock, identity mismatches, the reader, the CLI and the documented plain-zarr snippet."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr
from cache_fixtures import REPO, SETTINGS, SMALL, assert_stores_equal
from cache_fixtures import anchor_grid as _grid
from cache_fixtures import calibrated_teacher as _teacher

from stereodistill.cache.coverage import CoverageRule
from stereodistill.cache.lock import StoreLock, lock_path
from stereodistill.cache.ranks import Ranks, current_ranks
from stereodistill.cache.reader import TeacherCache
from stereodistill.cache.run import cache_teacher_from_params
from stereodistill.cache.schema import KIND_BEST
from stereodistill.cache.store import store_identity
from stereodistill.cache.writer import write_cache
from stereodistill.data.prepared import PreparedSplit, split_fingerprint
from stereodistill.errors import InputError, StereoDistillError
from stereodistill.geometry.views import boxes_in_view, mirror_points
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import TargetAssigner, ground_truth_from_labels
from stereodistill.head.cells import cells_in_boxes
from stereodistill.params import parse_params, read_params_yaml
from stereodistill.settings import to_dict
from stereodistill.teacher.model import SecondTeacher
from stereodistill.teacher.predict import iterate_responses

CPU = Ranks(0, 1, torch.device("cpu"))


@pytest.fixture(scope="module")
def setup(teacher_cache_setup: dict) -> dict:
    """The teacher saved as a checkpoint, a params file for it, and a reference store (tests/cache_fixtures.py)."""
    return teacher_cache_setup


def _identity(grid, settings, split, sha="t" * 64):
    teacher = {"sha256": sha, "config": to_dict(SMALL), "settings": None}
    return store_identity(grid, settings, split.frame_ids, split_fingerprint(split), teacher)


# ------------------------------------------------------------------------------------------ precision
def test_read_back_matches_the_teachers_float32_output(setup):
    grid = setup["grid"]
    model = _teacher(grid)
    split = PreparedSplit(setup["split"])
    cache = TeacherCache(setup["params"]["cache"]["store"])
    for response in iterate_responses(model, split, progress=False):
        cached = cache.read(response.frame_id, "identity")
        logits = response.cls_logits
        assert logits.abs().max() > 1.0  # the randomised head gives a real spread of values
        inside = logits.abs() <= 15
        assert (cached.cls_logits - logits)[inside].abs().max() <= 0.01
        assert (cached.cls_logits - logits).abs().max() <= SETTINGS.logit_step / 2 + 1e-6
        index = cached.covered_index
        assert index.numel() > 0
        boxes = response.boxes[index]
        assert (cached.boxes[:, :6] - boxes[:, :6]).abs().max() <= 0.01  # 1 cm centre and size
        heading_error = torch.remainder(cached.boxes[:, 6] - boxes[:, 6] + np.pi, 2 * np.pi) - np.pi
        assert heading_error.abs().max() <= 0.001
        assert (cached.dir_logits - response.dir_logits[index]).abs().max() <= 0.01
        assert cached.cls_logits.dtype == torch.float32 and cached.cls_logits.shape == (grid.num_anchors, 3)


def test_hflip_view_is_the_teacher_on_mirrored_points(setup):
    grid = setup["grid"]
    model = _teacher(grid)
    split = PreparedSplit(setup["split"])
    cache = TeacherCache(setup["params"]["cache"]["store"])
    i = 1
    mirrored = mirror_points(split.read_points(i))
    with torch.no_grad():
        out = model.head.flatten(model([torch.from_numpy(mirrored)]))
    cached = cache.read(i, "hflip")
    assert (cached.cls_logits - out.cls[0]).abs().max() <= 0.01
    identity = cache.read(i, "identity")
    assert (identity.cls_logits - cached.cls_logits).abs().max() > 0.1  # the views really differ


def test_bev_features_are_the_teachers_at_the_in_box_cells_of_each_view(setup):
    """Both views, cell for cell: the cached features equal the teacher's BEV map on the (mirrored) points at the
    cells whose centre lies in a GT box of that view, within float16 rounding."""
    grid = setup["grid"]
    model = _teacher(grid)
    split = PreparedSplit(setup["split"])
    cache = TeacherCache(setup["params"]["cache"]["store"])
    assert cache.feature_maps == ("bev",) and cache.feature_channels() == model.bev.out_channels
    for i in range(len(split)):
        labels = split.labels(i)
        gt = ground_truth_from_labels(labels.types.tolist(), labels.boxes, grid)
        points = split.read_points(i)
        for view, cloud in (("identity", points), ("hflip", mirror_points(points))):
            with torch.no_grad():
                bev = model.features([torch.from_numpy(cloud)])[0].flatten(1)  # (Cb, ny * nx)
            boxes = torch.from_numpy(boxes_in_view(gt.boxes.numpy(), view))
            inside = torch.nonzero(cells_in_boxes(grid, [boxes])[0]).squeeze(1)
            cached = cache.read_features(i, view)
            assert inside.numel() > 20
            torch.testing.assert_close(cached.cell, inside, rtol=0, atol=0)
            expected = bev[:, inside].T
            assert cached.bev.dtype == torch.float32 and cached.bev.shape == expected.shape
            assert expected.abs().max() > 0.1  # real features, not a zero map
            torch.testing.assert_close(cached.bev, expected, rtol=2**-10, atol=1e-4)  # float16 rounding
    identity, hflip = cache.read_features(1, "identity"), cache.read_features(1, "hflip")
    assert not torch.equal(identity.cell, hflip.cell)  # the views really differ


def test_feature_scale_is_the_mean_absolute_feature_over_every_stored_cell(setup):
    cache = TeacherCache(setup["params"]["cache"]["store"])
    stored = [cache.read_features(i, view).bev for i in range(len(cache)) for view in cache.views]
    expected = torch.cat(stored).double().abs().mean(dim=0).float()
    torch.testing.assert_close(cache.feature_scale(), expected, rtol=1e-4, atol=1e-6)


def test_a_store_without_features_says_which_param_to_set(setup, tmp_path):
    params = read_params_yaml(Path(setup["params_path"]).read_text())
    params["cache"]["store"] = str(tmp_path / "plain.zarr")
    params["cache"]["features"] = []
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    cache_teacher_from_params(parse_params(params, path), progress=False)
    assert "feature_cell" not in zarr.open_group(tmp_path / "plain.zarr", mode="r")
    cache = TeacherCache(tmp_path / "plain.zarr")
    assert cache.feature_maps == ()
    with pytest.raises(InputError, match=r"cache\.features"):
        cache.read_features(0)
    torch.testing.assert_close(
        cache.read(1, "hflip").cls_logits,
        TeacherCache(setup["params"]["cache"]["store"]).read(1, "hflip").cls_logits,
    )


def test_feature_capacity_too_small_is_an_error_naming_the_frame_and_param(setup, tmp_path):
    model = _teacher(setup["grid"])
    split = PreparedSplit(setup["split"])
    settings = dataclasses.replace(SETTINGS, feature_capacity=3)
    with pytest.raises(
        InputError, match=r"frame \S+ view identity: \d+ in-box cells exceed cache\.feature_capacity 3"
    ):
        write_cache(
            model, split, tmp_path / "small.zarr", settings, _identity(setup["grid"], settings, split), CPU
        )


def test_coverage_holds_every_assigner_positive_in_both_views(setup):
    grid = setup["grid"]
    split = PreparedSplit(setup["split"])
    cache = TeacherCache(setup["params"]["cache"]["store"])
    assigner = TargetAssigner(grid)
    for i in range(len(split)):
        labels = split.labels(i)
        gt = ground_truth_from_labels(labels.types.tolist(), labels.boxes, grid)
        for view in ("identity", "hflip"):
            boxes = torch.from_numpy(boxes_in_view(gt.boxes.numpy(), view))
            targets = assigner.assign(boxes, gt.classes)
            positive = torch.nonzero(targets.positive).flatten()
            assert positive.numel() > 0
            cached = cache.read(i, view)
            cache.require_covered(cached, positive)
            assert bool((cached.covered_kind & KIND_BEST).any())
            assert torch.all(cached.covered_index[1:] > cached.covered_index[:-1])


def test_score_floor_covers_confident_anchors_and_capacity_truncation_is_recorded(setup):
    grid = setup["grid"]
    cache = TeacherCache(setup["params"]["cache"]["store"])
    cached = cache.read(0, "identity")
    score = torch.sigmoid(cached.cls_logits).max(dim=1).values
    confident = torch.nonzero(score >= 0.1 + 0.01).flatten()  # margin for the logit quantisation
    assert confident.numel() > 0
    cache.require_covered(cached, confident)
    assert cached.score_floor_reached == pytest.approx(0.1)
    # A capacity just above the mandatory anchors keeps only the best-scoring confident ones.
    empty = (torch.zeros(0, 7), torch.zeros(0, dtype=torch.long))
    rule = CoverageRule(grid, 0.3, 0.1, capacity=5)
    cov = rule(cached.cls_logits, *empty, "frame")
    assert cov.index.numel() == 5 and cov.score_floor_reached > 0.1
    kept_scores = score[cov.index]
    assert kept_scores.min() >= cov.score_floor_reached - 1e-6
    uncovered = torch.ones_like(score, dtype=torch.bool)
    uncovered[cov.index] = False
    assert score[uncovered].max() < cov.score_floor_reached


def test_capacity_too_small_for_ground_truth_is_an_error(setup):
    grid = setup["grid"]
    split = PreparedSplit(setup["split"])
    labels = split.labels(0)
    gt = ground_truth_from_labels(labels.types.tolist(), labels.boxes, grid)
    rule = CoverageRule(grid, 0.3, 0.1, capacity=3)
    with pytest.raises(InputError, match=r"cache\.coverage\.capacity"):
        rule(torch.full((grid.num_anchors, 3), -9.0), gt.boxes, gt.classes, "frame 000000")


# ------------------------------------------------------------------------------------------ the reader
def test_reader_validate_names_the_mismatching_field(setup):
    grid = setup["grid"]
    cache = TeacherCache(setup["params"]["cache"]["store"])
    floors = zarr.open_group(cache.path, mode="r", use_consolidated=False)["score_floor_reached"][:]
    assert np.all(floors == np.float32(0.1))  # no frame had more confident anchors than the capacity
    cache.validate(grid, ["identity", "hflip"], iou_floor_needed=0.5, score_floor_needed=0.1)
    with pytest.raises(InputError, match=r"grid\.classes\[0\]\.matched_iou"):
        cache.validate(_grid(matched_iou=0.7), ["identity"], 0.5)
    with pytest.raises(InputError, match=r"cache\.views"):
        cache.validate(grid, ["identity", "vflip"], 0.5)
    with pytest.raises(InputError, match=r"cache\.coverage\.iou_floor"):
        cache.validate(grid, ["identity"], iou_floor_needed=0.2)
    with pytest.raises(InputError, match=r"cache\.coverage\.score_floor"):
        cache.validate(grid, ["identity"], 0.5, score_floor_needed=0.05)
    with pytest.raises(InputError, match="teacher"):
        cache.validate(grid, ["identity"], 0.5, teacher_sha256="0" * 64)
    with pytest.raises(InputError, match="split_fingerprint"):
        cache.validate(grid, ["identity"], 0.5, split_fingerprint="abc")
    with pytest.raises(InputError, match="not in the teacher cache"):
        cache.read("999999", "identity")


def test_reader_is_picklable_and_reopens_lazily(setup):
    cache = TeacherCache(setup["params"]["cache"]["store"])
    first = cache.read(0, "hflip")
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._root is None
    again = clone.read(clone.frame_ids[0], "hflip")
    assert torch.equal(first.cls_logits, again.cls_logits) and torch.equal(first.boxes, again.boxes)


# ------------------------------------------------------------------------------------------ the writer
def test_dvc_stage_recomputes_bitwise_identically_and_leaves_a_complete_store_alone(
    setup, tmp_path, monkeypatch
):
    import runpy

    store = tmp_path / "store.zarr"
    shutil.copytree(setup["params"]["cache"]["store"], store)
    zarr.open_group(store, mode="r+", use_consolidated=False).attrs["identity"] = {"schema_version": 0}
    params = {**setup["params"], "cache": {**setup["params"]["cache"], "store": str(store)}}
    with pytest.raises(InputError, match="--force"):
        cache_teacher_from_params(parse_params(params), progress=False)
    # The stage script recomputes (as --force does) when the identity differs.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(REPO / "stages" / "cache_teacher.py"), run_name="__main__")
    assert_stores_equal(Path(setup["params"]["cache"]["store"]), store)  # deterministic
    stats = cache_teacher_from_params(parse_params(params), progress=False)
    assert stats.frames_written == 0 and stats.shards_skipped == 2
    names = sorted(p.name for p in (store / "cls_logits").iterdir())
    assert names == ["c.0.0.0.0", "c.1.0.0.0", "zarr.json"]  # one file per shard, '.' separator


def test_resume_finishes_an_incomplete_store_identically(setup, tmp_path):
    """In-process variant of the SIGKILL test: a shard marked incomplete (with a stale partial file) is redone."""
    store = tmp_path / "resume.zarr"
    shutil.copytree(setup["params"]["cache"]["store"], store)
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    root["shard_complete"][1] = 0
    root["cls_logits"][2:4] = -5  # garbage in the incomplete shard
    root.attrs["complete"] = False
    (store / "boxes" / "c.1.0.0.0.deadbeef.partial").write_bytes(b"junk")
    params = {**setup["params"], "cache": {**setup["params"]["cache"], "store": str(store)}}
    stats = cache_teacher_from_params(parse_params(params), progress=False)
    assert stats.shards_written == 1 and stats.shards_skipped == 1
    assert_stores_equal(Path(setup["params"]["cache"]["store"]), store)
    assert not list(store.rglob("*.partial"))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("views", "views"),
        ("teacher", "teacher.sha256"),
        ("split", "split_fingerprint"),
        ("grid", r"grid\.classes\[0\]\.matched_iou"),
        ("coverage", r"coverage\.iou_floor"),
    ],
)
def test_existing_store_with_another_identity_is_refused_and_force_recomputes(setup, tmp_path, change, field):
    store = tmp_path / "store.zarr"
    shutil.copytree(setup["params"]["cache"]["store"], store)
    grid, split = setup["grid"], PreparedSplit(setup["split"])
    settings = SETTINGS
    wanted = _identity(grid, settings, split)
    stored = zarr.open_group(store, mode="r+", use_consolidated=False)
    identity = dict(stored.attrs["identity"])
    identity["teacher"] = wanted["teacher"]
    identity["split_fingerprint"] = wanted["split_fingerprint"]
    stored.attrs["identity"] = identity
    if change == "views":
        settings = dataclasses.replace(settings, views=("identity",))
    elif change == "teacher":
        wanted = _identity(grid, settings, split, sha="u" * 64)
    elif change == "split":
        wanted["split_fingerprint"] = "0" * 64
    elif change == "grid":
        grid = _grid(matched_iou=0.65)
    elif change == "coverage":
        settings = dataclasses.replace(
            settings, coverage=dataclasses.replace(settings.coverage, iou_floor=0.25)
        )
    if change in ("views", "grid", "coverage"):
        wanted = {**_identity(grid, settings, split), "split_fingerprint": wanted["split_fingerprint"]}
    model = _teacher(setup["grid"])  # the identity check comes before any forward
    with pytest.raises(InputError, match=field) as err:
        write_cache(model, split, store, settings, wanted, CPU, progress=False)
    assert "--force" in str(err.value)
    assert not lock_path(store).exists()


def test_hflip_needs_a_grid_symmetric_in_y(setup, tmp_path):
    section = read_params_yaml((REPO / "params.yaml").read_text())["grid"]
    section["point_cloud_range"] = [2.0, -19.2, -3.0, 40.4, 19.2, 1.0]
    section["point_cloud_range"][1], section["point_cloud_range"][4] = -22.4, 16.0
    grid = AnchorGrid.from_params(section)
    split = PreparedSplit(setup["split"])
    with pytest.raises(InputError, match="not symmetric in y"):
        write_cache(SecondTeacher(SMALL, grid), split, tmp_path / "s.zarr", SETTINGS, {}, CPU, progress=False)


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(setup, tmp_path):
    store = tmp_path / "store.zarr"
    with StoreLock(store):
        with pytest.raises(InputError, match=f"another writer holds this cache.*pid {os.getpid()}"):
            StoreLock(store).acquire()
        params = {**setup["params"], "cache": {**setup["params"]["cache"], "store": str(store)}}
        with pytest.raises(InputError, match="another writer"):
            cache_teacher_from_params(parse_params(params), progress=False)
    assert not lock_path(store).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    lock_path(store).write_text(f"{socket.gethostname()} {dead.pid}\n")
    with StoreLock(store) as lock:
        assert lock_path(store).read_text().split()[1] == str(os.getpid()) and lock.held
    lock_path(store).write_text(f"some-other-host {os.getpid()}\n")
    with pytest.raises(InputError, match="some-other-host"):
        StoreLock(store).acquire()


def _run_cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "stereodistill"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


# The CLI, SIGKILLed by itself just before zarr writes the chunk whose path ends with argv[1]: a kill at a chosen
# write, whatever the machine's speed (argv[2:] are the CLI's arguments).
_CLI_KILLED_BEFORE_WRITING = """
import os, signal, sys
import zarr.storage._local as local
from stereodistill.cli import main

target = sys.argv.pop(1)
put = local._put

def put_or_die(path, value, exclusive=False):
    if str(path).endswith(target):
        os.kill(os.getpid(), signal.SIGKILL)
    return put(path, value, exclusive)

local._put = put_or_die
main()
"""


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_store(setup, tmp_path):
    store = tmp_path / "killed.zarr"
    params = {**setup["params"], "cache": {**setup["params"]["cache"], "store": str(store)}}
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    killed = subprocess.run(
        [sys.executable, "-c", _CLI_KILLED_BEFORE_WRITING, os.path.join("shard_complete", "c.1")]
        + ["cache-teacher", "--params", str(params_path), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    root = zarr.open_group(store, mode="r", use_consolidated=False)
    # Killed after shard 1's data, before its completion record: the rerun must redo it.
    assert root["shard_complete"][:].tolist() == [1, 0]
    assert (store / "cls_logits" / "c.1.0.0.0").exists() and root.attrs["complete"] is False
    assert lock_path(store).exists()  # left behind by the dead writer, taken over below
    stats = cache_teacher_from_params(parse_params(params), progress=False)
    assert stats.shards_skipped == 1 and stats.shards_written == 1
    assert_stores_equal(Path(setup["params"]["cache"]["store"]), store)


def test_two_torchrun_ranks_write_the_single_process_store(setup, tmp_path, monkeypatch):
    store = tmp_path / "ranks.zarr"
    params = {
        **setup["params"],
        "cache": {**setup["params"]["cache"], "store": str(store), "frames_per_shard": 1},
    }
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    torchrun = Path(sys.executable).parent / "torchrun"
    # Every rank on CPU (gloo), whatever GPUs the machine has: the store is compared bitwise with a CPU run.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "--no-python",
            str(Path(sys.executable).parent / "stereodistill"),
            "cache-teacher",
            "--params",
            str(params_path),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 frames in 4 shards" in result.stdout, result.stdout
    # torchrun runs each rank with OMP_NUM_THREADS=1; CPU convolutions round differently with another thread
    # count (a few logits land one quantisation step apart), so the single process uses one thread too.
    reference = tmp_path / "reference.zarr"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    try:
        cache_teacher_from_params(
            parse_params({**params, "cache": {**params["cache"], "store": str(reference)}}), progress=False
        )
    finally:
        torch.set_num_threads(threads)
    assert_stores_equal(reference, store)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_info_and_verify(setup, tmp_path, run_cli):
    store = tmp_path / "store.zarr"
    shutil.copytree(setup["params"]["cache"]["store"], store)
    result = run_cli("cache", "info", store)
    assert result.exit_code == 0
    assert "96 x 96 cells x 6 anchors = 55296 anchors" in result.output
    assert "complete:    True (2/2 shards, 4 frames)" in result.output
    result = run_cli("cache", "info", store, "--json")
    import json

    info = json.loads(result.output)
    assert info["frames"] == 4 and info["views"] == ["identity", "hflip"]
    assert info["coverage"]["iou_floor"] == 0.3 and info["bytes_on_disk"] > 0
    assert info["quantisation"]["logits"]["dtype"] == "int16"
    features = info["features"]
    assert features["maps"] == ["bev"] and features["bev_channels"] == SMALL.bev_upsample_channels * 2
    assert 0 < features["bytes_per_frame_view"] < features["dense_float32_bytes_per_frame_view"]
    assert 0 < features["cells_per_frame_view"]["mean"] <= features["cells_per_frame_view"]["max"]
    result = run_cli("cache", "verify", store)
    assert result.exit_code == 0 and "ok" in result.output

    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    values = root["bev_features"][2:4]
    values[1, 1, 0, 0] += 1.0  # a feature that no longer matches its frame's sum of |x|
    root["bev_features"][2:4] = values
    cells = root["feature_cell"][0:2]
    cells[0, 0, [0, 1]] = cells[0, 0, [1, 0]]  # cells out of order
    root["feature_cell"][0:2] = cells
    result = run_cli("cache", "verify", store)
    assert result.exit_code == 1
    assert "frame 0 view identity: feature_cell not ascending" in result.output
    assert "frame 3 view hflip: bev_feature_abs_sum does not match bev_features" in result.output
    shutil.rmtree(store)
    shutil.copytree(setup["params"]["cache"]["store"], store)

    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    boxes = root["boxes"][0:2]
    boxes[1, 0, 0, 2] = np.nan
    root["boxes"][0:2] = boxes
    result = run_cli("cache", "verify", store)
    assert result.exit_code == 1 and "frame 1 view identity: boxes contain NaN" in result.output

    (store / "cls_logits" / "c.1.0.0.0").unlink()  # a lost shard file
    (store / "dir_logits" / "c.0.0.0.0").write_bytes(b"not a shard")
    result = run_cli("cache", "verify", store)
    assert result.exit_code == 1
    assert "shard 1 (frames 2..3): cls_logits has unwritten (fill) values" in result.output
    assert "shard 0 (frames 0..1): unreadable" in result.output

    root["shard_complete"][1] = 0
    result = run_cli("cache", "verify", store)
    assert "1 of 2 shards are incomplete" in result.output
    result = run_cli("cache", "info", tmp_path / "nowhere.zarr")
    assert result.exit_code == 1 and "teacher cache is missing" in result.stderr


def test_cache_teacher_cli_resumes_a_complete_store(setup):
    result = _run_cli(["cache-teacher", "--params", str(setup["params_path"]), "--no-progress"], REPO)
    assert result.returncode == 0, result.stderr
    assert "0 frames in 0 shards (2 already complete)" in result.stdout


# ------------------------------------------------------------------------------------------ docs
def test_the_documented_plain_zarr_snippet_reads_a_frame(setup):
    text = (REPO / "docs" / "CACHE_FORMAT.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace = {"STORE": setup["params"]["cache"]["store"], "FRAME": 1, "VIEW": "hflip"}
    exec(compile(snippet, "CACHE_FORMAT.md", "exec"), namespace)
    cached = TeacherCache(setup["params"]["cache"]["store"]).read(1, "hflip")
    np.testing.assert_array_equal(namespace["logits"], cached.cls_logits.numpy())
    np.testing.assert_array_equal(namespace["anchors"], cached.covered_index.numpy())
    np.testing.assert_array_equal(namespace["boxes"], cached.boxes.numpy())
    features = TeacherCache(setup["params"]["cache"]["store"]).read_features(1, "hflip")
    np.testing.assert_array_equal(namespace["cell"], features.cell.numpy())
    np.testing.assert_array_equal(namespace["features"], features.bev.numpy())


def test_a_local_rank_beyond_the_visible_gpus_is_refused_before_any_work(monkeypatch):
    """torchrun --nproc_per_node 4 on a one-GPU machine: a clear message instead of 'invalid device ordinal'."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(StereoDistillError, match=r"LOCAL_RANK 2 needs cuda:2 but only 1 CUDA device\(s\)"):
        current_ranks()
    assert not torch.distributed.is_initialized()
