"""SECOND losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from stereodistill.head.losses import detection_losses, sigmoid_focal_loss, sin_difference, smooth_l1

LN2 = math.log(2.0)
FOCAL_POS_AT_0 = 0.25 * 0.25 * LN2  # logit 0, target 1: alpha 0.25, (1 - 0.5)^2, BCE ln 2
FOCAL_NEG_AT_0 = 0.75 * 0.25 * LN2  # logit 0, target 0: 1 - alpha


def test_focal_loss_hand_values():
    logits = torch.tensor([0.0, 0.0, math.log(3.0), math.log(3.0)])  # p = 0.5, 0.5, 0.75, 0.75
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0])
    expected = torch.tensor(
        [
            FOCAL_POS_AT_0,
            FOCAL_NEG_AT_0,
            0.25 * 0.25**2 * -math.log(0.75),
            0.75 * 0.75**2 * -math.log(0.25),
        ]
    )
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets), expected)
    # gamma 0 and alpha 0.5 reduce to half the BCE
    torch.testing.assert_close(
        sigmoid_focal_loss(logits, targets, alpha=0.5, gamma=0.0),
        0.5 * torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none"),
    )


def test_focal_loss_is_stable_for_large_logits():
    out = sigmoid_focal_loss(torch.tensor([100.0, -100.0]), torch.tensor([0.0, 1.0]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([0.75 * 100.0, 0.25 * 100.0]))


def test_smooth_l1_hand_values():
    beta = 1.0 / 9.0
    d = torch.tensor([0.0, 0.05, -0.05, 0.5, -0.5, beta])
    expected = torch.tensor(
        [0.0, 0.5 * 0.0025 * 9, 0.5 * 0.0025 * 9, 0.5 - beta / 2, 0.5 - beta / 2, beta / 2]
    )
    torch.testing.assert_close(smooth_l1(d, beta), expected)
    torch.testing.assert_close(smooth_l1(d, 0.0), d.abs())


def test_sin_difference_gives_sine_of_heading_error_only():
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.3], [0.0, 0, 0, 0, 0, 0, math.pi + 0.1]])
    target = torch.tensor([[1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 0.1], [0.0, 0, 0, 0, 0, 0, 0.1]])
    p, t = sin_difference(pred, target)
    torch.testing.assert_close(p[:, :6], pred[:, :6])
    torch.testing.assert_close(t[:, :6], target[:, :6])
    diff = p[:, 6] - t[:, 6]
    torch.testing.assert_close(diff, torch.tensor([math.sin(0.2), 0.0]), atol=1e-6, rtol=0)


def tiny_batch():
    """One frame, 3 anchors, 2 classes: anchor 0 positive (class 0), anchor 1 background, anchor 2 ignored."""
    cls_logits = torch.zeros(1, 3, 2)
    box_preds = torch.zeros(1, 3, 7)
    box_preds[0, 1:] = 50.0  # garbage on non-positives must not count
    dir_logits = torch.zeros(1, 3, 2)
    labels = torch.tensor([[0, 2, -1]])
    box_targets = torch.zeros(1, 3, 7)
    box_targets[0, 0] = torch.tensor([0.05, 0.5, 0.0, 0.0, 0.0, 0.0, 0.2])
    dir_targets = torch.tensor([[1, -1, -1]])
    return cls_logits, box_preds, dir_logits, labels, box_targets, dir_targets


# anchor 0: [1, 0] one-hot; anchor 1: [0, 0]; anchor 2 ignored. One positive.
CLS = FOCAL_POS_AT_0 + 3 * FOCAL_NEG_AT_0
# residual 0.05 and 0.5 (beta 1/9), heading: |sin(0 - 0.2)| > beta
LOC = 0.5 * 0.05**2 * 9 + (0.5 - 1 / 18) + (math.sin(0.2) - 1 / 18)
DIR = LN2


def test_detection_losses_hand_computed():
    terms = detection_losses(*tiny_batch())
    assert terms["cls"].item() == pytest.approx(CLS, rel=1e-6)
    assert terms["loc"].item() == pytest.approx(2.0 * LOC, rel=1e-6)
    assert terms["dir"].item() == pytest.approx(0.2 * DIR, rel=1e-6)
    assert terms["total"].item() == pytest.approx(CLS + 2.0 * LOC + 0.2 * DIR, rel=1e-6)
    # the regression term split by code, before loc_weight: x, y, heading carry it, z/l/w/h are exact
    expected = [0.5 * 0.05**2 * 9, 0.5 - 1 / 18, 0.0, 0.0, 0.0, 0.0, math.sin(0.2) - 1 / 18]
    assert terms["loc_codes"].tolist() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert not terms["loc_codes"].requires_grad


def test_loc_codes_average_frames_like_loc():
    """Two frames with 1 and 2 positives: each frame is normalised by its own positives, then frames averaged."""
    boxes = torch.zeros(2, 3, 7, requires_grad=True)
    targets = torch.zeros(2, 3, 7)
    targets[0, 0, 0] = 1.0  # frame 0: one positive, x residual 1 -> smooth-L1 1 - 1/18
    targets[1, :2, 3] = 1.0  # frame 1: two positives, l residual 1 each
    labels = torch.tensor([[0, 1, 1], [0, 0, 1]])
    terms = detection_losses(
        torch.zeros(2, 3, 1),
        boxes,
        torch.zeros(2, 3, 2),
        labels,
        targets,
        torch.zeros(2, 3, dtype=torch.long),
    )
    per_positive = 1 - 1 / 18
    assert terms["loc_codes"][0].item() == pytest.approx(per_positive / 2, rel=1e-6)  # frame 0 / 2 frames
    assert terms["loc_codes"][3].item() == pytest.approx(2 * per_positive / 2 / 2, rel=1e-6)
    assert terms["loc"].item() == pytest.approx(2.0 * terms["loc_codes"].sum().item(), rel=1e-6)


def test_weights_and_code_weights_are_configurable():
    terms = detection_losses(*tiny_batch(), cls_weight=2.0, loc_weight=0.5, dir_weight=0.0)
    assert terms["cls"].item() == pytest.approx(2 * CLS, rel=1e-6)
    assert terms["loc"].item() == pytest.approx(0.5 * LOC, rel=1e-6)
    assert terms["dir"].item() == 0.0
    only_x = detection_losses(*tiny_batch(), loc_weight=1.0, code_weights=[1, 0, 0, 0, 0, 0, 0])
    assert only_x["loc"].item() == pytest.approx(0.5 * 0.05**2 * 9, rel=1e-6)
    with pytest.raises(ValueError, match="code_weights needs 7"):
        detection_losses(*tiny_batch(), code_weights=[1.0] * 6)


def test_normalised_per_frame_by_positives_then_averaged():
    cls_logits, box_preds, dir_logits, labels, box_targets, dir_targets = tiny_batch()
    # frame 2: anchors 0 and 1 both positive with the same residuals -> loc/dir sums double, and so does N_pos
    labels2 = torch.tensor([[0, 1, -1]])
    box_targets2 = box_targets.clone()
    box_targets2[0, 1] = box_targets[0, 0]
    box_preds2 = torch.zeros(1, 3, 7)
    dir_targets2 = torch.tensor([[1, 1, -1]])
    batch = detection_losses(
        torch.cat([cls_logits, cls_logits]),
        torch.cat([box_preds, box_preds2]),
        torch.cat([dir_logits, dir_logits]),
        torch.cat([labels, labels2]),
        torch.cat([box_targets, box_targets2]),
        torch.cat([dir_targets, dir_targets2]),
    )
    cls2 = (2 * FOCAL_POS_AT_0 + 2 * FOCAL_NEG_AT_0) / 2
    assert batch["cls"].item() == pytest.approx((CLS + cls2) / 2, rel=1e-6)
    assert batch["loc"].item() == pytest.approx(2.0 * LOC, rel=1e-6)
    assert batch["dir"].item() == pytest.approx(0.2 * DIR, rel=1e-6)


def test_frame_without_positives_normalises_by_one():
    cls_logits = torch.zeros(1, 4, 3)
    labels = torch.tensor([[3, 3, -1, 3]])
    terms = detection_losses(
        cls_logits,
        torch.zeros(1, 4, 7),
        torch.zeros(1, 4, 2),
        labels,
        torch.zeros(1, 4, 7),
        torch.full((1, 4), -1),
    )
    assert terms["cls"].item() == pytest.approx(3 * 3 * FOCAL_NEG_AT_0, rel=1e-6)
    assert terms["loc"].item() == 0.0 and terms["dir"].item() == 0.0


def test_gradients_reach_only_cared_anchors():
    cls_logits, box_preds, dir_logits, labels, box_targets, dir_targets = tiny_batch()
    for t in (cls_logits, box_preds, dir_logits):
        t.requires_grad_(True)
    detection_losses(cls_logits, box_preds, dir_logits, labels, box_targets, dir_targets)["total"].backward()
    assert (cls_logits.grad[0, 2] == 0).all() and (cls_logits.grad[0, :2] != 0).all()
    assert (box_preds.grad[0, 1:] == 0).all() and box_preds.grad[0, 0].abs().sum() > 0
    assert (dir_logits.grad[0, 1:] == 0).all() and (dir_logits.grad[0, 0] != 0).all()


def test_shape_mismatch_is_reported():
    cls_logits, box_preds, dir_logits, labels, box_targets, dir_targets = tiny_batch()
    with pytest.raises(ValueError, match="shape mismatch"):
        detection_losses(cls_logits, box_preds[:, :2], dir_logits, labels, box_targets, dir_targets)
