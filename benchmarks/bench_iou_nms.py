"""Time exact rotated IoU and rotated NMS on realistic box sets; print a markdown table.

Usage: python benchmarks/bench_iou_nms.py [--device cpu|cuda|all] [--repeats 5] ...

Cases:
- ``iou_bev/iou_3d NxM scattered``: N, M boxes spread over a 70 m x 80 m area (most pairs are disjoint).
- ``iou_bev NxM clustered``: both sets jittered around ``--objects`` cars (many overlapping pairs).
- ``iou_bev anchors x GT``: an anchor grid (176 x 200 cells, 3 sizes, 2 headings) against 20 ground truths,
  as a target assigner does.
- ``iou_3d 300 det x 30 GT``: one evaluator frame; multiply by the frame count for a whole split.
- ``rotated_nms`` / ``batched_rotated_nms``: ``--nms-boxes`` detections clustered around ``--objects`` objects.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import torch

from stereodistill.geometry.iou import iou_3d, iou_bev
from stereodistill.geometry.nms import batched_rotated_nms, rotated_nms

CAR_SIZE = (3.9, 1.6, 1.56)


def scattered_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    """``(n, 7)`` float32 boxes, centres uniform in x [0, 70], y [-40, 40], sizes 0.3..6 m, any heading."""
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([70.0, 80.0]) - torch.tensor([0.0, 40.0])
    z = torch.rand(n, 1, generator=gen) * 2 - 1
    lwh = 0.3 + torch.rand(n, 3, generator=gen) * 5.7
    heading = (torch.rand(n, 1, generator=gen) * 2 - 1) * math.pi
    return torch.cat([xy, z, lwh, heading], dim=1)


def scene_objects(objects: int, gen: torch.Generator) -> torch.Tensor:
    """``(objects, 7)`` car-sized boxes with centres uniform in 70 m x 80 m, any heading."""
    xy = torch.rand(objects, 2, generator=gen) * torch.tensor([70.0, 80.0]) - torch.tensor([0.0, 40.0])
    z = torch.full((objects, 1), -0.9)
    lwh = torch.tensor(CAR_SIZE).expand(objects, 3)
    heading = (torch.rand(objects, 1, generator=gen) * 2 - 1) * math.pi
    return torch.cat([xy, z, lwh, heading], dim=1)


def detections_around(
    objects: torch.Tensor, n: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 7)`` detections jittered around random members of ``objects (K, 7)``, and random scores ``(n,)``."""
    which = torch.randint(0, objects.shape[0], (n,), generator=gen)
    base = objects[which]
    xy = base[:, :2] + torch.randn(n, 2, generator=gen) * 0.6
    z = base[:, 2:3] + torch.randn(n, 1, generator=gen) * 0.2
    lwh = base[:, 3:6] * (1 + 0.15 * torch.randn(n, 3, generator=gen))
    heading = base[:, 6:7] + 0.2 * torch.randn(n, 1, generator=gen)
    return torch.cat([xy, z, lwh, heading], dim=1), torch.rand(n, generator=gen)


def anchor_grid() -> torch.Tensor:
    """176 x 200 BEV cells over x [0, 70.4], y [-40, 40], 3 class sizes x headings {0, pi/2}: (211200, 7)."""
    xs = (torch.arange(176) + 0.5) * 0.4
    ys = (torch.arange(200) + 0.5) * 0.4 - 40
    sizes = torch.tensor([[3.9, 1.6, 1.56], [0.8, 0.6, 1.73], [1.76, 0.6, 1.73]])
    gx, gy, gs, gh = torch.meshgrid(
        xs, ys, torch.arange(3.0), torch.tensor([0.0, math.pi / 2]), indexing="ij"
    )
    lwh = sizes[gs.reshape(-1).long()]
    z = -1.65 + lwh[:, 2:3] / 2
    return torch.cat([gx.reshape(-1, 1), gy.reshape(-1, 1), z, lwh, gh.reshape(-1, 1)], dim=1)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """Median and min wall time in ms over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def run_device(args: argparse.Namespace, device: torch.device) -> list[tuple[str, str, float, float, str]]:
    gen = torch.Generator().manual_seed(args.seed)
    rows: list[tuple[str, str, float, float, str]] = []
    n, m = args.iou_n, args.iou_m

    def add(name: str, fn: Callable[[], object], note: str = "") -> None:
        median, best = timed(fn, device, args.repeats)
        rows.append((name, str(device), median, best, note))
        print(f"  {name}: {median:.1f} ms", file=sys.stderr)

    a = scattered_boxes(n, gen).to(device)
    b = scattered_boxes(m, gen).to(device)
    overlapping = int((iou_bev(a, b) > 0).sum())
    add(f"iou_bev {n}x{m} scattered", lambda: iou_bev(a, b), f"{overlapping} overlapping pairs")
    add(f"iou_3d {n}x{m} scattered", lambda: iou_3d(a, b))

    scene = scene_objects(args.objects, gen)
    ca, _ = detections_around(scene, n, gen)
    cb, _ = detections_around(scene, m, gen)
    ca, cb = ca.to(device), cb.to(device)
    overlapping = int((iou_bev(ca, cb) > 0).sum())
    add(f"iou_bev {n}x{m} clustered", lambda: iou_bev(ca, cb), f"{overlapping} overlapping pairs")

    anchors = anchor_grid().to(device)
    gt = scene_objects(20, gen).to(device)
    add(f"iou_bev anchors {anchors.shape[0]}x20 GT", lambda: iou_bev(anchors, gt))

    truth = scene_objects(30, gen)
    det, _ = detections_around(truth, 300, gen)
    det, truth = det.to(device), truth.to(device)
    add("iou_3d 300 det x 30 GT (1 frame)", lambda: iou_3d(det, truth), "x3769 frames for KITTI val")

    boxes, scores = detections_around(scene, args.nms_boxes, gen)
    labels = torch.randint(0, 3, (args.nms_boxes,), generator=gen)
    boxes, scores, labels = boxes.to(device), scores.to(device), labels.to(device)
    for threshold in args.thresholds:
        kept = rotated_nms(boxes, scores, threshold).numel()
        add(
            f"rotated_nms {args.nms_boxes} clustered, thr {threshold}",
            lambda t=threshold: rotated_nms(boxes, scores, t),
            f"{kept} kept",
        )
    kept = batched_rotated_nms(boxes, scores, labels, 0.25, max_output=500).numel()
    add(
        f"batched_rotated_nms {args.nms_boxes} clustered, 3 classes, thr 0.25, max 500",
        lambda: batched_rotated_nms(boxes, scores, labels, 0.25, max_output=500),
        f"{kept} kept",
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda", "all"], default="all", help="all = cpu and cuda if present"
    )
    parser.add_argument("--iou-n", type=int, default=500)
    parser.add_argument("--iou-m", type=int, default=4096)
    parser.add_argument("--nms-boxes", type=int, default=4096)
    parser.add_argument("--objects", type=int, default=30, help="objects the clustered boxes surround")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.25, 0.5, 0.7])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.device == "cuda":
        parser.error("CUDA requested but torch.cuda.is_available() is False")

    rows = []
    for device in devices:
        print(f"benchmarking on {device} ...", file=sys.stderr)
        rows += run_device(args, device)

    print(f"Command: `python {shlex.join(sys.argv)}`")
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads{gpu}; median of {args.repeats} runs.\n"
    )
    print("| case | device | median ms | min ms | note |")
    print("|---|---|---:|---:|---|")
    for name, device, median, best, note in rows:
        print(f"| {name} | {device} | {median:.1f} | {best:.1f} | {note} |")


if __name__ == "__main__":
    main()
