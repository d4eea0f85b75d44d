"""Residual box coder and direction bins."""

from __future__ import annotations

import math

import pytest
import torch

from stereodistill.head.box_coder import (
    apply_direction,
    decode_boxes,
    direction_target,
    encode_boxes,
    limit_period,
    wrap_heading,
)


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, 7, generator=generator)
    return torch.stack(
        [
            2 + 68 * u[:, 0],
            -40 + 80 * u[:, 1],
            -3 + 4 * u[:, 2],
            0.3 + 6 * u[:, 3],
            0.3 + 2.5 * u[:, 4],
            0.5 + 2.5 * u[:, 5],
            -math.pi + 2 * math.pi * u[:, 6],
        ],
        dim=-1,
    )


def angle_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return wrap_heading((a - b).double()).abs()


def test_hand_computed_encoding():
    anchor = torch.tensor([0.0, 0.0, 0.0, 3.0, 4.0, 2.0, 0.0])  # diagonal 5
    box = torch.tensor([5.0, -10.0, 1.0, 6.0, 4.0, 1.0, 0.5])
    expected = torch.tensor([1.0, -2.0, 0.5, math.log(2.0), 0.0, math.log(0.5), 0.5])
    torch.testing.assert_close(encode_boxes(box, anchor), expected)
    torch.testing.assert_close(decode_boxes(expected, anchor), box)
    torch.testing.assert_close(encode_boxes(anchor, anchor), torch.zeros(7))


def test_heading_residual_is_wrapped():
    anchor = torch.tensor([0.0, 0.0, 0.0, 3.9, 1.6, 1.56, math.pi / 2])
    box = anchor.clone()
    box[6] = -3.0  # raw residual -3 - pi/2 = -4.57 -> wrapped 2 pi - 4.57
    code = encode_boxes(box, anchor)
    assert code[6].item() == pytest.approx(2 * math.pi - 3.0 - math.pi / 2, abs=1e-6)
    assert -math.pi <= code[6].item() < math.pi
    assert decode_boxes(code, anchor)[6].item() == pytest.approx(-3.0, abs=1e-6)


def test_round_trip_random_boxes_float32():
    g = torch.Generator().manual_seed(0)
    boxes = random_boxes(20000, g)
    anchors = random_boxes(20000, g)
    back = decode_boxes(encode_boxes(boxes, anchors), anchors)
    assert back.dtype == torch.float32
    assert (back[:, :6] - boxes[:, :6]).abs().max().item() < 2e-5
    assert angle_error(back[:, 6], boxes[:, 6]).max().item() < 1e-6
    assert back[:, 6].min() >= -math.pi and back[:, 6].max() < math.pi


def test_broadcasting_one_box_against_many_anchors():
    anchors = random_boxes(5, torch.Generator().manual_seed(1))
    box = anchors[2]
    codes = encode_boxes(box, anchors)
    assert codes.shape == (5, 7)
    torch.testing.assert_close(codes[2], torch.zeros(7))


def test_decode_clamps_runaway_size_codes():
    anchor = torch.tensor([0.0, 0.0, 0.0, 3.9, 1.6, 1.56, 0.0])
    box = decode_boxes(torch.tensor([0.0, 0.0, 0.0, 500.0, 500.0, 500.0, 0.0]), anchor)
    assert torch.isfinite(box).all()
    torch.testing.assert_close(box[3:6], anchor[3:6] * 1000.0)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"boxes must have shape \(\.\.\., 7\)"):
        encode_boxes(torch.zeros(3, 6), torch.zeros(3, 7))
    with pytest.raises(ValueError, match=r"anchors must have shape"):
        decode_boxes(torch.zeros(3, 7), torch.zeros(3, 8))


def test_limit_period():
    v = torch.tensor([-4.0, -math.pi, 0.0, math.pi - 1e-3, 4.0])
    out = limit_period(v, 0.5, 2 * math.pi)
    torch.testing.assert_close(
        out, torch.tensor([2 * math.pi - 4.0, -math.pi, 0.0, math.pi - 1e-3, 4.0 - 2 * math.pi])
    )
    assert limit_period(torch.tensor(7.0), 0.0, math.pi).item() == pytest.approx(7.0 - 2 * math.pi)


@pytest.mark.parametrize(
    ("heading", "bin_"),
    [
        (0.0, 1),
        (math.pi / 4 - 1e-3, 1),
        (math.pi / 4 + 1e-3, 0),
        (math.pi / 2, 0),
        (math.pi - 0.1, 0),
        (-math.pi, 0),  # -pi == pi, inside [pi/4, 5pi/4)
        (-3 * math.pi / 4 - 1e-3, 0),
        (-3 * math.pi / 4 + 1e-3, 1),
        (-math.pi / 2, 1),
    ],
)
def test_direction_target_bins(heading, bin_):
    assert direction_target(torch.tensor(heading)).item() == bin_


def test_apply_direction_recovers_heading_and_ignores_half_turns():
    headings = random_boxes(5000, torch.Generator().manual_seed(2))[:, 6]
    bins = direction_target(headings)
    assert set(bins.unique().tolist()) == {0, 1}
    assert angle_error(apply_direction(headings, bins), headings).max().item() < 1e-6
    # A regressed heading off by a half-turn (the sin-difference loss cannot tell) resolves the same way.
    flipped = apply_direction(headings + math.pi, bins)
    assert angle_error(flipped, headings).max().item() < 2e-6
    # The other bin gives the opposite direction.
    opposite = apply_direction(headings, 1 - bins)
    assert (angle_error(opposite, headings) - math.pi).abs().max().item() < 2e-6
    out = apply_direction(headings, bins)
    assert out.min() >= -math.pi and out.max() < math.pi
