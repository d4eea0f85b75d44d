"""Procedural textures: hashed value noise, footprint-filtered fractal noise and box-filtered stripes.

All textures are functions of world (or object-frame) coordinates, so the left and right images see the
same pattern on the same surface. Anti-aliasing is analytic: each evaluation gets the pixel *footprint*
(metres covered by one pixel at the hit point); noise octaves finer than the footprint fade to their mean
and stripes are box-filtered over it.
"""

from __future__ import annotations

import numpy as np

_M1, _M2, _M3 = np.uint32(0x8DA6B343), np.uint32(0xD8163841), np.uint32(0xCB1AB31F)


def _hash(seed: int, *coords: np.ndarray) -> np.ndarray:
    """Integer lattice coordinates (int64 arrays, same shape) -> pseudo-random floats in [0, 1]."""
    h = np.full(coords[0].shape, np.uint32(seed & 0xFFFFFFFF), dtype=np.uint32)
    for c, m in zip(coords, (_M1, _M2, _M3), strict=False):
        h ^= c.astype(np.uint32) * m
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    return h.astype(np.float64) * (1.0 / 4294967295.0)


def _smooth(f: np.ndarray) -> np.ndarray:
    return f * f * (3.0 - 2.0 * f)


def value_noise(points: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1] at ``points (M, D)`` (D = 2 or 3), one lattice cell per unit."""
    base = np.floor(points)
    cell = base.astype(np.int64)
    f = _smooth(points - base)
    if points.shape[1] == 2:
        x, y = cell[:, 0], cell[:, 1]
        v00, v10 = _hash(seed, x, y), _hash(seed, x + 1, y)
        v01, v11 = _hash(seed, x, y + 1), _hash(seed, x + 1, y + 1)
        fx, fy = f[:, 0], f[:, 1]
        return (v00 + fx * (v10 - v00)) * (1 - fy) + (v01 + fx * (v11 - v01)) * fy
    x, y, z = cell[:, 0], cell[:, 1], cell[:, 2]
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    out = np.zeros(len(points))
    for dz, wz in ((0, 1 - fz), (1, fz)):
        v00, v10 = _hash(seed, x, y, z + dz), _hash(seed, x + 1, y, z + dz)
        v01, v11 = _hash(seed, x, y + 1, z + dz), _hash(seed, x + 1, y + 1, z + dz)
        out += wz * ((v00 + fx * (v10 - v00)) * (1 - fy) + (v01 + fx * (v11 - v01)) * fy)
    return out


def fractal_noise(
    points: np.ndarray,
    frequency: np.ndarray | float,
    octaves: int,
    footprint: np.ndarray,
    seed: int,
    persistence: float = 0.5,
) -> np.ndarray:
    """Zero-mean fractal noise in about [-1, 1] at ``points (M, D)``.

    ``frequency`` (scalar or ``(M,)``, cycles per metre) is the first octave's; each further octave doubles
    it and multiplies the amplitude by ``persistence``. An octave whose wavelength is under two footprints fades out (it would
    alias), which also makes distant surfaces smoother, as in a real camera.
    """
    freq = np.broadcast_to(np.asarray(frequency, dtype=np.float64), footprint.shape)
    total = np.zeros(len(points))
    amplitude = 0.5
    for octave in range(octaves):
        f = freq * 2.0**octave
        weight = np.clip(1.0 / np.maximum(f * footprint, 1e-9) - 1.0, 0.0, 1.0)
        live = np.flatnonzero(weight > 0)
        if live.size == 0:
            break
        n = value_noise(points[live] * f[live, None], seed + 7919 * octave)
        total[live] += amplitude * weight[live] * (2.0 * n - 1.0)
        amplitude *= persistence
    return total


def _periodic_integral(x: np.ndarray, period: float | np.ndarray, on: float | np.ndarray) -> np.ndarray:
    """Integral from 0 to ``x`` of the indicator of ``[k * period, k * period + on)``."""
    return np.floor(x / period) * on + np.clip(np.mod(x, period), 0.0, on)


def stripe_coverage(x: np.ndarray, start: float, stop: float, footprint: np.ndarray) -> np.ndarray:
    """Fraction of ``[x - fp/2, x + fp/2]`` inside ``[start, stop]`` (a box-filtered single stripe)."""
    half = footprint / 2.0
    return (np.clip(x + half, start, stop) - np.clip(x - half, start, stop)) / footprint


def periodic_coverage(
    x: np.ndarray,
    period: float | np.ndarray,
    on: float | np.ndarray,
    footprint: np.ndarray,
    phase: float = 0.0,
) -> np.ndarray:
    """Fraction of ``[x - fp/2, x + fp/2]`` inside the stripes ``[phase + k * period, ... + on)``."""
    half = footprint / 2.0
    hi = _periodic_integral(x + half - phase, period, on)
    lo = _periodic_integral(x - half - phase, period, on)
    return (hi - lo) / footprint


def cell_random(points: np.ndarray, period: float | np.ndarray, seed: int) -> np.ndarray:
    """A random value in [0, 1] constant over each ``period``-sized cell of ``points (M, D)``."""
    cells = np.floor(points / np.asarray(period)).astype(np.int64)
    return _hash(seed, *(cells[:, i] for i in range(points.shape[1])))
