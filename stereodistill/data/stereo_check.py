"""Does a stereo pair agree with its calibration? LiDAR-implied disparities against image matching.

For a LiDAR point seen by image_2, the calibration implies a disparity: the horizontal difference of its
projections with ``P2`` and ``P3`` (``f_u * baseline / depth`` up to KITTI's small per-camera offsets). The
images imply another one: the shift at which a patch of image_2 around the point best matches image_3 along
the same row. On a healthy frame the two agree to about a pixel for most points; swapped images, a right
image from another frame or a wrong ``P3`` make them disagree for most points.

The match is a zero-mean normalised cross-correlation of ``PATCH x PATCH`` grey patches, searched over the
integer disparities within ``BAND_PX + BAND_SHARE * d`` of the implied ``d`` (wide enough that a 25 %
baseline error stays inside the band, while the match of a swapped pair, at ``-d``, falls outside it) and
refined to sub-pixel by a parabola through the best score and its two neighbours. Points whose left patch
is textureless, or whose patches leave either image, are skipped; at most ``MAX_POINTS`` points per frame
are used (an evenly spaced, deterministic choice among the usable ones).

A frame is ``ok`` when it has at least ``MIN_POINTS`` usable points, the median absolute difference is at
most ``MAX_MEDIAN_ERROR_PX`` and at least ``MIN_SHARE_WITHIN_1PX`` of the points agree within one pixel.
Judging by the median and a share, not by every point, tolerates LiDAR points with no counterpart in
image_3 (occlusion edges, the LiDAR-camera parallax, moving objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stereodistill.geometry.calibration import Calibration

PATCH = 9  # side of the matched square patch (pixels, odd)
MAX_POINTS = 500  # points matched per frame
MIN_DEPTH = 2.0  # metres along image_2's optical axis; nearer points are skipped
MIN_PATCH_STD = 4.0  # grey levels (0-255); a flatter left patch is textureless and skipped
BAND_PX = 6.0  # search band half-width: BAND_PX + BAND_SHARE * implied disparity
BAND_SHARE = 0.5
# Thresholds, from the synthetic presets (22 default and 11 kitti frames, docs/USAGE.md): healthy frames measure
# a median of 0.43-0.71 px and a share of 0.63-0.78; swapped images, a right image from another frame and P3's
# baseline off by +-25 % measure a median of 3.2 px or more and a share of 0.084 or less. Both thresholds sit
# about 2x from each side.
MIN_POINTS = 20
MAX_MEDIAN_ERROR_PX = 1.5
MIN_SHARE_WITHIN_1PX = 0.35
_CHUNK = 64  # points matched at once (bounds the (chunk, candidates, PATCH^2) working array)


@dataclass(frozen=True)
class StereoAgreement:
    """Per-point results of :func:`stereo_agreement` for the ``M`` points that were matched."""

    uv: np.ndarray  # (M, 2) integer pixel (u, v) of each point in image_2
    implied: np.ndarray  # (M,) disparity the calibration implies (pixels)
    measured: np.ndarray  # (M,) disparity at which the images match best, sub-pixel

    @property
    def abs_error(self) -> np.ndarray:
        """``(M,)`` absolute difference between measured and implied disparity (pixels)."""
        return np.abs(self.measured - self.implied)

    def report(self) -> dict[str, Any]:
        """``{"points", "median_abs_error_px", "share_within_1px", "ok"}`` (the data check's ``stereo`` entry)."""
        n = len(self.implied)
        err = self.abs_error
        median = round(float(np.median(err)), 3) if n else None
        share = round(float(np.mean(err <= 1.0)), 3) if n else None
        ok = (
            n >= MIN_POINTS
            and median is not None
            and median <= MAX_MEDIAN_ERROR_PX
            and share is not None
            and share >= MIN_SHARE_WITHIN_1PX
        )
        return {"points": n, "median_abs_error_px": median, "share_within_1px": share, "ok": bool(ok)}


def to_grey(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB (or ``(H, W)``) -> ``(H, W)`` float32 luma (ITU-R 601 weights, 0-255)."""
    if image.ndim == 2:
        return image.astype(np.float32)
    return image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _patches(grey: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Patches ``(..., PATCH * PATCH)`` of ``grey`` centred on integer pixels ``u, v`` (same shape, in bounds)."""
    r = np.arange(PATCH) - PATCH // 2
    rows = v[..., None, None] + r[:, None]
    cols = u[..., None, None] + r[None, :]
    return grey[rows, cols].reshape(*u.shape, PATCH * PATCH)


def _normalised(patches: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm patches (flat patches stay zero, so they correlate 0 with everything)."""
    centred = patches - patches.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(centred, axis=-1, keepdims=True)
    return centred / np.maximum(norm, 1e-6)


def _candidates(
    calib: Calibration, points_velo: np.ndarray, grey_left: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer pixels ``(K,)`` u, v in image_2 and implied disparities ``(K,)`` of the usable points."""
    h, w = grey_left.shape
    half = PATCH // 2
    rect = calib.velo_to_rect(points_velo[:, :3])
    uv2, depth2 = calib.rect_to_image(rect, camera=2)
    seen = (depth2 > MIN_DEPTH) & (uv2[:, 0] > -0.5) & (uv2[:, 0] < w) & (uv2[:, 1] > -0.5) & (uv2[:, 1] < h)
    rect, uv2 = rect[seen], uv2[seen]
    uv3, depth3 = calib.rect_to_image(rect, camera=3)
    uv2, uv3 = uv2[depth3 > MIN_DEPTH], uv3[depth3 > MIN_DEPTH]
    implied = uv2[:, 0] - uv3[:, 0]
    u = np.rint(uv2[:, 0])
    v = np.rint(uv2[:, 1])
    band = BAND_PX + BAND_SHARE * np.abs(implied)
    # the left patch and the right patch at every disparity of the band must lie inside the images
    inside = (
        (v >= half)
        & (v < h - half)
        & (u >= half)
        & (u < w - half)
        & (u - implied - band >= half)
        & (u - implied + band < w - half)
    )
    u, v, implied = u[inside].astype(np.int64), v[inside].astype(np.int64), implied[inside]
    textured = _patches(grey_left, u, v).std(axis=-1) >= MIN_PATCH_STD
    return u[textured], v[textured], implied[textured]


def _match(
    grey_left: np.ndarray, grey_right: np.ndarray, u: np.ndarray, v: np.ndarray, implied: np.ndarray
) -> np.ndarray:
    """Sub-pixel disparity ``(M,)`` at which image_3 best matches image_2's patch at each ``(u, v)``."""
    measured = np.empty(len(u))
    for start in range(0, len(u), _CHUNK):
        sl = slice(start, start + _CHUNK)
        cu, cv, d = u[sl], v[sl], implied[sl]
        band = BAND_PX + BAND_SHARE * np.abs(d)
        lo = np.ceil(d - band).astype(np.int64)
        hi = np.floor(d + band).astype(np.int64)
        offsets = np.arange(int((hi - lo).max()) + 1)
        disparities = lo[:, None] + offsets  # (C, K)
        valid = disparities <= hi[:, None]
        right_u = np.where(valid, cu[:, None] - disparities, cu[:, None] - lo[:, None])
        left = _normalised(_patches(grey_left, cu, cv))  # (C, P^2)
        right = _normalised(_patches(grey_right, right_u, np.broadcast_to(cv[:, None], right_u.shape)))
        score = np.einsum("cp,ckp->ck", left, right)
        score[~valid] = -np.inf
        best = score.argmax(axis=1)
        rows = np.arange(len(cu))
        shift = np.zeros(len(cu))
        inner = (best > 0) & (best + 1 < valid.sum(axis=1))
        if inner.any():
            s0 = score[rows[inner], best[inner] - 1]
            s1 = score[rows[inner], best[inner]]
            s2 = score[rows[inner], best[inner] + 1]
            curvature = s0 - 2 * s1 + s2
            with np.errstate(divide="ignore", invalid="ignore"):
                peak = np.where(curvature < 0, 0.5 * (s0 - s2) / curvature, 0.0)
            shift[inner] = np.clip(peak, -0.5, 0.5)
        measured[sl] = disparities[rows, best] + shift
    return measured


def stereo_agreement(
    left: np.ndarray, right: np.ndarray, calib: Calibration, points_velo: np.ndarray
) -> StereoAgreement:
    """Match up to ``MAX_POINTS`` LiDAR points between image_2 ``left`` and image_3 ``right`` ``(H, W, 3)``.

    ``points_velo`` is ``(N, >=3)`` in the Velodyne frame. Deterministic: same inputs, same points, same result.
    """
    grey_left, grey_right = to_grey(left), to_grey(right)
    u, v, implied = _candidates(calib, points_velo, grey_left)
    if len(u) > MAX_POINTS:
        keep = np.linspace(0, len(u) - 1, MAX_POINTS).round().astype(np.int64)
        u, v, implied = u[keep], v[keep], implied[keep]
    measured = _match(grey_left, grey_right, u, v, implied) if len(u) else np.empty(0)
    return StereoAgreement(np.stack([u, v], axis=-1), implied, measured)
