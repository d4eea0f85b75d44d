"""How far the val frames alone move a run's AP and a paired difference: a bootstrap over the val frames.

Every draw takes ``--draw-frames`` frames of the split with replacement (default: as many as it has) and scores
every run's saved predictions on them, so one draw is the same yardstick for all runs and a pair's difference is
scored on the same frames. The spread of one run's AP over the draws is the part of a seed spread that the val
split alone causes; the spread of a pair's difference is the part of ``σ_d`` (the std of paired differences over
seeds) that it causes.

    python benchmarks/val_bootstrap.py --gt-split data/prepared/val.h5 \\
        --baseline pre/gt_only/seed0/predictions pre/gt_only/seed1/predictions ... \\
        [--compare pre/xgd_cld/seed0/predictions pre/xgd_cld/seed1/predictions ...] \\
        [--draws 20] [--draw-frames N] [--seed 0] [--class Car] [--metric 3d] [--difficulty moderate] \\
        [--row strict] [--json OUT]

``--compare`` runs pair with ``--baseline`` runs in the order given (same seed, another variant). The headline
figure is Car 3D moderate R40 strict; ``--class``, ``--metric``, ``--difficulty`` and ``--row`` pick another.
``--gt-dir`` (a KITTI ``label_2`` folder) replaces ``--gt-split`` for predictions of a KITTI copy.

Prints, and writes with ``--json``: each run's AP on the whole split and its bootstrap std; each pair's difference
and its bootstrap std; the root mean square of each over runs and pairs; the baseline runs' mean ± std and, with
pairs, ``σ_d``. Exits 1 naming the file when a prediction folder does not match the ground truth.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stereodistill.data.labels import KittiObject
from stereodistill.errors import StereoDistillError
from stereodistill.evaluation.breakdown import (
    ground_truth_from_folder,
    ground_truth_from_split,
    read_predictions,
)
from stereodistill.evaluation.kitti import evaluate_kitti

Frames = Mapping[str, Sequence[KittiObject]]


@dataclass(frozen=True)
class Figure:
    """Which AP the bootstrap follows (a key path into :func:`evaluate_kitti`'s results, R40)."""

    cls: str = "Car"
    metric: str = "3d"
    difficulty: str = "moderate"
    row: str = "strict"

    def of(self, gt: Frames, dt: Frames) -> float:
        results = evaluate_kitti(gt, dt, [self.cls])["results"]
        return float(results[self.cls][self.row]["R40"][self.metric][self.difficulty])


def drawn(frames: Frames, frame_ids: Sequence[str], draw: np.ndarray) -> dict[str, Sequence[KittiObject]]:
    """The frames ``frame_ids[draw]`` under keys of their own, so a frame drawn twice counts twice."""
    return {f"{frame_ids[j]}#{k}": frames.get(frame_ids[j], ()) for k, j in enumerate(draw)}


def bootstrap_aps(
    gt: Frames,
    runs: Mapping[str, Frames],
    figure: Figure,
    draws: int,
    draw_frames: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, list[float]]:
    """Run name -> its ``figure`` on each of ``draws`` resamples of ``gt``'s frames (the same resamples for all)."""
    frame_ids = sorted(gt)
    size = len(frame_ids) if draw_frames is None else draw_frames
    if size < 1 or draws < 2:
        raise ValueError(f"need at least one frame a draw and two draws, got {size} and {draws}")
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, len(frame_ids), size) for _ in range(draws)]
    aps: dict[str, list[float]] = {name: [] for name in runs}
    for sample in tqdm(samples, desc="bootstrap draws", disable=not progress):
        truth = drawn(gt, frame_ids, sample)
        for name, detections in runs.items():
            aps[name].append(figure.of(truth, drawn(detections, frame_ids, sample)))
    return aps


def root_mean_square(values: Sequence[float]) -> float:
    return math.sqrt(statistics.fmean(v * v for v in values))


