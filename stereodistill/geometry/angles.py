"""Angles (torch-free: the settings layer imports the view names, which mirror headings)."""

from __future__ import annotations

import math

import numpy as np


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Wrap angles to ``[-pi, pi)`` (float64)."""
    return (np.asarray(angle, dtype=np.float64) + math.pi) % (2 * math.pi) - math.pi
