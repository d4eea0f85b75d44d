"""Human-readable table and JSON file of an evaluation result (the dict of ``evaluate_kitti``)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from stereodistill.evaluation.protocol import DIFFICULTIES, ROWS

# Table rows: (label, metric key), in the familiar order of the KITTI tools.
_TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("bbox", "bbox"),
    ("bev ", "bev"),
    ("3d  ", "3d"),
    ("aos ", "aos"),
)


def format_table(evaluation: dict) -> str:
    """The familiar KITTI table: per class and row, ``bbox/bev/3d/aos`` AP for easy, moderate, hard, R11 and R40.

    Example block::

        Car AP_R11@0.70, 0.70, 0.70:
        bbox AP:90.9091, 81.8182, 81.8182
        ...
    """
    lines = []
    for cls, rows in evaluation["results"].items():
        for row in ROWS:
            overlaps = evaluation["min_overlaps"][cls][row]
            thresholds = f"{overlaps['bbox']:.2f}, {overlaps['bev']:.2f}, {overlaps['3d']:.2f}"
            for average in ("R11", "R40"):
                lines.append(f"{cls} AP_{average}@{thresholds}:")
                for label, metric in _TABLE_METRICS:
                    values = rows[row][average][metric]
                    if any(values[d] is None for d in DIFFICULTIES):
                        continue
                    lines.append(f"{label} AP:" + ", ".join(f"{values[d]:.4f}" for d in DIFFICULTIES))
        counts = evaluation["num_gt"][cls]
        lines.append(f"{cls} ground truth: " + ", ".join(f"{d} {counts[d]}" for d in DIFFICULTIES))
    return "\n".join(lines)


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write ``data`` as indented JSON to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
