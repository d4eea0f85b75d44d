"""XGD: component pilots (closed forms vs the exact rotated IoU), keep decisions, loss values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from stereodistill.distill.pilots import heading_nearest_mod_pi, pilot_boxes, pilot_ious
from stereodistill.distill.xgd import WholeBoxOptions, XgdOptions, threshold_table, xgd_keep_mask, xgd_loss
from stereodistill.geometry.iou import iou_3d, iou_bev
from stereodistill.head.box_coder import encode_boxes

CAR, PED = 0, 1
BETA = 1.0 / 9.0


def _box(*values: float) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64)


def _random_pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GT boxes and teacher boxes near them (jittered centre, size and any heading), float64 ``(n, 7)``."""
    g = torch.Generator().manual_seed(seed)

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    gt = torch.stack(
        [
            u(0, 40, n),
            u(-10, 10, n),
            u(-2, 0, n),
            u(1, 5, n),
            u(0.5, 2.5, n),
            u(1, 2, n),
            u(-math.pi, math.pi, n),
        ],
        dim=1,
    )
    teacher = gt.clone()
    teacher[:, :3] += u(-1.5, 1.5, n, 3)
    teacher[:, 3:6] *= u(0.6, 1.5, n, 3)
    teacher[:, 6] = u(-math.pi, math.pi, n)
    return gt, teacher


# ---------------------------------------------------------------------- pilots
@pytest.mark.parametrize("split", ["groups", "scalars"])
@pytest.mark.parametrize("iou", ["3d", "bev"])
def test_pilot_ious_closed_form_match_exact_rotated_iou(split: str, iou: str) -> None:
    gt, teacher = _random_pairs(200, seed=3)
    closed = pilot_ious(teacher, gt, split, iou)
    pilots = pilot_boxes(teacher, gt, split)
    exact_fn = iou_3d if iou == "3d" else iou_bev
    exact = torch.stack([exact_fn(pilots[:, k], gt, aligned=True) for k in range(pilots.shape[1])], dim=1)
    assert closed.shape == (200, 3 if split == "groups" else 7)
    assert torch.allclose(closed, exact, atol=1e-5, rtol=0)
    # The sample covers partial overlaps, not only trivial 0 / 1 values.
    assert ((closed > 0.05) & (closed < 0.95)).float().mean() > 0.3


def test_pilot_boxes_replace_one_component_each() -> None:
    gt = _box(10, 2, -1, 4, 2, 1.5, 0.3)
    teacher = _box(11, 3, -0.5, 5, 1, 1.0, 0.4)
    pilots = pilot_boxes(teacher, gt, "groups")[0]
    assert torch.allclose(pilots[0], _box(11, 3, -0.5, 4, 2, 1.5, 0.3)[0])
    assert torch.allclose(pilots[1], _box(10, 2, -1, 5, 1, 1.0, 0.3)[0])
    assert torch.allclose(pilots[2], _box(10, 2, -1, 4, 2, 1.5, 0.4)[0])
    scalars = pilot_boxes(teacher, gt, "scalars")[0]
    assert torch.allclose(scalars[4], _box(10, 2, -1, 4, 1, 1.5, 0.3)[0])


def test_centre_pilot_by_hand_shift_along_length() -> None:
    # 4 x 2 x 1.5 box shifted 0.5 m along its own length (heading 0.3): intersection 3.5 x 2 x 1.5.
    heading = 0.3
    gt = _box(10, 2, -1, 4, 2, 1.5, heading)
    teacher = _box(
        10 + 0.5 * math.cos(heading), 2 + 0.5 * math.sin(heading), -1, 4.4, 1.7, 1.2, heading + 0.6
    )
    ious = pilot_ious(teacher, gt, "groups", "3d")[0]
    assert ious[0].item() == pytest.approx(3.5 / 4.5, abs=1e-9)
    # Size pilot by hand: min sizes 4 x 1.7 x 1.2 = 8.16; volumes 12 and 8.976.
    assert ious[1].item() == pytest.approx(8.16 / (12 + 4.4 * 1.7 * 1.2 - 8.16), abs=1e-9)
    # scalars: the x / y single-coordinate pilots split the same shift; z unchanged -> IoU 1.
    scalar = pilot_ious(teacher, gt, "scalars", "3d")[0]
    assert scalar[2].item() == pytest.approx(1.0)


