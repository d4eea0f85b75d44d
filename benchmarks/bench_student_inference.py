"""Student inference per frame at batch sizes 1, 2 and 4: why ``predict_to_kitti`` batches two frames.

Loads a trained student (``--student``, default the pipeline's ``models/student/student.pt``) and times
``detect_frames`` over the first ``--frames`` frames of the evaluation split, each batch size in turn, ``--rounds``
times interleaved so that a change in the machine's load hits every batch size alike. Reports the median seconds
per frame of each batch size and its ratio to batch 1, and checks that the batch sizes detect the same boxes
(scores within ``1e-3``; the convolutions' rounding differs between batch sizes, so a box at the score threshold
may come and go: such frames are counted).

    python benchmarks/bench_student_inference.py [--params params.yaml] [--student PATH] [--frames 16]
        [--rounds 3] [--threads 1] [--json OUT]

Exits non-zero when the batch sizes disagree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from stereodistill.evaluation.stage import evaluation_split
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import load_params
from stereodistill.student.checkpoint import load_student
from stereodistill.student.predict import detect_frames

BATCH_SIZES = (1, 2, 4)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--student", type=Path, default=None, help="default: {student.out_dir}/student.pt")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    grid = AnchorGrid.from_params(params.grid, params.source)
    path = args.student or Path(params.student.out_dir) / "student.pt"
    model, ckpt = load_student(path, torch.device("cpu"), grid)
    image_scale = int(ckpt.get("settings", {}).get("image_scale", 1))
    split = evaluation_split(params)
    frames = min(args.frames, len(split))
    seconds: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    scores: dict[int, list[torch.Tensor]] = {}
    for _ in range(args.rounds):
        for batch in BATCH_SIZES:
            start = time.perf_counter()
            found = []
            for first in range(0, frames, batch):
                indices = list(range(first, min(first + batch, frames)))
                found += detect_frames(model, split, indices, params.student.decode, image_scale)
            seconds[batch].append((time.perf_counter() - start) / frames)
            scores[batch] = [d.scores for d in found]
    median = {b: statistics.median(s) for b, s in seconds.items()}
    # A box whose score sits at the decode threshold may appear in one batch size only; such frames are counted,
    # and the others compared score by score.
    worst, other_count = 0.0, 0
    for batch in BATCH_SIZES[1:]:
        for a, b in zip(scores[1], scores[batch], strict=True):
            if a.shape != b.shape:
                other_count += 1
            elif len(a):
                worst = max(worst, float((a - b).abs().max()))
    result = {
        "student": str(path),
        "frames": frames,
        "threads": args.threads,
        "seconds_per_frame": {str(b): median[b] for b in BATCH_SIZES},
        "speedup_over_batch_1": {str(b): median[1] / median[b] for b in BATCH_SIZES},
        "max_score_difference": worst,
        "frames_with_another_box_count": other_count,
    }
    for b in BATCH_SIZES:
        print(f"batch {b}: {median[b]:.3f} s/frame ({median[1] / median[b]:.2f}x batch 1)")
    print(
        f"largest score difference against batch 1: {worst:.2e}; frames with another box count: {other_count}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if worst <= 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