def summarise(
    full: Mapping[str, float],
    draws: Mapping[str, list[float]],
    baseline: Sequence[str],
    compare: Sequence[str],
) -> dict:
    """Per run and per (baseline, compare) pair: the whole-split figure and its bootstrap std, and the summaries."""
    runs = {name: {"ap": full[name], "bootstrap_std": statistics.stdev(draws[name])} for name in full}
    pairs = []
    for base, other in zip(baseline, compare, strict=True):
        differences = np.subtract(draws[other], draws[base])
        pairs.append(
            {
                "baseline": base,
                "compare": other,
                "difference": full[other] - full[base],
                "bootstrap_std": float(np.std(differences, ddof=1)),
            }
        )
    base_aps = [full[name] for name in baseline]
    summary = {
        "runs": runs,
        "pairs": pairs,
        "bootstrap_std_of_a_run": root_mean_square([r["bootstrap_std"] for r in runs.values()]),
        "baseline": {
            "mean": statistics.fmean(base_aps),
            "std": statistics.stdev(base_aps) if len(base_aps) > 1 else None,
        },
    }
    if pairs:
        summary["bootstrap_std_of_a_difference"] = root_mean_square([p["bootstrap_std"] for p in pairs])
        summary["sigma_d"] = statistics.stdev(p["difference"] for p in pairs) if len(pairs) > 1 else None
    return summary


def format_summary(summary: dict) -> str:
    lines = ["run                                        AP   bootstrap std"]
    lines += [f"{name:<40} {r['ap']:6.2f}   {r['bootstrap_std']:6.2f}" for name, r in summary["runs"].items()]
    base = summary["baseline"]
    spread = "" if base["std"] is None else f" ± {base['std']:.2f}"
    lines.append(f"baseline runs: {base['mean']:.2f}{spread}")
    lines.append(
        f"the val frames move one run's AP by (bootstrap std, rms over runs): "
        f"{summary['bootstrap_std_of_a_run']:.2f}"
    )
    if summary["pairs"]:
        lines.append("pair                                       difference   bootstrap std")
        lines += [
            f"{p['compare']} - {p['baseline']}\n{'':<40} {p['difference']:+7.2f}   {p['bootstrap_std']:6.2f}"
            for p in summary["pairs"]
        ]
        if summary["sigma_d"] is not None:
            lines.append(f"sigma_d (std of the differences over pairs): {summary['sigma_d']:.2f}")
        lines.append(
            f"the val frames move a paired difference by (bootstrap std, rms over pairs): "
            f"{summary['bootstrap_std_of_a_difference']:.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    truth = parser.add_mutually_exclusive_group(required=True)
    truth.add_argument("--gt-split", type=Path, help="prepared split (.h5) the predictions are of")
    truth.add_argument("--gt-dir", type=Path, help="KITTI label_2 folder the predictions are of")
    parser.add_argument("--baseline", type=Path, nargs="+", required=True, help="prediction folders")
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="*",
        default=[],
        help="prediction folders paired with --baseline, in order",
    )
    parser.add_argument("--draws", type=int, default=20, help="bootstrap draws (default 20)")
    parser.add_argument("--draw-frames", type=int, default=None, help="frames a draw (default: the split's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws")
    parser.add_argument("--class", dest="cls", default="Car")
    parser.add_argument("--metric", default="3d", choices=("3d", "bev", "bbox"))
    parser.add_argument("--difficulty", default="moderate", choices=("easy", "moderate", "hard"))
    parser.add_argument("--row", default="strict", choices=("strict", "loose"))
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    if args.compare and len(args.compare) != len(args.baseline):
        parser.error(
            f"--compare needs one folder per --baseline folder ({len(args.baseline)}), "
            f"got {len(args.compare)}"
        )
    folders = [str(p) for p in [*args.baseline, *args.compare]]
    if len(set(folders)) != len(folders):
        parser.error("a prediction folder is given twice")
    figure = Figure(args.cls, args.metric, args.difficulty, args.row)
    try:
        gt = (
            ground_truth_from_split(args.gt_split) if args.gt_split else ground_truth_from_folder(args.gt_dir)
        )
        frame_ids = sorted(gt)
        runs = {name: read_predictions(name, frame_ids)[0] for name in folders}
        full = {name: figure.of(gt, dt) for name, dt in runs.items()}
        draws = bootstrap_aps(gt, runs, figure, args.draws, args.draw_frames, args.seed, progress=True)
    except (StereoDistillError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = summarise(full, draws, [str(p) for p in args.baseline], [str(p) for p in args.compare])
    summary = {
        "frames": len(frame_ids),
        "draws": args.draws,
        "draw_frames": args.draw_frames or len(frame_ids),
        "seed": args.seed,
        "figure": asdict(figure),
        **summary,
    }
    print(format_summary(summary))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