def test_keep_decisions_at_class_thresholds() -> None:
    heading = 0.3
    gt = _box(10, 2, -1, 4, 2, 1.5, heading).repeat(3, 1)
    teacher = _box(10 + 0.5 * math.cos(heading), 2 + 0.5 * math.sin(heading), -1, 4, 2, 1.5, heading).repeat(
        3, 1
    )
    classes = torch.tensor([CAR, PED, CAR])
    # Default 0.7 car / 0.5 ped: IoU 0.778 keeps the centre for both.
    kept = xgd_keep_mask(teacher, gt, classes)
    assert kept.tolist() == [[True, True, True]] * 3
    # A car threshold of 0.8 on the centre drops it for cars only.
    options = XgdOptions(
        thresholds={"centre": (0.8, 0.5, 0.5), "size": (0.7, 0.5, 0.5), "heading": (0.7, 0.5, 0.5)}
    )
    kept = xgd_keep_mask(teacher, gt, classes, options)
    assert kept[:, 0].tolist() == [False, True, False]
    assert kept[:, 1:].all()
    # The decision flips within 1e-9 of the hand IoU (a tensor (C,) applies to every component).
    for margin, expected in ((-1e-9, True), (1e-9, False)):
        table = torch.tensor([3.5 / 4.5 + margin, 1.0, 1.0], dtype=torch.float64)
        kept = xgd_keep_mask(teacher, gt, classes, XgdOptions(thresholds=table))
        assert kept[:, 0].tolist() == [expected, False, expected]


def test_heading_pilot_modulo_pi() -> None:
    gt = _box(10, 2, -1, 4, 2, 1.5, 3.1).repeat(3, 1)
    teacher = gt.clone()
    teacher[0, 6] = 3.1 + math.pi + 0.01  # flipped and slightly off: kept
    teacher[1, 6] = 3.1 - math.pi - 0.01
    teacher[2, 6] = 3.1 + math.pi / 2  # a quarter turn: 2 x 2 overlap of 4 x 2 boxes, IoU 4 / 12
    ious = pilot_ious(teacher, gt, "groups", "3d")[:, 2]
    assert ious[2].item() == pytest.approx(4 / 12, abs=1e-9)
    kept = xgd_keep_mask(teacher, gt, torch.tensor([CAR, CAR, CAR]))
    assert kept[:, 2].tolist() == [True, True, False]
    resolved = heading_nearest_mod_pi(teacher[:, 6], gt[:, 6])
    assert torch.allclose(resolved[:2], torch.tensor([3.11, 3.09], dtype=torch.float64))
    # Across the -pi / pi seam the result is wrapped: 3.1 + 0.1 -> 3.2 - 2 pi.
    across = heading_nearest_mod_pi(torch.tensor([0.1 - math.pi + 3.1]), torch.tensor([3.1]))
    assert across.item() == pytest.approx(3.2 - 2 * math.pi, abs=1e-6)


def test_threshold_table_shapes_and_errors() -> None:
    assert threshold_table((0.7, 0.5, 0.5), "scalars").shape == (7, 3)
    assert threshold_table(torch.full((3, 2), 0.6), "groups").shape == (3, 2)
    with pytest.raises(ValueError, match="missing"):
        threshold_table({"centre": (0.7,), "size": (0.7,)}, "groups")
    with pytest.raises(ValueError, match="shape"):
        threshold_table(torch.full((4, 3), 0.6), "groups")
    with pytest.raises(ValueError, match="scalars"):
        XgdOptions(split="scalars", thresholds={"centre": (0.7,), "size": (0.7,), "heading": (0.7,)})
    with pytest.raises(ValueError, match="split"):
        XgdOptions(split="corners")  # type: ignore[arg-type]
    gt = _box(10, 2, -1, 4, 2, 1.5, 0.0)
    with pytest.raises(ValueError, match="class ids"):
        xgd_keep_mask(gt, gt, torch.tensor([3]))


# ---------------------------------------------------------------------- loss
def _hand_case() -> dict[str, torch.Tensor]:
    """Frame 0: two car candidates. Anchor 0 keeps only its centre; anchor 1 keeps nothing."""
    anchors = _box(0, 0, 0, 3, 4, 2, 0).repeat(2, 1)  # diagonal 5, height 2
    # Teacher centre = GT centre (centre pilot IoU 1); size 1.5 x 4 x 2 vs 3 x 4 x 2 (IoU 0.5); a quarter turn of
    # a 3 x 4 footprint (overlap 3 x 3, IoU 9 / 15 = 0.6).
    gt = torch.tensor([[1.0, 0.25, 0.1, 3, 4, 2, 0], [0, 0, 0, 3, 4, 2, 0]], dtype=torch.float64)
    teacher = torch.tensor(
        [[1.0, 0.25, 0.1, 1.5, 4, 2, math.pi / 2], [3, 3, 3, 1, 1, 1, math.pi / 2]], dtype=torch.float64
    )
    return {
        "student_codes": torch.zeros(2, 7, dtype=torch.float64, requires_grad=True),
        "teacher_boxes": teacher,
        "gt_boxes": gt,
        "anchors": anchors,
        "class_ids": torch.tensor([CAR, CAR]),
        "frame_index": torch.tensor([0, 0]),
    }


