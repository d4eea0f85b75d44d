"""XGD's kept share per class and component vs the whole-box rule, on the student's positives of a cached split.

For every frame of SPLIT and one cache view (default ``identity``), the student's positive anchors (the assigner
on the params grid), their cached teacher boxes and matched GT go through ``xgd_loss`` with ``distill.xgd``'s
options and with the whole-box baseline on the same IoU kind and thresholds (stereodistill/student/kept_share.py).

    python benchmarks/xgd_kept_share.py --params params.yaml --cache data/teacher_cache.zarr \\
        --split data/prepared/train.h5 [--view identity] [--json OUT]

Exits 1 with the reason when the cache cannot serve the split (another grid, frames or view).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stereodistill.cache.reader import TeacherCache
from stereodistill.data.prepared import PreparedSplit
from stereodistill.errors import StereoDistillError
from stereodistill.geometry.views import IDENTITY, KNOWN_VIEWS
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import load_params
from stereodistill.student.kept_share import format_kept_shares, xgd_kept_counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params.yaml (grid, distill.xgd)"
    )
    parser.add_argument("--cache", type=Path, required=True, help="teacher cache (Zarr store)")
    parser.add_argument(
        "--split", type=Path, required=True, help="prepared split the cache was written for (.h5)"
    )
    parser.add_argument("--view", choices=KNOWN_VIEWS, default=IDENTITY, help="cache view (default identity)")
    parser.add_argument("--json", type=Path, default=None, help="also write the shares here")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        grid = AnchorGrid.from_params(params.grid, params.source)
        split = PreparedSplit(args.split)
        cache = TeacherCache(args.cache)
        cache.validate(
            grid,
            [args.view],
            iou_floor_needed=min(c.matched_iou for c in grid.classes),
            frame_ids=split.frame_ids,
        )
        counts = xgd_kept_counts(split, cache, grid, params.distill.xgd, args.view)
    except (StereoDistillError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    x = params.distill.xgd
    print(
        f"{len(split)} frames of {args.split}, view {args.view}; XGD split {x.split}, {x.iou} IoU, thresholds "
        f"{list(x.thresholds) if not isinstance(x.thresholds, dict) else x.thresholds} (per grid class "
        f"{', '.join(grid.class_names)}); whole box: same IoU and thresholds"
    )
    print(format_kept_shares(counts))
    if args.json is not None:
        record = {
            "params": str(args.params),
            "cache": str(args.cache),
            "split": str(args.split),
            "view": args.view,
            "xgd": {"split": x.split, "iou": x.iou, "thresholds": x.thresholds},
            "shares": counts.shares(),
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
