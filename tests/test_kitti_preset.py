"""The ``kitti`` preset end to end on the CPU: all seven stages on two synthetic ``kitti`` frames.

Runs benchmarks/bench_kitti_preset.py with ``--slim``: narrow networks, but the preset's 304 x 288 grid, its
1242 x 375 images and 72 planes; one epoch each. About 1.5 minutes on a 2-core CPU, hence ``slow``.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stereodistill.params import read_params_yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = [
    "synthesize",
    "prepare",
    "train_teacher",
    "evaluate_teacher",
    "cache_teacher",
    "pretrain_student",
    "train_student",
    "evaluate_student",
]


@pytest.fixture(scope="module")
def kitti_run(tmp_path_factory) -> tuple[Path, dict]:
    """The work directory of one slim two-frame run, and the benchmark's JSON."""
    root = tmp_path_factory.mktemp("kitti_preset")
    workdir, report = root / "run", root / "bench.json"
    args = [sys.executable, str(REPO / "benchmarks/bench_kitti_preset.py"), "--frames", "2", "--slim"]
    args += ["--workdir", str(workdir), "--json", str(report), "--keep"]
    result = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=3600)
    log = (root / "run.log").read_text() if (root / "run.log").exists() else ""
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{log[-4000:]}"
    return workdir, json.loads(report.read_text())


@pytest.mark.slow
def test_the_run_keeps_the_presets_grid_images_and_planes(kitti_run):
    workdir, _ = kitti_run
    from stereodistill.data.prepared import PreparedSplit
    from stereodistill.head.anchors import AnchorGrid
    from stereodistill.params import load_params

    params = load_params(workdir / "params.yaml")
    preset = read_params_yaml((REPO / "docs/presets/params.kitti.yaml").read_text())
    assert params.grid == preset["grid"]
    grid = AnchorGrid.from_params(params.grid)
    assert (grid.nx, grid.ny) == (288, 304)
    assert params.student.model.num_planes == preset["student"]["model"]["num_planes"] == 72
    assert params.student.train.image_scale == 1
    left, _ = PreparedSplit(workdir / "data/prepared/train.h5").read_stereo_pair(0)
    assert left.shape == (375, 1242, 3)


@pytest.mark.slow
def test_every_stage_writes_its_outputs(kitti_run):
    workdir, report = kitti_run
    train_ids = (workdir / "data/synthetic/ImageSets/train.txt").read_text().split()
    val_ids = (workdir / "data/synthetic/ImageSets/val.txt").read_text().split()
    assert len(train_ids) == len(val_ids) == 1
    for path in (
        "data/prepared/train.h5",
        "data/prepared/val.h5",
        "models/teacher/teacher.pt",
        "data/teacher_cache.zarr/zarr.json",
        "models/student/student.pt",
        "models/student/loss_log.csv",
    ):
        assert (workdir / path).is_file(), path
    for who in ("teacher", "student"):
        assert sorted(p.stem for p in (workdir / f"outputs/{who}_val").glob("*.txt")) == val_ids

    assert [r["stage"] for r in report["stages"]] == STAGES
    for row in report["stages"]:
        assert row["status"] == 0 and row["frames"] >= 1
        assert row["seconds"] > 0 and row["peak_rss_mib"] > 0


@pytest.mark.slow
def test_the_metrics_files_are_well_formed(kitti_run):
    workdir, _ = kitti_run
    for who in ("teacher", "student"):
        metrics = json.loads((workdir / f"metrics/{who}_val.json").read_text())
        assert set(metrics["results"]) == {"Car", "Pedestrian", "Cyclist"}
        for per_class in metrics["results"].values():
            for ap in per_class["strict"]["R40"]["3d"].values():
                assert 0.0 <= ap <= 100.0
