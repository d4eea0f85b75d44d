"""Do a trained student's BEV features carry the box codes? A linear probe at the positive anchors of one class.

For each frame of a prepared split, the student (no flip, its training ``image_scale``) computes its BEV features
``(C, ny, nx)``; at every positive anchor of ``--class`` (the assigner's, as in training) the probe takes the
3 x 3 neighbourhood of the anchor's cell (``9 C`` numbers: what the head's 3 x 3 convolutions see) and the
anchor's residual box codes (x, y, z, l, w, h; ``head/box_coder.py``). A ridge regression fitted on the first
split's positives predicts the codes of the second split's; the script prints, per code, the correlation
between probe and target on both splits, and the same for the head's own box output.

A code the probe predicts on the fitting split but not on the other is not carried by the features in a way
that generalises; a code the probe predicts on both but the head does not is a head problem.

    python benchmarks/probe_box_features.py --student models/student/student.pt \\
        --fit data/prepared/train.h5 --test data/prepared/val.h5 [--frames 40] [--class Car] [--ridge 100]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

from stereodistill.data.prepared import PreparedSplit
from stereodistill.student.checkpoint import load_student
from stereodistill.student.dataset import StudentFrames, batch_inputs
from stereodistill.student.model import StereoStudent

CODES = ("x", "y", "z", "l", "w", "h")


def anchor_cells(model: StereoStudent) -> torch.Tensor:
    """The BEV cell index ``y * nx + x`` of every anchor, in the grid's anchor order ``(N,)``."""
    grid = model.grid
    cells = torch.arange(grid.ny * grid.nx, dtype=torch.float64).view(1, 1, grid.ny, grid.nx)
    dense = cells.repeat(1, grid.anchors_per_cell, 1, 1)
    return grid.flatten_dense(dense, 1)[0, :, 0].long()


@torch.no_grad()
def collect(
    model: StereoStudent, path: str, frames: int, class_id: int, image_scale: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbourhood features ``(P, 9 C)``, target codes ``(P, 6)`` and the head's codes ``(P, 6)`` at the
    positives of ``class_id`` in the first ``frames`` frames of the split at ``path``."""
    grid = model.grid
    samples = StudentFrames(PreparedSplit(path), 0.0, image_scale, 0, None, 0, grid=grid)
    samples.set_epoch(1)
    cells = anchor_cells(model)
    features, targets, head_codes = [], [], []
    for i in range(min(frames, len(samples))):
        s = samples[i]
        positive = torch.nonzero(s.targets.labels == class_id).flatten()
        if positive.numel() == 0:
            continue
        inputs = batch_inputs([s.left], [s.right], [s.calib], "cpu")
        out = model(inputs.left, inputs.right, inputs.P2, inputs.baseline)
        padded = F.pad(out.bev_features[0], (1, 1, 1, 1))
        y, x = cells[positive] // grid.nx, cells[positive] % grid.nx
        window = [padded[:, y + dy, x + dx] for dy in range(3) for dx in range(3)]  # 9 x (C, P)
        features.append(torch.cat(window).T.numpy())
        targets.append(s.targets.box_targets[positive, :6].numpy())
        head_codes.append(model.head.flatten(out.head).box[0, positive, :6].numpy())
    if not features:
        raise SystemExit(f"{path}: no positive anchors of class {class_id} in the first {frames} frames")
    return np.concatenate(features), np.concatenate(targets), np.concatenate(head_codes)


def ridge_fit_predict(
    fit_x: np.ndarray, fit_y: np.ndarray, xs: list[np.ndarray], ridge: float
) -> list[np.ndarray]:
    """Standardise on ``fit_x``, solve ridge regression with a bias, and predict each of ``xs``."""
    mean, std = fit_x.mean(0), fit_x.std(0) + 1e-6

    def design(x: np.ndarray) -> np.ndarray:
        return np.c_[(x - mean) / std, np.ones(len(x))]

    a = design(fit_x)
    weights = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ fit_y)
    return [design(x) @ weights for x in xs]


def correlations(prediction: np.ndarray, target: np.ndarray) -> list[float]:
    return [float(np.corrcoef(prediction[:, j], target[:, j])[0, 1]) for j in range(target.shape[1])]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--student", required=True)
    parser.add_argument("--fit", required=True, help="prepared split the probe is fitted on")
    parser.add_argument("--test", required=True, help="prepared split the probe is tested on")
    parser.add_argument("--frames", type=int, default=40, help="frames read from each split")
    parser.add_argument("--class", dest="cls", default="Car")
    parser.add_argument("--ridge", type=float, default=100.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, ckpt = load_student(args.student)
    class_id = model.grid.class_names.index(args.cls)
    scale = int(ckpt["settings"]["image_scale"])
    fit_x, fit_y, fit_head = collect(model, args.fit, args.frames, class_id, scale)
    test_x, test_y, test_head = collect(model, args.test, args.frames, class_id, scale)
    fit_probe, test_probe = ridge_fit_predict(fit_x, fit_y, [fit_x, test_x], args.ridge)
    print(f"{args.cls} positives: fit {len(fit_y)}, test {len(test_y)}; features {fit_x.shape[1]}")
    print("correlation with the target code, fit / test:")
    print("            " + "".join(f"{c:>13}" for c in CODES))
    rows = {
        "probe": (correlations(fit_probe, fit_y), correlations(test_probe, test_y)),
        "head": (correlations(fit_head, fit_y), correlations(test_head, test_y)),
    }
    for name, (fit, test) in rows.items():
        print(f"{name:<12}" + "".join(f"{a:>7.2f} /{b:>4.2f}" for a, b in zip(fit, test, strict=True)))
    print(
        "target std (test): " + "  ".join(f"{c} {s:.3f}" for c, s in zip(CODES, test_y.std(0), strict=True))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
