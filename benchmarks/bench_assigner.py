"""Time target assignment on a KITTI-scale (LIGA-Stereo) anchor grid and on the params.yaml grid.

Prints a markdown table and the command that produced it. Run from the repository root:

    python benchmarks/bench_assigner.py [--gt 30] [--repeats 20] [--threads N]
"""

from __future__ import annotations

import math
import platform
import statistics
import sys
import time
from pathlib import Path

import click
import torch

from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import TargetAssigner
from stereodistill.params import read_params_yaml

LIGA_GRID = {
    "point_cloud_range": [2.0, -30.4, -3.0, 59.6, 30.4, 1.0],
    "bev_cell_size": 0.2,
    "rotations": [0.0, math.pi / 2],
    "classes": [
        {
            "name": "Car",
            "size": [3.9, 1.6, 1.56],
            "bottom_z": -1.78,
            "matched_iou": 0.6,
            "unmatched_iou": 0.45,
        },
        {
            "name": "Pedestrian",
            "size": [0.8, 0.6, 1.73],
            "bottom_z": -0.6,
            "matched_iou": 0.5,
            "unmatched_iou": 0.35,
        },
        {
            "name": "Cyclist",
            "size": [1.76, 0.6, 1.73],
            "bottom_z": -0.6,
            "matched_iou": 0.5,
            "unmatched_iou": 0.35,
        },
    ],
}


def random_scene(grid: AnchorGrid, num_gt: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``num_gt`` GT boxes spread over the grid's classes, plus num_gt / 10 Vans (ignore boxes for class 0)."""
    x0, y0, _, x1, y1, _ = grid.point_cloud_range

    def boxes(classes: torch.Tensor) -> torch.Tensor:
        n = classes.numel()
        u = torch.rand(n, 4, generator=generator)
        sizes = torch.tensor([c.size for c in grid.classes])[classes] * (0.85 + 0.3 * u[:, 3:4])
        return torch.cat(
            [
                (x0 + 2 + (x1 - x0 - 4) * u[:, 0:1]),
                (y0 + 2 + (y1 - y0 - 4) * u[:, 1:2]),
                torch.full((n, 1), -0.9),
                sizes,
                -math.pi + 2 * math.pi * u[:, 2:3],
            ],
            dim=1,
        )

    classes = torch.arange(num_gt) % grid.num_classes
    ignore_classes = torch.zeros(max(1, num_gt // 10), dtype=torch.long)
    return {
        "gt_boxes": boxes(classes),
        "gt_classes": classes,
        "ignore_boxes": boxes(ignore_classes),
        "ignore_classes": ignore_classes,
    }


def time_assign(grid: AnchorGrid, num_gt: int, repeats: int) -> tuple[float, float, float, int]:
    """(first call s, median s, min s, positives) over ``repeats`` scenes."""
    generator = torch.Generator().manual_seed(0)
    assigner = TargetAssigner(grid)
    scenes = [random_scene(grid, num_gt, generator) for _ in range(repeats + 1)]
    start = time.perf_counter()
    assigner.assign(**scenes[0])  # builds and caches the anchors
    first = time.perf_counter() - start
    times, positives = [], 0
    for scene in scenes[1:]:
        start = time.perf_counter()
        targets = assigner.assign(**scene)
        times.append(time.perf_counter() - start)
        positives += int(targets.positive.sum())
    return first, statistics.median(times), min(times), positives // repeats


@click.command()
@click.option("--gt", "num_gt", default=30, show_default=True, help="GT boxes per frame")
@click.option("--repeats", default=20, show_default=True, help="timed frames per grid")
@click.option("--threads", default=None, type=int, help="torch.set_num_threads (default: torch's choice)")
def main(num_gt: int, repeats: int, threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    grids = {"LIGA KITTI (0.2 m)": AnchorGrid.from_params(LIGA_GRID)}
    if params.exists():
        grids["params.yaml"] = AnchorGrid.from_params(read_params_yaml(params.read_text())["grid"], params)
    click.echo(f"Command: python {' '.join(sys.argv)}")
    click.echo(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"{num_gt} GT + {max(1, num_gt // 10)} Van per frame, {repeats} frames\n"
    )
    click.echo(
        "| grid | cells (nx x ny) | anchors | first call (ms) | median (ms) | min (ms) | positives / frame |"
    )
    click.echo("|---|---|---|---|---|---|---|")
    for name, grid in grids.items():
        first, median, fastest, positives = time_assign(grid, num_gt, repeats)
        click.echo(
            f"| {name} | {grid.nx} x {grid.ny} | {grid.num_anchors:,} | {first * 1e3:.1f} | {median * 1e3:.1f} | "
            f"{fastest * 1e3:.1f} | {positives} |"
        )


if __name__ == "__main__":
    main()
