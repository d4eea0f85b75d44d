"""Score thresholds, interpolated precision curves and 11-/40-point average precision, as in the devkit.

The devkit samples the precision-recall curve at (at most) ``N_SAMPLE_PTS = 41`` score thresholds picked
from the sorted true-positive scores (``getThresholds``): walking down the scores, it keeps a score when
its recall ``(i + 1) / n_gt`` is at least as close to the next target recall (0, 1/40, 2/40, ...) as the
following score's recall is, then moves the target on by 1/40. The precision at the ``k``-th kept threshold
goes into slot ``k`` of a 41-slot array (slots after the last threshold stay 0), and each slot is replaced
by the maximum over itself and all later slots. So slot ``k`` stands for recall ``k / 40`` only when there
are more than 40 ground-truth objects: with ``n_gt <= 40`` every true positive is a threshold and at most
``n_gt`` slots are non-zero, which caps AP (a perfect detector on 1 object: R40 = 0, R11 = 100/11).

AP R11 is the mean of slots 0, 4, ..., 40 (the devkit's 11-point AP); AP R40 the mean of slots 1 ... 40,
as the KITTI server computes it since 2019. Both are reported in percent.
"""

from __future__ import annotations

import numpy as np

N_SAMPLE_PTS = 41


def score_thresholds(tp_scores: np.ndarray, num_valid_gt: int) -> np.ndarray:
    """The devkit's ``getThresholds``: non-increasing score thresholds ``(T,)``, ``T <= 41``, from TP scores."""
    scores = np.sort(np.asarray(tp_scores, dtype=np.float64))[::-1]
    if num_valid_gt <= 0:
        return np.zeros(0)
    kept = []
    current_recall = 0.0
    last = scores.size - 1
    for i, score in enumerate(scores.tolist()):
        left_recall = (i + 1) / num_valid_gt
        right_recall = (i + 2) / num_valid_gt if i < last else left_recall
        # Skip this score if the next one's recall is closer to the target recall.
        if i < last and (right_recall - current_recall) < (current_recall - left_recall):
            continue
        kept.append(score)
        current_recall += 1.0 / (N_SAMPLE_PTS - 1.0)
    return np.array(kept[:N_SAMPLE_PTS], dtype=np.float64)


def interpolated_curve(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """41-slot curve ``numerator / denominator`` per threshold, then max over each slot and all later ones.

    ``numerator`` is TP count (precision) or summed orientation similarity (AOS), ``denominator`` TP + FP,
    both ``(T,)`` with ``T <= 41``. A threshold with no TP and no FP gives 0.
    """
    curve = np.zeros(N_SAMPLE_PTS)
    t = numerator.shape[0]
    denominator = np.asarray(denominator, dtype=np.float64)
    curve[:t] = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)
    return np.maximum.accumulate(curve[::-1])[::-1]


def average_precision_r11(curve: np.ndarray) -> float:
    """11-point AP in percent: mean of slots 0, 4, ..., 40 of an interpolated 41-slot curve."""
    return float(sum(curve[0:N_SAMPLE_PTS:4].tolist()) / 11 * 100)


def average_precision_r40(curve: np.ndarray) -> float:
    """40-point AP in percent: mean of slots 1, ..., 40 of an interpolated 41-slot curve."""
    return float(sum(curve[1:N_SAMPLE_PTS].tolist()) / 40 * 100)
