"""Rotated BEV / 3D IoU: shapely oracle on random pairs, hand-computed and degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
import torch
from shapely.geometry import Polygon

from stereodistill.geometry.iou import (
    bev_candidate_mask,
    intersection_area_bev,
    intersection_volume_3d,
    iou_3d,
    iou_bev,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def box(x, y, l, w, heading, z=0.0, h=1.0) -> list[float]:
    return [x, y, z, l, w, h, heading]


def boxes(*rows, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


def bev_polygon(b: np.ndarray) -> Polygon:
    x, y, _, l, w, _, heading = (float(v) for v in b)
    c, s = math.cos(heading), math.sin(heading)
    local = ((l / 2, w / 2), (-l / 2, w / 2), (-l / 2, -w / 2), (l / 2, -w / 2))
    return Polygon([(x + u * c - v * s, y + u * s + v * c) for u, v in local])


def oracle(a: torch.Tensor, b: torch.Tensor, with_height: bool) -> np.ndarray:
    """IoU of aligned pairs from shapely polygons built from the (already rounded) input values, in float64."""
    a64 = a.double().numpy()
    b64 = b.double().numpy()
    pa = np.array([bev_polygon(r) for r in a64])
    pb = np.array([bev_polygon(r) for r in b64])
    inter = shapely.area(shapely.intersection(pa, pb))
    size_a = a64[:, 3] * a64[:, 4]
    size_b = b64[:, 3] * b64[:, 4]
    if with_height:
        top = np.minimum(a64[:, 2] + a64[:, 5] / 2, b64[:, 2] + b64[:, 5] / 2)
        bottom = np.maximum(a64[:, 2] - a64[:, 5] / 2, b64[:, 2] - b64[:, 5] / 2)
        inter = inter * np.clip(top - bottom, 0, None)
        size_a = size_a * a64[:, 5]
        size_b = size_b * b64[:, 5]
    union = size_a + size_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def random_boxes(n: int, gen: torch.Generator, spread: float = 70.0) -> torch.Tensor:
    """Boxes with centres in [0, spread] x [-spread/2, spread/2], sizes 0.3..6 m, any heading (float64)."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * spread
    xy[:, 1] -= spread / 2
    z = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 2 - 1
    lwh = 0.3 + torch.rand(n, 3, generator=gen, dtype=torch.float64) * 5.7
    heading = (torch.rand(n, 1, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    return torch.cat([xy, z, lwh, heading], dim=1)


def perturbed(base: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Boxes near ``base`` so that most pairs overlap partially (and some are nested)."""
    n = base.shape[0]
    out = base.clone()
    out[:, :2] += torch.randn(n, 2, generator=gen, dtype=torch.float64) * 1.5
    out[:, 2] += torch.randn(n, generator=gen, dtype=torch.float64) * 0.7
    out[:, 3:6] = (base[:, 3:6] * (0.4 + 1.2 * torch.rand(n, 3, generator=gen, dtype=torch.float64))).clamp(
        0.3, 6
    )
    out[:, 6] += torch.randn(n, generator=gen, dtype=torch.float64)
    return out


# --- random pairs against shapely ---------------------------------------------------------------------


@pytest.mark.parametrize("with_height", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_aligned_matches_shapely(with_height: bool, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1 + int(with_height))
    a = random_boxes(3000, gen).to(dtype)
    b = perturbed(a.double(), gen).to(dtype)
    expected = oracle(a, b, with_height)
    assert (expected > 0).mean() > 0.6  # mostly overlapping pairs, not a test of the prefilter only
    fn = iou_3d if with_height else iou_bev
    got = fn(a, b, aligned=True)
    assert got.dtype == dtype and got.shape == (3000,)
    assert np.abs(got.double().numpy() - expected).max() <= 1e-5


@pytest.mark.parametrize("with_height", [False, True])
def test_pairwise_matches_shapely_float32(with_height: bool) -> None:
    gen = torch.Generator().manual_seed(7)
    # Two sets in a 12 m x 12 m patch 60 m from the origin: dense overlaps plus many disjoint pairs.
    a = random_boxes(60, gen, spread=12.0)
    b = perturbed(random_boxes(70, gen, spread=12.0), gen)
    a[:, 0] += 60
    b[:, 0] += 60
    a, b = a.float(), b.float()
    fn = iou_3d if with_height else iou_bev
    got = fn(a, b)
    assert got.shape == (60, 70) and got.dtype == torch.float32
    ia, ib = torch.meshgrid(torch.arange(60), torch.arange(70), indexing="ij")
    expected = oracle(a[ia.reshape(-1)], b[ib.reshape(-1)], with_height).reshape(60, 70)
    assert (expected > 0).sum() > 300
    assert np.abs(got.double().numpy() - expected).max() <= 1e-5


def test_small_boxes_far_away_float32() -> None:
    gen = torch.Generator().manual_seed(3)
    a = random_boxes(1000, gen)
    a[:, 0] = 50 + 20 * torch.rand(1000, generator=gen, dtype=torch.float64)
    a[:, 3:5] = 0.3 + 0.2 * torch.rand(1000, 2, generator=gen, dtype=torch.float64)
    b = a.clone()
    b[:, :2] += torch.randn(1000, 2, generator=gen, dtype=torch.float64) * 0.1
    b[:, 6] += torch.randn(1000, generator=gen, dtype=torch.float64) * 0.3
    a, b = a.float(), b.float()
    expected = oracle(a, b, with_height=False)
    assert (expected > 0.1).mean() > 0.5
    assert np.abs(iou_bev(a, b, aligned=True).double().numpy() - expected).max() <= 1e-5


def test_pairwise_equals_aligned_and_chunking_is_invisible() -> None:
    gen = torch.Generator().manual_seed(11)
    a = random_boxes(40, gen, spread=8.0)
    b = perturbed(random_boxes(50, gen, spread=8.0), gen)
    full = iou_3d(a, b)
    small_chunks = iou_3d(a, b, chunk_pairs=7)
    assert torch.equal(full, small_chunks)
    ia, ib = torch.meshgrid(torch.arange(40), torch.arange(50), indexing="ij")
    aligned = iou_3d(a[ia.reshape(-1)], b[ib.reshape(-1)], aligned=True).reshape(40, 50)
    torch.testing.assert_close(full, aligned, rtol=0, atol=1e-12)
    # Symmetric in its arguments.
    torch.testing.assert_close(iou_bev(a, b), iou_bev(b, a).T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_near_degenerate_pairs_match_shapely(dtype: torch.dtype) -> None:
    """Identical up to rounding, l/w swapped + pi/2, and edge-sharing / collinear-edge pairs at any heading."""
    gen = torch.Generator().manual_seed(13)
    n = 4000
    a = random_boxes(n, gen)
    b = a + torch.randn(n, 7, generator=gen, dtype=torch.float64) * 1e-14
    kind = torch.arange(n) % 4
    swapped = kind == 1
    b[swapped, 3], b[swapped, 4] = a[swapped, 4], a[swapped, 3]
    b[swapped, 6] = a[swapped, 6] + math.pi / 2
    fraction = torch.rand(n, generator=gen, dtype=torch.float64)
    c, s = torch.cos(a[:, 6]), torch.sin(a[:, 6])
    # kind 2: b slid along a's long side, sharing that edge line; kind 3: half as wide, overlapping a.
    for k, shift in ((2, 1.0), (3, 0.5)):
        sel = kind == k
        b[sel, 0] = (a[:, 0] + fraction * a[:, 3] * c - shift * a[:, 4] * s)[sel]
        b[sel, 1] = (a[:, 1] + fraction * a[:, 3] * s + shift * a[:, 4] * c)[sel]
    b[kind == 3, 4] = a[kind == 3, 4] * 0.5
    a, b = a.to(dtype), b.to(dtype)
    expected = oracle(a, b, with_height=False)
    got = iou_bev(a, b, aligned=True).double().numpy()
    assert np.abs(got - expected).max() <= 1e-5
    # In float32 the rounding of heading + pi/2 itself (~2e-7 rad) moves the swapped boxes measurably.
    same = (kind < 2) if dtype == torch.float64 else (kind == 0)
    assert np.abs(got[same.numpy()] - 1).max() <= 1e-6


# --- hand-computed cases --------------------------------------------------------------------------------


def test_unit_squares_offset_by_half() -> None:
    a = boxes(box(0, 0, 1, 1, 0))
    b = boxes(box(0.5, 0, 1, 1, 0))
    assert iou_bev(a, b).item() == pytest.approx(1 / 3, abs=1e-12)
    assert intersection_area_bev(a, b).item() == pytest.approx(0.5, abs=1e-12)
    # Same pair rotated as a whole by 30 degrees about the origin, and moved to (65, -20).
    t = math.radians(30)
    a2 = boxes(box(65, -20, 1, 1, t), dtype=torch.float32)
    b2 = boxes(box(65 + 0.5 * math.cos(t), -20 + 0.5 * math.sin(t), 1, 1, t), dtype=torch.float32)
    assert iou_bev(a2, b2).item() == pytest.approx(1 / 3, abs=1e-5)


def test_square_rotated_45_degrees() -> None:
    q = math.pi / 4
    unit = boxes(box(3, 4, 1, 1, 0))
    # Same centre, rotated by 45 deg: the intersection is a regular octagon with inradius 1/2,
    # area 8 tan(pi/8) / 4 = 2 (sqrt 2 - 1); IoU = that / (2 - that) = 1 / sqrt 2.
    assert iou_bev(unit, boxes(box(3, 4, 1, 1, q))).item() == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    # Inside a 2 x 2 square: IoU = 1 / 4.
    assert iou_bev(boxes(box(3, 4, 2, 2, 0)), boxes(box(3, 4, 1, 1, q))).item() == pytest.approx(
        0.25, abs=1e-12
    )
    # A sqrt(2) square at 45 deg passes through the unit square's corners: it contains it, IoU = 1 / 2.
    around = boxes(box(3, 4, math.sqrt(2), math.sqrt(2), q))
    assert iou_bev(unit, around).item() == pytest.approx(0.5, abs=1e-12)


def test_one_box_inside_the_other() -> None:
    outer = boxes(box(10, 5, 6, 3, 0.4))
    inner = boxes(box(10.3, 5.1, 2, 1, 1.3))
    assert iou_bev(outer, inner).item() == pytest.approx(2 / 18, abs=1e-12)
    assert iou_bev(inner, outer).item() == pytest.approx(2 / 18, abs=1e-12)


def test_collinear_edges() -> None:
    square = boxes(box(0.5, 0.5, 1, 1, 0))
    # [0.5, 1.5] x [0, 0.5]: shares the line y = 0 with the square; intersection 0.25, union 1.25.
    strip = boxes(box(1.0, 0.25, 1, 0.5, 0))
    assert iou_bev(square, strip).item() == pytest.approx(0.2, abs=1e-12)
    # Same, expressed with l/w swapped and heading pi/2, and the square with heading -pi.
    strip_rotated = boxes(box(1.0, 0.25, 0.5, 1, math.pi / 2))
    square_rotated = boxes(box(0.5, 0.5, 1, 1, -math.pi))
    assert iou_bev(square_rotated, strip_rotated).item() == pytest.approx(0.2, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_boxes_give_one(dtype: torch.dtype) -> None:
    rows = []
    for heading in np.linspace(-math.pi, math.pi, 37):
        rows.append(box(68.7, -31.2, 4.1, 1.7, heading, z=-0.8, h=1.5))
    a = boxes(*rows, dtype=dtype)
    for fn in (iou_bev, iou_3d):
        torch.testing.assert_close(fn(a, a, aligned=True), torch.ones(37, dtype=dtype), rtol=0, atol=1e-6)
        torch.testing.assert_close(fn(a, a).diagonal(), torch.ones(37, dtype=dtype), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("heading", [0.0, 0.3, 1.2, -2.5, math.pi / 2, -math.pi / 2])
def test_same_rectangle_written_differently_gives_one(dtype: torch.dtype, heading: float) -> None:
    base = box(55.2, 12.9, 3.9, 1.6, heading)
    variants = [
        box(55.2, 12.9, 3.9, 1.6, heading + math.pi),  # rectangles are symmetric under a half turn
        box(55.2, 12.9, 3.9, 1.6, heading - math.pi),
        box(55.2, 12.9, 1.6, 3.9, heading + math.pi / 2),  # l and w swapped
        box(55.2, 12.9, 1.6, 3.9, heading - math.pi / 2),
        box(55.2, 12.9, 3.9, 1.6, heading + 2 * math.pi),
    ]
    a = boxes(*([base] * len(variants)), dtype=dtype)
    b = boxes(*variants, dtype=dtype)
    torch.testing.assert_close(
        iou_bev(a, b, aligned=True), torch.ones(len(variants), dtype=dtype), rtol=0, atol=1e-6
    )


def test_heading_pi_and_minus_pi_are_the_same_box() -> None:
    a = boxes(box(40, 3, 4, 2, math.pi), box(0, 0, 1, 0.5, math.pi), dtype=torch.float32)
    b = boxes(box(40, 3, 4, 2, -math.pi), box(0, 0, 1, 0.5, -math.pi), dtype=torch.float32)
    torch.testing.assert_close(iou_3d(a, b, aligned=True), torch.ones(2), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_touching_boxes_give_zero(dtype: torch.dtype) -> None:
    t = 0.7
    along = (4 * math.cos(t), 4 * math.sin(t))
    across = (-2 * math.sin(t), 2 * math.cos(t))
    a = boxes(*[box(0, 0, 1, 1, 0)] * 3 + [box(60, 20, 4, 2, t)] * 3, dtype=dtype)
    b = boxes(
        box(1, 0, 1, 1, 0),  # shared edge
        box(1, 1, 1, 1, 0),  # shared corner
        box(1, 0.5, 1, 1, 0),  # shared half edge
        box(60 + along[0], 20 + along[1], 4, 2, t),  # rotated, shared short edge
        box(60 + across[0], 20 + across[1], 4, 2, t + math.pi),  # rotated, shared long edge
        box(60 + along[0] + across[0], 20 + along[1] + across[1], 2, 4, t + math.pi / 2),  # rotated corner
        dtype=dtype,
    )
    got = iou_bev(a, b, aligned=True)
    assert torch.all(got >= 0) and torch.all(got <= 1e-6), got
    assert torch.all(iou_3d(a, b, aligned=True) <= 1e-6)
    # Boxes stacked vertically touch in 3D.
    assert iou_3d(boxes(box(0, 0, 1, 1, 0, z=0, h=1)), boxes(box(0, 0, 1, 1, 0, z=1, h=1))).item() == 0


def test_zero_size_boxes_give_zero_without_nan() -> None:
    normal = box(5, 5, 2, 1, 0.3)
    degenerate = [
        box(5, 5, 0, 1, 0.3),
        box(5, 5, 2, 0, 0.3),
        box(5, 5, 0, 0, 0.3),
        box(5.2, 5, 0, 0, 1.0),
        box(5, 5, 2, 1, 0.3, h=0.0),
        box(5, 5, -1, 1, 0.3),  # negative size counts as 0
    ]
    a = boxes(*[normal] * len(degenerate), *degenerate)
    b = boxes(*degenerate, *degenerate)
    for fn in (iou_bev, iou_3d):
        got = fn(a, b, aligned=True)
        assert not torch.isnan(got).any()
        expected = torch.zeros(len(got), dtype=torch.float64)
        if fn is iou_bev:  # a zero-height box still has a BEV footprint
            expected[4] = expected[10] = 1.0
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_3d_partial_height_overlap_by_hand() -> None:
    # Same 2 x 2 footprint, z ranges [-1, 1] and [0, 2]: intersection 4, union 12.
    a = boxes(box(0, 0, 2, 2, 0.4, z=0, h=2))
    b = boxes(box(0, 0, 2, 2, 0.4, z=1, h=2))
    assert iou_3d(a, b).item() == pytest.approx(1 / 3, abs=1e-12)
    # Unit cubes offset by 0.5 in x and in z: intersection 0.5 x 1 x 0.5, union 2 - 0.25.
    c = boxes(box(30, 0, 1, 1, 0, z=0, h=1), dtype=torch.float32)
    d = boxes(box(30.5, 0, 1, 1, 0, z=0.5, h=1), dtype=torch.float32)
    assert iou_3d(c, d).item() == pytest.approx(0.25 / 1.75, abs=1e-6)
    assert intersection_volume_3d(c, d).item() == pytest.approx(0.25, abs=1e-6)
    # Different heights: [0, 1.5] vs [1, 2] over the same unit square -> 0.5 / (1.5 + 1 - 0.5).
    e = boxes(box(0, 0, 1, 1, 0, z=0.75, h=1.5))
    f = boxes(box(0, 0, 1, 1, 0, z=1.5, h=1.0))
    assert iou_3d(e, f).item() == pytest.approx(0.25, abs=1e-12)


# --- API ------------------------------------------------------------------------------------------------


def test_shapes_dtypes_and_empty_inputs() -> None:
    a = boxes(box(0, 0, 1, 1, 0), box(0.5, 0, 1, 1, 0), dtype=torch.float32)
    empty = torch.zeros(0, 7)
    assert iou_bev(a, empty).shape == (2, 0)
    assert iou_3d(empty, a).shape == (0, 2)
    assert iou_bev(empty, empty, aligned=True).shape == (0,)
    assert iou_bev(a, a.double()).dtype == torch.float64
    # Extra columns (e.g. velocities) are ignored.
    extra = torch.cat([a, torch.randn(2, 2)], dim=1)
    torch.testing.assert_close(iou_bev(extra, a), iou_bev(a, a))
    assert bev_candidate_mask(a, boxes(box(0, 1.5, 1, 1, 0), box(0, 0.5, 1, 1, 0))).tolist() == [
        [False, True],
        [False, True],
    ]


def test_bad_inputs_raise() -> None:
    a = torch.zeros(3, 7)
    with pytest.raises(ValueError, match="aligned"):
        iou_bev(a, torch.zeros(2, 7), aligned=True)
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        iou_3d(torch.zeros(3, 5), a)
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        iou_bev(a, torch.zeros(7))
    with pytest.raises(TypeError):
        iou_bev(np.zeros((3, 7)), a)


def test_gradient_flows_through_the_clipped_polygon() -> None:
    a = torch.tensor([box(0.1, 0.2, 4.0, 1.7, 0.3, z=0.1, h=1.5)], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([box(0.9, -0.3, 3.6, 1.6, 0.9, z=0.4, h=1.4)], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: iou_3d(x, y, aligned=True), (a, b))
    assert torch.autograd.gradcheck(lambda x, y: iou_bev(x, y), (a, b))


@CUDA
def test_cuda_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(5)
    a = random_boxes(300, gen, spread=20.0)
    b = perturbed(random_boxes(400, gen, spread=20.0), gen)
    for dtype in (torch.float32, torch.float64):
        for fn in (iou_bev, iou_3d):
            cpu = fn(a.to(dtype), b.to(dtype))
            gpu = fn(a.to(dtype).cuda(), b.to(dtype).cuda())
            assert gpu.device.type == "cuda" and gpu.dtype == dtype
            torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-6)
    ident = a[:50].float().cuda()
    torch.testing.assert_close(iou_3d(ident, ident, aligned=True).cpu(), torch.ones(50), rtol=0, atol=1e-6)
