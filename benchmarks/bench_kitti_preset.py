"""The ``kitti`` preset end to end on synthetic frames: wall time per frame and peak RSS of each of the eight stages.

Writes ``--workdir/params.yaml`` derived from docs/presets/params.kitti.yaml (:func:`kitti_run_params`): LIGA's
304 x 288 grid, full-resolution 1242 x 375 images and 72 planes are kept; the data is ``--frames`` synthetic
``kitti``-preset frames (half train, half val), every training runs one epoch, data loading stays in the stage's
process (``num_workers: 0``). Then runs ``python stages/<stage>.py`` for each stage of dvc.yaml in order with the
work directory as cwd, each a subprocess whose peak RSS comes from ``wait4`` (this checkout's package is imported:
``PYTHONPATH`` points at it). A stage's time per frame divides its wall time (imports included) by the frames it
processes: all frames for ``synthesize`` and ``prepare``, the train split for training and caching, the val split
for evaluating.

    python benchmarks/bench_kitti_preset.py [--frames 4] [--workdir /tmp/bench_kitti] [--json OUT] [--table OUT]
                                            [--slim] [--keep]

``--slim`` narrows every network (channels, blocks) but keeps the grid, image size and planes: the smallest run
that still exercises the preset's shapes (tests/test_kitti_preset.py). Exits non-zero when a stage fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from stereodistill.params import read_params_yaml

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "docs/presets/params.kitti.yaml"

# Narrow networks for --slim; the student keeps the preset's feature stride (4), voxel_z, z_pool and planes.
SLIM_TEACHER_MODEL: dict[str, Any] = {
    "sparse_channels": [8, 8, 8],
    "sparse_out_channels": 8,
    "bev_channels": [8, 16],
    "bev_layers": [1, 1],
    "bev_upsample_channels": 8,
}
SLIM_STUDENT_MODEL: dict[str, Any] = {
    "backbone_channels": [4, 4],
    "backbone_strides": [1, 2],
    "backbone_blocks": [1, 1],
    "stereo_channels": 4,
    "semantic_channels": 4,
    "cost_channels": 4,
    "volume_channels": 4,
    "bev_channels": 8,
    "norm_groups": 4,
}


def kitti_run_params(frames: int, slim: bool = False, preset: Path = PRESET) -> dict[str, Any]:
    """The preset's params for a CPU run on ``frames`` synthetic frames (paths relative to the work directory)."""
    params = copy.deepcopy(read_params_yaml(preset.read_text()))
    data = params["data"]
    data["synth"].update(frames=frames, val_fraction=0.5, seed=0)
    data.update(root=data["synth"]["out"], split_dir=f"{data['synth']['out']}/ImageSets")
    params["teacher"]["train"].update(epochs=1, num_workers=0)
    params["student"]["train"].update(epochs=1, num_workers=0, frame_limit=0)
    if slim:
        params["teacher"]["model"].update(SLIM_TEACHER_MODEL)
        params["student"]["model"].update(SLIM_STUDENT_MODEL)
    return params


def split_frames(workdir: Path, params: dict[str, Any], split: str) -> int:
    ids = (workdir / params["data"]["split_dir"] / f"{split}.txt").read_text().split()
    return len(ids)


def frames_per_stage(workdir: Path, params: dict[str, Any]) -> dict[str, int]:
    """How many frames each stage processes (after ``prepare`` has written the split files)."""
    train = split_frames(workdir, params, "train")
    evaluated = split_frames(workdir, params, params["evaluate"]["split"])
    cached = split_frames(workdir, params, params["cache"]["split"])
    total = params["data"]["synth"]["frames"]
    return {
        "synthesize": total,
        "prepare": total,
        "train_teacher": train,
        "evaluate_teacher": evaluated,
        "cache_teacher": cached,
        "pretrain_student": train,
        "train_student": train,
        "evaluate_student": evaluated,
    }


def timed(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[int, float, float]:
    """Run ``args``; (exit status, wall seconds, peak RSS MiB of its process tree from ``wait4``)."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(args)}\n")
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    return os.waitstatus_to_exitcode(status), seconds, usage.ru_maxrss / 1024


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| stage | frames | wall (s) | s per frame | peak RSS (MiB) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['frames']} | {r['seconds']:.1f} | {r['seconds_per_frame']:.1f} "
            f"| {r['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def run_stages(workdir: Path, params: dict[str, Any], log: Path) -> list[dict[str, Any]]:
    """Every stage of dvc.yaml in order; rows of stage, frames, seconds, seconds_per_frame, peak_rss_mib, status."""
    stages = list(read_params_yaml((REPO / "dvc.yaml").read_text())["stages"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rows: list[dict[str, Any]] = []
    for stage in stages:
        status, seconds, rss = timed(
            [sys.executable, str(REPO / "stages" / f"{stage}.py")], workdir, env, log
        )
        rows.append({"stage": stage, "seconds": seconds, "peak_rss_mib": rss, "status": status})
        print(f"{stage}: {seconds:.1f} s, peak RSS {rss:.0f} MiB", flush=True)
        if status != 0:
            break
    if rows[-1]["status"] == 0:
        counts = frames_per_stage(workdir, params)
        for r in rows:
            r["frames"] = counts[r["stage"]]
            r["seconds_per_frame"] = r["seconds"] / r["frames"]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=4, help="synthetic frames, half train, half val")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_kitti"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--table", type=Path, help="write the markdown table here")
    parser.add_argument("--slim", action="store_true", help="narrow networks; same grid, images, planes")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and its outputs")
    args = parser.parse_args()
    if args.frames < 2:
        parser.error("--frames must be at least 2 (one train, one val frame)")

    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    params = kitti_run_params(args.frames, args.slim)
    (args.workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = args.workdir.parent / f"{args.workdir.name}.log"
    log.write_text("")
    rows = run_stages(args.workdir, params, log)
    if rows[-1]["status"] != 0:
        print(f"stage {rows[-1]['stage']} failed (exit {rows[-1]['status']}); see {log}", file=sys.stderr)
        return 1
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    result = {
        "commit": commit,
        "frames": args.frames,
        "slim": args.slim,
        "stages": rows,
        "total_seconds": sum(r["seconds"] for r in rows),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in rows),
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": platform.machine(),
        "command": " ".join(["python", *sys.argv]),
    }
    table = markdown_table(rows)
    print(table)
    if args.table:
        args.table.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
