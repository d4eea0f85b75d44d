"""Residual box coder and the 2-bin direction classifier (SECOND / LIGA-Stereo, see docs/METHOD.md §2.3).

Boxes and anchors are project boxes ``(..., 7)``: ``x, y, z_centre, l, w, h, heading``. A box is encoded
against an anchor ``a`` as

    d_a = sqrt(l_a^2 + w_a^2)
    t_x = (x - x_a) / d_a,   t_y = (y - y_a) / d_a,   t_z = (z - z_a) / h_a
    t_l = ln(l / l_a),       t_w = ln(w / w_a),       t_h = ln(h / h_a)
    t_theta = wrap(heading - heading_a)

where ``wrap`` maps to ``[-pi, pi)`` (LIGA's ``limit_period(., 0.5, 2 pi)``; OpenPCDet leaves the residual
unwrapped). The wrap keeps the regression target small when a GT heading and an anchor rotation lie on
opposite sides of the ``-pi / pi`` seam. Decoding inverts this and wraps the heading to ``[-pi, pi)`` again,
so ``decode_boxes(encode_boxes(b, a), a) == b`` up to float rounding for boxes in the project convention.

The regression loss only sees ``sin(t_theta_pred - t_theta)``, so the regressed heading is known modulo pi;
the direction classifier picks the half-turn. Its two bins split the circle at ``pi/4`` (SECOND's
``DIR_OFFSET``): bin 0 holds headings in ``[pi/4, 5pi/4)``, bin 1 the rest.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CODE_SIZE = 7
CODE_NAMES = ("x", "y", "z", "l", "w", "h", "heading")  # the residual codes, in order
DIR_OFFSET = math.pi / 4
NUM_DIR_BINS = 2

# Decoding clamps the log-size codes so an untrained head cannot overflow exp() to inf (which would poison NMS).
# A factor of 1000 over the anchor size is far beyond any real object.
_MAX_LOG_SCALE = math.log(1000.0)


def limit_period(value: Tensor, offset: float, period: float) -> Tensor:
    """``value - floor(value / period + offset) * period``: maps to ``[-offset * period, (1 - offset) * period)``."""
    return value - torch.floor(value / period + offset) * period


def wrap_heading(heading: Tensor) -> Tensor:
    """Wrap angles to ``[-pi, pi)``."""
    return limit_period(heading, 0.5, 2 * math.pi)


def _check_last_dim(name: str, t: Tensor, size: int) -> None:
    if t.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size}), got {tuple(t.shape)}")


def encode_boxes(boxes: Tensor, anchors: Tensor) -> Tensor:
    """Regression targets ``(..., 7)`` of project boxes ``(..., 7)`` against anchors ``(..., 7)`` (broadcast)."""
    _check_last_dim("boxes", boxes, CODE_SIZE)
    _check_last_dim("anchors", anchors, CODE_SIZE)
    xa, ya, za, la, wa, ha, ra = anchors.unbind(-1)
    xg, yg, zg, lg, wg, hg, rg = boxes.unbind(-1)
    diagonal = torch.sqrt(la * la + wa * wa)
    return torch.stack(
        [
            (xg - xa) / diagonal,
            (yg - ya) / diagonal,
            (zg - za) / ha,
            torch.log(lg / la),
            torch.log(wg / wa),
            torch.log(hg / ha),
            wrap_heading(rg - ra),
        ],
        dim=-1,
    )


def decode_boxes(codes: Tensor, anchors: Tensor) -> Tensor:
    """Project boxes ``(..., 7)`` from regression codes ``(..., 7)`` and anchors ``(..., 7)``; heading in ``[-pi, pi)``."""
    _check_last_dim("codes", codes, CODE_SIZE)
    _check_last_dim("anchors", anchors, CODE_SIZE)
    xa, ya, za, la, wa, ha, ra = anchors.unbind(-1)
    tx, ty, tz, tl, tw, th, tr = codes.unbind(-1)
    diagonal = torch.sqrt(la * la + wa * wa)
    return torch.stack(
        [
            tx * diagonal + xa,
            ty * diagonal + ya,
            tz * ha + za,
            torch.exp(tl.clamp(max=_MAX_LOG_SCALE)) * la,
            torch.exp(tw.clamp(max=_MAX_LOG_SCALE)) * wa,
            torch.exp(th.clamp(max=_MAX_LOG_SCALE)) * ha,
            wrap_heading(tr + ra),
        ],
        dim=-1,
    )


def direction_target(heading: Tensor) -> Tensor:
    """Direction bin (long, same shape) of headings: 0 for ``[pi/4, 5pi/4)`` mod 2pi, else 1."""
    shifted = limit_period(heading - DIR_OFFSET, 0.0, 2 * math.pi)
    return torch.floor(shifted / math.pi).long().clamp(0, NUM_DIR_BINS - 1)


def apply_direction(heading: Tensor, dir_bin: Tensor) -> Tensor:
    """Resolve a heading known modulo pi with its direction bin; result wrapped to ``[-pi, pi)``.

    The heading is first moved into ``[pi/4, 5pi/4)`` (bin 0's half-turn), then bin 1 adds pi. So
    ``apply_direction(h, direction_target(h)) == wrap(h)`` and ``apply_direction(h + pi, b) == apply_direction(h, b)``.
    """
    base = limit_period(heading - DIR_OFFSET, 0.0, math.pi) + DIR_OFFSET
    return wrap_heading(base + math.pi * dir_bin.to(base.dtype))
