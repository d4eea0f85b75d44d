"""Teacher forward time per frame on the default grid and the KITTI (LIGA-scale) grid, CPU and CUDA.

Frames come from the synthetic generator (its default and kitti presets: 32-beam / 64-beam scans), so the
point counts are realistic. Prints a markdown table and the command line.

    python benchmarks/bench_teacher.py [--frames 4] [--repeats 3] [--device cpu|cuda|all] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from stereodistill.data.synth import generate_frame, preset_by_name
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import load_params
from stereodistill.teacher.model import SecondTeacher

REPO = Path(__file__).resolve().parents[1]
SETUPS = {
    "default": (REPO / "params.yaml", "default"),
    "kitti": (REPO / "docs/presets/params.kitti.yaml", "kitti"),
}


def frames_for(preset: str, count: int) -> list[np.ndarray]:
    """Project-frame points (x, y, z, intensity) of ``count`` synthetic frames."""
    out = []
    for i in range(count):
        frame = generate_frame(preset_by_name(preset), 7, i)
        velo = frame.scan.points
        xyz = frame.calib.velo_to_project(velo[:, :3])
        out.append(np.concatenate([xyz, velo[:, 3:4]], axis=1).astype(np.float32))
    return out


def time_forward(
    model: SecondTeacher, frames: list[np.ndarray], device: str, repeats: int
) -> tuple[float, int]:
    model = model.to(device).eval()
    points = [torch.from_numpy(f).to(device) for f in frames]
    times, voxels = [], []
    with torch.no_grad():
        model([points[0]])  # warm-up: spconv builds its kernels/indices caches
        for _ in range(repeats):
            for p in points:
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model([p])
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
                voxels.append(model.voxelizer([p]).features.shape[0])
    return statistics.median(times) * 1000, int(statistics.median(voxels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}"
        + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")
    )
    print()
    print("| grid | device | BEV cells | points / frame | voxels / frame | forward ms / frame (median) |")
    print("|---|---|---|---|---|---|")
    for name, (params_path, preset) in SETUPS.items():
        params = load_params(params_path)
        grid = AnchorGrid.from_params(params.grid, params.source)
        config = params.teacher.model
        frames = frames_for(preset, args.frames)
        for device in devices:
            ms, voxels = time_forward(SecondTeacher(config, grid), frames, device, args.repeats)
            points = int(np.median([len(f) for f in frames]))
            print(
                f"| {name} ({grid.nx}x{grid.ny}, voxel {config.voxel_size[0]} m) | {device} | "
                f"{grid.nx * grid.ny} | {points} | {voxels} | {ms:.1f} |"
            )


if __name__ == "__main__":
    main()
