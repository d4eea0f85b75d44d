"""benchmarks/val_bootstrap.py: the bootstrap over val frames, on hand-built scenes whose APs are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import benchmark_script

from stereodistill.data.labels import KittiObject, write_label_file

FRAMES = [f"{i:06d}" for i in range(40)]


@pytest.fixture(scope="module")
def boot():
    with benchmark_script("val_bootstrap") as module:
        yield module


def car(depth: float, score: float | None = None) -> KittiObject:
    """A fully visible Car (2D box 50 px tall: easy, so also moderate) at ``depth`` m."""
    return KittiObject(
        "Car", 0.0, 0, 0.0, (100.0, 100.0, 200.0, 150.0), (1.5, 1.6, 3.9), (0.0, 1.65, depth), 0.0, score
    )


def scene() -> tuple[dict, dict, dict]:
    """Ground truth (two cars a frame), a perfect detector, and one that finds the cars of the first half only.

    Every detection has a score of its own, and there are 80 cars: KITTI's recall thresholds need both for a
    perfect detector to score 100 (12 frames would give it 57.5)."""
    gt = {f: [car(10.0), car(25.0)] for f in FRAMES}
    found = {f: [car(10.0, 0.9 - 0.005 * i), car(25.0, 0.6 - 0.005 * i)] for i, f in enumerate(FRAMES)}
    half = {f: (found[f] if i < 20 else []) for i, f in enumerate(FRAMES)}
    return gt, found, half


def test_a_frame_drawn_twice_counts_twice_and_a_frame_without_detections_is_empty(boot):
    frames = {"000000": ["a"], "000001": ["b"]}
    got = boot.drawn(frames, ["000000", "000001", "000002"], np.array([1, 1, 2]))
    assert got == {"000001#0": ["b"], "000001#1": ["b"], "000002#2": ()}


def test_a_perfect_detector_does_not_move_and_a_partial_one_does(boot):
    gt, perfect, half = scene()
    figure = boot.Figure()
    assert figure.of(gt, perfect) == pytest.approx(100.0)
    aps = boot.bootstrap_aps(gt, {"perfect": perfect, "half": half}, figure, draws=8, seed=3)
    assert aps["perfect"] == pytest.approx([100.0] * 8)
    assert len(set(np.round(aps["half"], 6))) > 1  # the share of found cars changes with the frames drawn
    again = boot.bootstrap_aps(gt, {"half": half}, figure, draws=8, seed=3)
    assert again["half"] == aps["half"]  # the draws depend on the seed only


def test_pairs_are_scored_on_the_same_draws(boot):
    gt, perfect, half = scene()
    figure = boot.Figure()
    runs = {"half": half, "perfect": perfect, "half_again": dict(half)}
    aps = boot.bootstrap_aps(gt, runs, figure, draws=10, seed=0)
    full = {name: figure.of(gt, dt) for name, dt in runs.items()}
    summary = boot.summarise(full, aps, ["half", "half_again"], ["perfect", "half"])
    to_perfect, to_itself = summary["pairs"]
    # perfect scores the same on every draw, so the difference moves exactly as much as the partial run does
    assert to_perfect["difference"] == pytest.approx(100.0 - full["half"])
    assert to_perfect["bootstrap_std"] == pytest.approx(summary["runs"]["half"]["bootstrap_std"])
    assert summary["runs"]["half"]["bootstrap_std"] > 1.0
    assert to_itself == {"baseline": "half_again", "compare": "half", "difference": 0.0, "bootstrap_std": 0.0}
    assert summary["sigma_d"] == pytest.approx(np.std([to_perfect["difference"], 0.0], ddof=1))
    assert summary["baseline"] == {"mean": pytest.approx(full["half"]), "std": 0.0}


def write(folder: Path, frames: dict) -> Path:
    folder.mkdir(parents=True)
    for frame_id, objects in frames.items():
        write_label_file(folder / f"{frame_id}.txt", objects)
    return folder


def test_cli_writes_the_summary(boot, tmp_path, capsys):
    gt, perfect, half = scene()
    labels = write(tmp_path / "label_2", gt)
    a, b = write(tmp_path / "half", half), write(tmp_path / "perfect", perfect)
    out = tmp_path / "boot.json"
    code = boot.main(
        [
            "--gt-dir",
            str(labels),
            "--baseline",
            str(a),
            "--compare",
            str(b),
            "--draws",
            "5",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads(out.read_text())
    assert (summary["frames"], summary["draws"], summary["draw_frames"]) == (40, 5, 40)
    assert summary["runs"][str(b)]["ap"] == pytest.approx(100.0)
    assert summary["pairs"][0]["difference"] == pytest.approx(100.0 - summary["runs"][str(a)]["ap"])
    assert "sigma_d" in summary and summary["sigma_d"] is None  # one pair has no spread
    assert "move a paired difference" in capsys.readouterr().out


def test_predictions_of_other_frames_are_refused_naming_the_file(boot, tmp_path, capsys):
    gt, perfect, _ = scene()
    labels = write(tmp_path / "label_2", gt)
    stray = write(tmp_path / "pred", {**perfect, "000099": []})
    out = tmp_path / "boot.json"
    assert boot.main(["--gt-dir", str(labels), "--baseline", str(stray), "--json", str(out)]) == 1
    assert "000099.txt" in capsys.readouterr().err
    assert not out.exists()


def test_unpaired_compare_folders_are_a_usage_error(boot, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        boot.main(["--gt-dir", str(tmp_path), "--baseline", "a", "b", "--compare", "c"])
    assert exit_info.value.code == 2
