"""benchmarks/gpu_check.py on the CPU (``--device cpu --small``): every step it runs on a GPU machine, and its
JSON and markdown summary; benchmarks/gpu_site.py's choice of wheels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "benchmarks" / "gpu_check.py"
STEPS = (
    "spconv_check",
    "data",
    "stage_one_kitti",
    "stage_one_default",
    "student_default",
    "student_kitti",
    "ddp",
    "ablation",
)


def _check(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    work = out.parent / "work"
    options = ["--device", "cpu", "--small", "--out", str(out), "--work", str(work), *args]
    command = [sys.executable, str(DRIVER), *options]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    summary = json.loads((out / "gpu_check.json").read_text())
    return result, summary


def _ok(summary: dict, step: str) -> dict:
    result = summary["steps"][step]
    assert result["status"] == "ok", result
    return result


def test_no_time_left_skips_every_step_and_still_writes_the_summary(tmp_path: Path) -> None:
    result, summary = _check(tmp_path / "out", "--budget-s", "0")
    assert result.returncode == 0, result.stderr
    assert summary["finished"] is True
    assert list(summary["steps"]) == list(STEPS)
    for step in summary["steps"].values():
        assert step["status"] == "skipped"
        assert "needs" in step["reason"]
    assert summary["meta"]["device"] == "cpu" and summary["meta"]["gpu"] is None
    assert "| ablation | skipped |" in (tmp_path / "out" / "gpu_check.md").read_text()
    assert not (tmp_path / "work").exists()


def test_default_grid_steps_on_the_cpu(tmp_path: Path) -> None:
    steps = ("spconv_check", "data", "stage_one_default", "student_default", "ddp")
    result, summary = _check(tmp_path / "out", "--budget-s", "3600", "--steps", *steps)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(summary["steps"]) == list(steps)

    spconv = _ok(summary, "spconv_check")
    assert [c["device"] for c in spconv["convs"]] == ["cpu"]
    assert spconv["convs"][0]["relative"] < 1e-5

    data = _ok(summary, "data")
    assert set(data) >= {"default", "status", "seconds"} and "kitti" not in data
    assert data["default"]["frames"] == 8 and data["default"]["splits"] == ["train", "val"]

    stage = _ok(summary, "stage_one_default")
    assert stage["grid"].startswith("96x96")
    assert [row["batch_frames"] for row in stage["forward"]] == [4]
    (write,) = stage["cache_write"]
    assert write["frames"] == 4  # the train half of the eight frames
    assert write["frames_per_s"] > 0 and write["stage_over_forward"] >= 1.0
    assert write["mb_per_frame_and_view"] > 0 and write["peak_allocated_gib"] is None
    assert "goal_met" not in stage

    student = _ok(summary, "student_default")
    assert student["batch"] == 2 and student["image_hw"] == [96, 320]
    assert student["distill"] == {"xgd": "xgd", "cld": "diagonal"}
    assert student["steps_timed"] == 1 and student["step_s_median"] > 0

    assert summary["steps"]["ddp"]["status"] == "skipped"
    assert "Student training step" in (tmp_path / "out" / "gpu_check.md").read_text()


@pytest.mark.slow
def test_every_step_on_the_cpu_with_two_gloo_ranks(tmp_path: Path) -> None:
    result, summary = _check(tmp_path / "out", "--budget-s", "3600", "--ddp-procs", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for step in STEPS:
        _ok(summary, step)
    kitti = summary["steps"]["stage_one_kitti"]
    assert kitti["grid"].startswith("288x304") and isinstance(kitti["goal_met"], bool)
    assert summary["steps"]["student_kitti"]["overrides"] is not None
    ddp = summary["steps"]["ddp"]
    assert ddp["ranks"] == 2 and ddp["steps"] == 2 and ddp["batch_per_rank"] == 1
    (run,) = summary["steps"]["ablation"]["runs"]
    assert run["variant"] == "xgd_cld" and 0.0 <= run["Car_3d_moderate"] <= 100.0


def _wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


def test_gpu_site_unpacks_only_missing_wheels_that_suit_the_interpreter(tmp_path: Path) -> None:
    kit, site = tmp_path / "kit", tmp_path / "site"
    (kit / "wheels").mkdir(parents=True)
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    _wheel(
        kit / "wheels/absent_pkg-1.0-py3-none-any.whl",
        {"absent_pkg/__init__.py": "", "absent_pkg-1.0.dist-info/RECORD": ""},
    )
    _wheel(kit / "wheels/absent_mod-1.0-py3-none-any.whl", {"absent_mod.py": ""})
    _wheel(kit / "wheels/json-1.0-py3-none-any.whl", {"json/__init__.py": "raise ImportError"})
    _wheel(kit / f"wheels/absent_bin-1.0-{tag}-{tag}-linux_x86_64.whl", {"absent_bin/__init__.py": ""})
    _wheel(kit / "wheels/other_bin-1.0-cp27-cp27mu-linux_x86_64.whl", {"other_bin/__init__.py": ""})
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu_site.py"), "--kit", str(kit), "--site", str(site)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in site.iterdir()) == [
        "absent_bin",
        "absent_mod.py",
        "absent_pkg",
        "absent_pkg-1.0.dist-info",
    ]
    assert "no " in result.stdout and "spconv must already be importable" in result.stdout


def test_the_shell_script_runs_the_driver_with_the_time_left(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": "",
        "OMP_NUM_THREADS": "1",
        "OUT": str(tmp_path / "out"),
        "GPU_SITE": str(tmp_path / "site"),
        "TOTAL_S": "600",
        "MARGIN_S": "100",
    }
    args = ["--device", "cpu", "--small", "--work", str(tmp_path / "work"), "--steps", "spconv_check"]
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu_check.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "out/gpu_check.json").read_text())
    assert list(summary["steps"]) == ["spconv_check"] and summary["steps"]["spconv_check"]["status"] == "ok"
    assert 400 <= summary["meta"]["budget_s"] <= 500  # TOTAL_S minus the kit's unpacking minus MARGIN_S
    assert (tmp_path / "out/gpu_site.log").exists() and (tmp_path / "out/gpu_check.log").exists()
