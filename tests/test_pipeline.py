"""End to end: `dvc repro` of this repository's pipeline on a tiny configuration, in a scratch git repo."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from student_fixtures import TINY_STUDENT_MODEL, TINY_STUDENT_TRAIN

from stereodistill.params import read_params_yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    shutil.which("dvc") is None or shutil.which("git") is None, reason="needs dvc and git"
)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _tiny_params() -> dict:
    params = read_params_yaml((REPO / "params.yaml").read_text())
    params["data"]["synth"].update(frames=4, seed=101, val_fraction=0.5, extra_val_frames=0)
    params["teacher"]["train"].update(epochs=1, batch_size=2)
    params["teacher"]["model"].update(
        sparse_channels=[16, 16, 16],
        sparse_out_channels=16,
        bev_channels=[16, 32],
        bev_layers=[1, 1],
        bev_upsample_channels=16,
    )
    params["student"]["train"].update(TINY_STUDENT_TRAIN)
    params["student"]["pretrain"].update(epochs=1)
    params["student"]["model"].update(TINY_STUDENT_MODEL)
    return params


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory) -> Path:
    """The scratch repo after one ``dvc repro``, shared by the module: read it only (``pipeline_copy`` to edit)."""
    repo = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", ".dvcignore", "stages", "stereodistill"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy(source, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(_tiny_params(), sort_keys=False))
    _run(["git", "init", "-q"], repo)
    _run(["dvc", "init", "-q"], repo)
    _run(["dvc", "repro"], repo)
    return repo


@pytest.fixture()
def pipeline_copy(pipeline_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the reproduced repo (git, DVC cache and outputs) that a test may edit and rerun."""
    repo = tmp_path / "repo"
    shutil.copytree(pipeline_repo, repo, symlinks=True)
    return repo


def test_repro_runs_every_stage_and_writes_metrics(pipeline_repo):
    repo = pipeline_repo
    assert len(list((repo / "data/synthetic/training/velodyne").glob("*.bin"))) == 4
    assert (repo / "data/prepared/train.h5").is_file() and (repo / "data/prepared/val.h5").is_file()
    assert (repo / "models/teacher/teacher.pt").is_file()
    metrics = json.loads((repo / "metrics/teacher_val.json").read_text())
    assert set(metrics["results"]) == {"Car", "Pedestrian", "Cyclist"}
    assert set(metrics["results"]["Car"]["strict"]["R40"]["3d"]) == {"easy", "moderate", "hard"}
    val_ids = (repo / "data/synthetic/ImageSets/val.txt").read_text().split()
    assert sorted(p.stem for p in (repo / "outputs/teacher_val").glob("*.txt")) == sorted(val_ids)
    for who in ("teacher", "student"):
        breakdown = json.loads((repo / f"metrics/{who}_val_breakdown.json").read_text())
        assert breakdown["num_frames"] == len(val_ids)
        assert set(breakdown["classes"]) == {"Car", "Pedestrian", "Cyclist"}
    student = json.loads((repo / "metrics/student_val.json").read_text())
    assert set(student["results"]) == {"Car", "Pedestrian", "Cyclist"}
    assert sorted(p.stem for p in (repo / "outputs/student_val").glob("*.txt")) == sorted(val_ids)
    with (repo / "models/student/loss_log.csv").open() as f:
        header = f.readline().strip().split(",")
    assert {"step", "xgd", "cld", "xgd_kept_centre", "xgd_kept_size", "xgd_kept_heading"} <= set(header)
    assert (repo / "dvc.lock").is_file()
    status = subprocess.run(["dvc", "status", "-q"], cwd=repo, capture_output=True, text=True)
    assert status.returncode == 0, status.stdout


def test_repro_writes_a_verified_teacher_cache(pipeline_repo):
    from stereodistill.cache.reader import TeacherCache

    store = pipeline_repo / "data/teacher_cache.zarr"
    _run([sys.executable, "-m", "stereodistill.cli", "cache", "verify", str(store)], pipeline_repo)
    cache = TeacherCache(store)
    train_ids = (pipeline_repo / "data/synthetic/ImageSets/train.txt").read_text().split()
    frame = cache.read(train_ids[0], "hflip")
    assert frame.cls_logits.shape[1] == 3


def test_only_the_stages_that_run_edited_code_or_params_go_stale(pipeline_copy):
    repo = pipeline_copy
    distill = repo / "stereodistill/distill/xgd.py"
    teacher = repo / "stereodistill/teacher/model.py"
    original = distill.read_text()
    distill.write_text(original + "\n# edited\n")
    changed = set(json.loads(_run(["dvc", "status", "--json"], repo).stdout))
    assert changed == {"train_student"}, changed  # evaluating a student never runs the distillation losses
    distill.write_text(original)
    teacher.write_text(teacher.read_text() + "\n# edited\n")
    changed = set(json.loads(_run(["dvc", "status", "--json"], repo).stdout))
    assert changed == {"train_teacher", "cache_teacher", "evaluate_teacher"}, changed


def _stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def test_student_and_distill_params_rerun_only_the_student(pipeline_copy):
    repo = pipeline_copy
    changes = (
        ("distill", "cld", {"mode": "off"}),
        ("student", "train", {"lr": 0.001}),
        ("distill", "imitation", {"mode": "bev"}),  # trains from the cache's features alone
    )
    for section, key, value in changes:
        params = read_params_yaml((repo / "params.yaml").read_text())
        params[section][key].update(value)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        changed = set(json.loads(_run(["dvc", "status", "--json"], repo).stdout))
        assert changed and changed <= {"train_student", "evaluate_student"}, changed
        ran = _stages_run(_run(["dvc", "repro"], repo).stdout)
        assert ran == ["train_student", "evaluate_student"], ran
    with (repo / "models/student/loss_log.csv").open() as f:
        first = next(csv.DictReader(f))
    assert (
        float(first["cld"]) == 0.0 and float(first["imitation"]) > 0.0
    )  # the last run: CLD off, imitation on


def test_pretrain_params_rerun_the_trunk_and_the_student_only(pipeline_copy):
    repo = pipeline_copy
    params = read_params_yaml((repo / "params.yaml").read_text())
    params["student"]["pretrain"]["epochs"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _stages_run(_run(["dvc", "repro"], repo).stdout)
    assert ran == ["pretrain_student", "train_student", "evaluate_student"], ran
    with (repo / "models/student_pretrain/loss_log.csv").open() as f:
        assert {row["epoch"] for row in csv.DictReader(f)} == {"1", "2"}


def test_changing_only_teacher_params_leaves_data_stages_alone(pipeline_copy):
    repo = pipeline_copy
    params = read_params_yaml((repo / "params.yaml").read_text())
    params["teacher"]["train"]["lr"] *= 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(json.loads(_run(["dvc", "status", "--json"], repo).stdout))
    assert changed == {"train_teacher"}, changed


def test_stage_error_is_one_line_and_nonzero(pipeline_repo, tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [1, 2]\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "stages/prepare.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: params.yaml: data: expected a mapping")
