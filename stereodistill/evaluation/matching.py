"""The devkit's greedy ground-truth -> detection assignment, vectorised over frames and score thresholds.

The devkit (``computeStatistics``) walks the ground truth of a frame in file order; each object that is not
irrelevant takes one unassigned candidate detection (overlap strictly above the minimum overlap, detection
not irrelevant, and, when counting false positives, score >= the threshold):

- when collecting true-positive scores (``compute_fp = false``): the candidate with the highest score,
  the first in file order among equal scores;
- when counting at a threshold (``compute_fp = true``): the valid candidate with the largest overlap (first
  among equal overlaps); only if there is none, the first ignored candidate (too small a 2D box).

An assignment is a true positive if both the ground truth and the detection are valid; otherwise it just
consumes both (neither TP, FN nor FP). A valid ground truth left without a detection is a false negative;
a valid detection above the threshold left unassigned is a false positive unless (2D metric only) a
DontCare region covers more than the minimum overlap of its box.

Each of those choices is "the first available candidate in a fixed priority order", so candidates (pairs)
are sorted once by (round, ground truth, priority), where the round of a ground truth is its rank among the
frame's ground truth that has candidates. All frames play a round at once (their detections are disjoint),
and ``np.minimum.reduceat`` picks the first available candidate of every ground truth, for every threshold
at once. The only Python loop is over rounds (the largest number of matchable objects in one frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stereodistill.evaluation.protocol import VALID

_NONE = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Candidates:
    """Matchable (ground truth, detection) pairs of one class, difficulty, metric and minimum overlap.

    ``gt (E,)``, ``dt (E,)`` row indices of pairs whose overlap ``(E,)`` exceeds the minimum overlap, neither
    being irrelevant. ``gt_frame (Ng,)`` is non-decreasing; ``gt_flags (Ng,)`` and ``dt_flags (Nd,)`` are the
    protocol's ignore flags, ``dt_score (Nd,)`` the detection scores.
    """

    gt: np.ndarray
    dt: np.ndarray
    overlap: np.ndarray
    gt_frame: np.ndarray
    gt_flags: np.ndarray
    dt_flags: np.ndarray
    dt_score: np.ndarray


@dataclass(frozen=True)
class ThresholdCounts:
    """Totals over all frames at each score threshold ``(T,)``: TP, FP and summed orientation similarity of TPs.

    (False negatives are not needed: recall enters AP only through the choice of thresholds.)
    """

    tp: np.ndarray
    fp: np.ndarray
    similarity: np.ndarray


def _rounds(order: np.ndarray, gt: np.ndarray, rank: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split sorted pairs into rounds: per round, the pair positions and the start of each ground truth's run."""
    gt_sorted, rank_sorted = gt[order], rank[order]
    round_starts = np.flatnonzero(np.r_[True, rank_sorted[1:] != rank_sorted[:-1]])
    round_ends = np.r_[round_starts[1:], order.size]
    rounds = []
    for start, end in zip(round_starts, round_ends, strict=True):
        g = gt_sorted[start:end]
        runs = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        rounds.append((order[start:end], runs))
    return rounds


def _ground_truth_rank(candidates: Candidates) -> np.ndarray:
    """Per pair ``(E,)``: rank of its ground truth among the ground truth with candidates in the same frame."""
    matchable = np.unique(candidates.gt)
    frame = candidates.gt_frame[matchable]
    rank = np.arange(matchable.size) - np.searchsorted(frame, frame, side="left")
    return rank[np.searchsorted(matchable, candidates.gt)]


def true_positive_scores(candidates: Candidates) -> np.ndarray:
    """Scores of the true positives when every detection counts (the devkit's first pass), unsorted."""
    if candidates.gt.size == 0:
        return np.zeros(0)
    c = candidates
    rank = _ground_truth_rank(c)
    score = c.dt_score[c.dt]
    order = np.lexsort((c.dt, -score, c.gt, rank))
    assigned = np.zeros(c.dt_flags.shape[0], dtype=bool)
    scores = []
    for pairs, runs in _rounds(order, c.gt, rank):
        available = np.where(~assigned[c.dt[pairs]], np.arange(pairs.size), _NONE)
        first = np.minimum.reduceat(available, runs)
        chosen = pairs[first[first != _NONE]]
        gt, dt = c.gt[chosen], c.dt[chosen]
        assigned[dt] = True
        true_positive = (c.gt_flags[gt] == VALID) & (c.dt_flags[dt] == VALID)
        scores.append(c.dt_score[dt[true_positive]])
    return np.concatenate(scores)


def counts_at_thresholds(
    candidates: Candidates,
    thresholds: np.ndarray,
    dt_in_dontcare: np.ndarray,
    pair_similarity: np.ndarray | None = None,
) -> ThresholdCounts:
    """TP/FP (and orientation similarity of the TPs) at each threshold ``(T,)``, detections with score >= it.

    ``dt_in_dontcare (Nd,)`` marks detections that a DontCare region absorbs when left unassigned (all False
    for BEV and 3D); ``pair_similarity (E,)`` is ``(1 + cos(alpha_gt - alpha_dt)) / 2`` per pair, or None.
    """
    c = candidates
    num_thresholds = thresholds.shape[0]
    # Detections that would be FPs if nothing took them: valid, not absorbed by DontCare, score >= threshold.
    fp_candidate_scores = np.sort(c.dt_score[(c.dt_flags == VALID) & ~dt_in_dontcare])
    unassigned_fp = fp_candidate_scores.size - np.searchsorted(fp_candidate_scores, thresholds, side="left")
    tp = np.zeros(num_thresholds, dtype=np.int64)
    fp_taken = np.zeros(num_thresholds, dtype=np.int64)
    similarity = np.zeros(num_thresholds)
    if c.gt.size and num_thresholds:
        rank = _ground_truth_rank(c)
        valid_dt = c.dt_flags[c.dt] == VALID
        # Priority: valid detections by decreasing overlap, then ignored ones; file order breaks ties.
        order = np.lexsort(
            (c.dt, np.where(valid_dt, -c.overlap, 0.0), (~valid_dt).astype(np.int8), c.gt, rank)
        )
        # A pair is active from the first threshold <= its score on (thresholds are non-increasing).
        first_active = np.searchsorted(-thresholds, -c.dt_score[c.dt], side="left")
        dt_slot = np.unique(c.dt, return_inverse=True)[1]
        assigned = np.zeros((num_thresholds, int(dt_slot.max()) + 1), dtype=bool)
        threshold_index = np.arange(num_thresholds)[:, None]
        for pairs, runs in _rounds(order, c.gt, rank):
            slots = dt_slot[pairs]
            available = (threshold_index >= first_active[pairs]) & ~assigned[:, slots]
            first = np.minimum.reduceat(np.where(available, np.arange(pairs.size), _NONE), runs, axis=1)
            at, run = np.nonzero(first != _NONE)
            position = first[at, run]
            chosen = pairs[position]
            assigned[at, slots[position]] = True
            gt_valid = c.gt_flags[c.gt[chosen]] == VALID
            is_tp = gt_valid & valid_dt[chosen]
            tp += np.bincount(at[is_tp], minlength=num_thresholds)
            counted_in_fp = valid_dt[chosen] & ~dt_in_dontcare[c.dt[chosen]]
            fp_taken += np.bincount(at[counted_in_fp], minlength=num_thresholds)
            if pair_similarity is not None:
                similarity += np.bincount(
                    at[is_tp], weights=pair_similarity[chosen[is_tp]], minlength=num_thresholds
                )
    return ThresholdCounts(tp=tp, fp=unassigned_fp - fp_taken, similarity=similarity)