def test_xgd_loss_by_hand() -> None:
    case = _hand_case()
    result = xgd_loss(**case, num_frames=1, weight=2.0)
    assert result.components == ("centre", "size", "heading")
    assert result.kept.tolist() == [[True, False, False], [False, False, False]]
    assert result.kept_share.tolist() == [0.5, 0.0, 0.0]
    # Codes of the teacher centre: t_x = 1 / 5 = 0.2 (>= beta: 0.2 - beta / 2), t_y = 0.25 / 5 = 0.05 and
    # t_z = 0.1 / 2 = 0.05 (< beta: 0.5 * 0.05^2 / beta each); student codes 0; 2 candidates in the frame.
    per_anchor = (0.2 - BETA / 2) + 2 * (0.5 * 0.05**2 / BETA)
    assert result.loss.item() == pytest.approx(2.0 * per_anchor / 2, rel=1e-9)

    # Two frames: the same case in frame 0 and an empty frame 1 halve the mean over frames.
    two = xgd_loss(**case, num_frames=2)
    assert two.loss.item() == pytest.approx(per_anchor / 2 / 2, rel=1e-9)
    # An explicit per-frame count replaces the candidate count.
    counted = xgd_loss(**case, num_frames=1, frame_counts=torch.tensor([4]))
    assert counted.loss.item() == pytest.approx(per_anchor / 4, rel=1e-9)


def test_gradients_reach_only_kept_codes() -> None:
    gt, teacher = _random_pairs(40, seed=5)
    teacher[:, 6] = gt[:, 6] + 0.05
    anchors = gt.clone()
    anchors[:, :3] = torch.round(gt[:, :3])
    anchors[:, 3:6] = torch.tensor([3.9, 1.6, 1.56], dtype=torch.float64)
    anchors[:, 6] = 0.0
    student = (encode_boxes(gt, anchors) + 0.3).requires_grad_(True)  # every code differs from its target
    teacher.requires_grad_(True)
    result = xgd_loss(
        student,
        teacher,
        gt,
        anchors,
        torch.zeros(40, dtype=torch.long),
        torch.arange(40) % 2,
        2,
        XgdOptions(split="scalars"),
    )
    result.loss.backward()
    assert 0 < result.code_mask.sum() < result.code_mask.numel()
    assert (student.grad[~result.code_mask] == 0).all()
    assert (student.grad[result.code_mask] != 0).all()
    assert teacher.grad is None  # the teacher is a target


def test_whole_box_baseline_keeps_fewer_codes_than_xgd() -> None:
    g = torch.Generator().manual_seed(11)
    n = 100
    gt = torch.zeros(n, 7, dtype=torch.float64)
    gt[:, 0] = torch.linspace(5, 50, n, dtype=torch.float64)
    gt[:, 3:6] = torch.tensor([3.9, 1.6, 1.56], dtype=torch.float64)
    gt[:, 6] = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi - math.pi
    teacher = gt.clone()
    teacher[:, :3] += 0.25 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    teacher[:, 3:6] *= 1 + 0.1 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    teacher[:, 6] += 0.15 * torch.randn(n, generator=g, dtype=torch.float64)
    args = (
        torch.zeros(n, 7, dtype=torch.float64),
        teacher,
        gt,
        gt,
        torch.zeros(n, dtype=torch.long),
        torch.zeros(n, dtype=torch.long),
        1,
    )
    xgd = xgd_loss(*args)
    whole = xgd_loss(*args, WholeBoxOptions())
    assert whole.components == ("box",) and whole.kept.shape == (n, 1)
    assert whole.code_mask.sum() < xgd.code_mask.sum()
    assert 0 < whole.kept_share.item() < 1
    assert whole.code_mask.all(dim=1).tolist() == whole.kept[:, 0].tolist()


def test_no_candidates_gives_zero_loss_with_gradient() -> None:
    student = torch.zeros(0, 7, requires_grad=True)
    empty = torch.zeros(0, 7)
    result = xgd_loss(
        student, empty, empty, empty, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 2
    )
    assert (
        result.loss.item() == 0.0 and result.kept.shape == (0, 3) and result.kept_share.tolist() == [0, 0, 0]
    )
    result.loss.backward()
    assert student.grad is not None


def test_shape_errors_name_the_argument() -> None:
    case = _hand_case()
    case["anchors"] = case["anchors"][:1]
    with pytest.raises(ValueError, match="anchors"):
        xgd_loss(**case, num_frames=1)
    case = _hand_case()
    with pytest.raises(ValueError, match="frame_counts"):
        xgd_loss(**case, num_frames=1, frame_counts=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="frame_index"):
        xgd_loss(**{**case, "frame_index": torch.tensor([0, 1])}, num_frames=1)
