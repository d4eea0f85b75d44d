"""Exact rotated IoU of project boxes, in bird's-eye view (BEV) and in 3D.

Boxes are project boxes ``(x, y, z_centre, l, w, h, heading)`` (see ``geometry/boxes.py``); the BEV
footprint is the rectangle centred at ``(x, y)`` with extent ``l`` along ``heading`` and ``w`` across it.

Method: for each candidate pair ``(a, b)`` the four corners of ``a`` are expressed in ``b``'s own frame,
where ``b`` is the axis-aligned rectangle ``[-l_b/2, l_b/2] x [-w_b/2, w_b/2]``. The quadrilateral is
clipped by ``b``'s four half-planes (Sutherland-Hodgman, at most one vertex gained per clip, so a fixed
buffer of 8 vertices with a per-pair vertex count), and the shoelace formula gives the area. Unlike
"corners inside + edge intersections + angular sort" implementations, clipping has no special cases:
identical boxes, shared edges, collinear edges, containment and zero-size boxes all fall out of the same
arithmetic. Signed distances within a tiny tolerance of a clipping line count as *on* the line, which
keeps the vertex bound exact under rounding.

Precision: all geometry runs in float64 and relative to ``b``'s centre, so float32 boxes 70 m from the
origin lose nothing beyond the float32 rounding of the inputs themselves. Results are returned in the
(promoted) input dtype, on the input device.

Cost: pairs whose bounding circles (or, in 3D, vertical extents) do not overlap are IoU 0 and never
reach the exact computation; the rest is processed in chunks of ``chunk_pairs`` pairs, so peak memory is
bounded independently of ``N x M``. All operations are differentiable almost everywhere (gradients flow
back to both box sets through the clipped polygon).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Candidate-pair mask rows are built in blocks of about this many (a, b) entries.
_MASK_BLOCK_ENTRIES = 1 << 20
# Default number of candidate pairs computed exactly at once (tens of MB of float64 temporaries).
DEFAULT_CHUNK_PAIRS = 1 << 14
# Signed distances to a clipping line within this fraction of the pair's size count as exactly on it.
# Float64 rounding is ~1e-16 of the coordinates; 1e-12 leaves a wide margin yet moves areas negligibly.
_ON_LINE_RELATIVE_TOLERANCE = 1e-12


def _check_boxes(boxes: Tensor, name: str) -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] < 7:
        raise ValueError(
            f"{name} must have shape (N, 7) (x, y, z, l, w, h, heading), got {tuple(boxes.shape)}"
        )


def _check_pair(boxes_a: Tensor, boxes_b: Tensor, aligned: bool) -> torch.dtype:
    """Validate inputs; return the result dtype (promoted floating input dtype, else the default dtype)."""
    _check_boxes(boxes_a, "boxes_a")
    _check_boxes(boxes_b, "boxes_b")
    if boxes_a.device != boxes_b.device:
        raise ValueError(
            f"boxes_a and boxes_b are on different devices ({boxes_a.device} vs {boxes_b.device})"
        )
    if aligned and boxes_a.shape[0] != boxes_b.shape[0]:
        raise ValueError(
            f"aligned=True needs as many boxes in boxes_a as in boxes_b, got {boxes_a.shape[0]} and "
            f"{boxes_b.shape[0]}"
        )
    dtype = torch.promote_types(boxes_a.dtype, boxes_b.dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def _prepare(boxes: Tensor) -> Tensor:
    """First 7 columns in float64, with negative sizes clamped to 0 (a degenerate, zero-area box)."""
    b = boxes[:, :7].to(torch.float64)
    return torch.cat([b[:, :3], b[:, 3:6].clamp(min=0.0), b[:, 6:7]], dim=1)


def _bounding_radius(boxes: Tensor) -> Tensor:
    """Radius ``(N,)`` of the circle around each BEV rectangle (half its diagonal)."""
    return 0.5 * torch.hypot(boxes[..., 3], boxes[..., 4])


def bev_candidate_mask(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """``(N, M)`` bool: True where the BEV bounding circles of ``boxes_a (N, 7)`` and ``boxes_b (M, 7)`` overlap.

    False guarantees a BEV (and 3D) IoU of 0, so callers can skip such pairs; True only means "maybe".
    """
    _check_pair(boxes_a, boxes_b, aligned=False)
    return _may_overlap(_prepare(boxes_a)[:, None, :], _prepare(boxes_b)[None, :, :], with_height=False)


def _may_overlap(a: Tensor, b: Tensor, with_height: bool) -> Tensor:
    """Broadcasting test ``a (..., 7)`` vs ``b (..., 7)``: True where the boxes can have positive overlap.

    Bounding circles that only touch, or vertical extents that only touch, mean IoU 0. NaN boxes give False.
    """
    reach = _bounding_radius(a) + _bounding_radius(b)
    dx = a[..., 0] - b[..., 0]
    dy = a[..., 1] - b[..., 1]
    mask = dx * dx + dy * dy < reach * reach
    if with_height:
        mask &= _vertical_overlap(a, b) > 0
    return mask


def _vertical_overlap(a: Tensor, b: Tensor) -> Tensor:
    """Length of the overlap of the vertical extents of ``a`` and ``b`` (broadcast), >= 0."""
    top = torch.minimum(a[..., 2] + 0.5 * a[..., 5], b[..., 2] + 0.5 * b[..., 5])
    bottom = torch.maximum(a[..., 2] - 0.5 * a[..., 5], b[..., 2] - 0.5 * b[..., 5])
    return (top - bottom).clamp(min=0.0)


def _corners_in_frame_of(a: Tensor, b: Tensor) -> Tensor:
    """BEV corners ``(P, 4, 2)`` of boxes ``a (P, 7)`` in the frame of boxes ``b (P, 7)``, counter-clockwise."""
    dx = a[:, 0] - b[:, 0]
    dy = a[:, 1] - b[:, 1]
    cos_b, sin_b = torch.cos(b[:, 6]), torch.sin(b[:, 6])
    centre_x = dx * cos_b + dy * sin_b
    centre_y = -dx * sin_b + dy * cos_b
    relative_heading = a[:, 6] - b[:, 6]
    cos_r, sin_r = torch.cos(relative_heading)[:, None], torch.sin(relative_heading)[:, None]
    half_l, half_w = 0.5 * a[:, 3], 0.5 * a[:, 4]
    # Front-left, rear-left, rear-right, front-right: counter-clockwise seen from above.
    along = torch.stack([half_l, -half_l, -half_l, half_l], dim=1)
    across = torch.stack([half_w, half_w, -half_w, -half_w], dim=1)
    x = centre_x[:, None] + along * cos_r - across * sin_r
    y = centre_y[:, None] + along * sin_r + across * cos_r
    return torch.stack([x, y], dim=-1)


def _next_index(count: Tensor, slots: int) -> tuple[Tensor, Tensor]:
    """For polygons stored in ``slots`` slots with ``count (P,)`` valid ones: (valid mask, index of next vertex)."""
    index = torch.arange(slots, device=count.device)
    valid = index < count[:, None]
    following = index + 1
    next_index = torch.where(following < count[:, None], following, torch.zeros_like(following))
    return valid, next_index


def _clip_half_plane(
    polygon: Tensor, count: Tensor, signed_distance: Tensor, tolerance: Tensor, max_vertices: int
) -> tuple[Tensor, Tensor]:
    """One Sutherland-Hodgman step: keep the part of each convex polygon where the signed distance is >= 0.

    ``polygon (P, K, 2)`` with ``count (P,)`` valid leading vertices; ``signed_distance (P, K)`` of each vertex
    (positive inside); ``tolerance (P,)``. Returns the clipped ``(P, max_vertices, 2)`` polygon and its count.
    """
    num, slots = polygon.shape[:2]
    valid, next_index = _next_index(count, slots)
    d = torch.where(
        signed_distance.abs() <= tolerance[:, None], torch.zeros_like(signed_distance), signed_distance
    )
    d_next = torch.gather(d, 1, next_index)
    p_next = torch.gather(polygon, 1, next_index[..., None].expand(-1, -1, 2))
    keep = valid & (d >= 0)
    crossing = valid & (((d > 0) & (d_next < 0)) | ((d < 0) & (d_next > 0)))
    # The denominator is only used where the signs differ strictly, hence nonzero; elsewhere it is 1 so
    # that neither the value nor its gradient becomes NaN.
    t = torch.where(crossing, d / torch.where(crossing, d - d_next, torch.ones_like(d)), torch.zeros_like(d))
    crossing_point = polygon + t[..., None] * (p_next - polygon)
    # Per input vertex: itself (if kept), then the crossing on its outgoing edge (if any).
    candidates = torch.stack([polygon, crossing_point], dim=2).reshape(num, 2 * slots, 2)
    selected = torch.stack([keep, crossing], dim=2).reshape(num, 2 * slots)
    position = torch.cumsum(selected.to(torch.int64), dim=1) - 1
    # Unselected candidates go to a spare slot that is dropped afterwards.
    target = torch.where(
        selected & (position < max_vertices), position, torch.full_like(position, max_vertices)
    )
    out = polygon.new_zeros(num, max_vertices + 1, 2)
    out = out.scatter(1, target[..., None].expand(-1, -1, 2), candidates)
    new_count = selected.sum(dim=1).clamp(max=max_vertices)
    return out[:, :max_vertices], new_count


def _polygon_area(polygon: Tensor, count: Tensor) -> Tensor:
    """Shoelace area ``(P,)`` of polygons ``(P, K, 2)`` with ``count`` valid vertices (0 for fewer than 3)."""
    valid, next_index = _next_index(count, polygon.shape[1])
    following = torch.gather(polygon, 1, next_index[..., None].expand(-1, -1, 2))
    cross = polygon[..., 0] * following[..., 1] - polygon[..., 1] * following[..., 0]
    return 0.5 * torch.where(valid, cross, torch.zeros_like(cross)).sum(dim=1).abs()


def _pairwise_intersection_area(a: Tensor, b: Tensor) -> Tensor:
    """BEV intersection area ``(P,)`` of float64 boxes ``a (P, 7)`` and ``b (P, 7)``, pair by pair."""
    polygon = _corners_in_frame_of(a, b)
    count = torch.full((a.shape[0],), 4, dtype=torch.int64, device=a.device)
    half_l, half_w = 0.5 * b[:, 3], 0.5 * b[:, 4]
    scale = half_l + half_w + 0.5 * (a[:, 3] + a[:, 4]) + 1.0
    tolerance = _ON_LINE_RELATIVE_TOLERANCE * scale
    # b's half-planes in its own frame: x <= l/2, -x <= l/2, y <= w/2, -y <= w/2.
    for axis, sign, half in ((0, 1.0, half_l), (0, -1.0, half_l), (1, 1.0, half_w), (1, -1.0, half_w)):
        signed_distance = half[:, None] - sign * polygon[..., axis]
        max_vertices = min(polygon.shape[1] + 1, 8)
        polygon, count = _clip_half_plane(polygon, count, signed_distance, tolerance, max_vertices)
    area = _polygon_area(polygon, count)
    # The clipped polygon lies in both boxes; rounding must not push it past the smaller one.
    return torch.minimum(area, torch.minimum(a[:, 3] * a[:, 4], b[:, 3] * b[:, 4]))


def _pair_overlap(a: Tensor, b: Tensor, with_height: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Intersection and the two sizes (areas, or volumes with height) for float64 pairs ``(P, 7)``."""
    inter = _pairwise_intersection_area(a, b)
    size_a = a[:, 3] * a[:, 4]
    size_b = b[:, 3] * b[:, 4]
    if with_height:
        inter = inter * _vertical_overlap(a, b)
        size_a = size_a * a[:, 5]
        size_b = size_b * b[:, 5]
    return inter, size_a, size_b


def _ratio(inter: Tensor, size_a: Tensor, size_b: Tensor) -> Tensor:
    union = size_a + size_b - inter
    positive = union > 0
    return torch.where(
        positive, inter / torch.where(positive, union, torch.ones_like(union)), torch.zeros_like(union)
    )


def _overlap_matrix(
    boxes_a: Tensor, boxes_b: Tensor, aligned: bool, with_height: bool, as_iou: bool, chunk_pairs: int
) -> Tensor:
    """Shared driver: IoU or intersection (area/volume) for all pairs, or aligned pairs."""
    dtype = _check_pair(boxes_a, boxes_b, aligned)
    if chunk_pairs < 1:
        raise ValueError(f"chunk_pairs must be >= 1, got {chunk_pairs}")
    a = _prepare(boxes_a)
    b = _prepare(boxes_b)
    n, m = a.shape[0], b.shape[0]
    if aligned:
        out = a.new_zeros(n, dtype=dtype)
        rows = torch.nonzero(_may_overlap(a, b, with_height)).squeeze(1)
        for start in range(0, rows.shape[0], chunk_pairs):
            idx = rows[start : start + chunk_pairs]
            out[idx] = _finish(*_pair_overlap(a[idx], b[idx], with_height), as_iou).to(dtype)
        return out

    out = a.new_zeros(n, m, dtype=dtype)
    if n == 0 or m == 0:
        return out
    rows_per_block = max(1, _MASK_BLOCK_ENTRIES // m)
    for row_start in range(0, n, rows_per_block):
        a_block = a[row_start : row_start + rows_per_block]
        pairs = torch.nonzero(_may_overlap(a_block[:, None, :], b[None, :, :], with_height))
        for start in range(0, pairs.shape[0], chunk_pairs):
            ia = pairs[start : start + chunk_pairs, 0]
            ib = pairs[start : start + chunk_pairs, 1]
            value = _finish(*_pair_overlap(a_block[ia], b[ib], with_height), as_iou)
            out[ia + row_start, ib] = value.to(dtype)
    return out


def _finish(inter: Tensor, size_a: Tensor, size_b: Tensor, as_iou: bool) -> Tensor:
    return _ratio(inter, size_a, size_b) if as_iou else inter


def intersection_area_bev(
    boxes_a: Tensor, boxes_b: Tensor, aligned: bool = False, *, chunk_pairs: int = DEFAULT_CHUNK_PAIRS
) -> Tensor:
    """Exact area of the intersection of the BEV rectangles of project boxes.

    ``boxes_a (N, 7)``, ``boxes_b (M, 7)`` (extra columns are ignored) -> ``(N, M)``, or ``(N,)`` with
    ``aligned=True`` (requires ``N == M``; pairs ``(a_i, b_i)``). Square metres, in the promoted input dtype,
    on the input device. Negative sizes count as 0.
    """
    return _overlap_matrix(
        boxes_a, boxes_b, aligned, with_height=False, as_iou=False, chunk_pairs=chunk_pairs
    )


def intersection_volume_3d(
    boxes_a: Tensor, boxes_b: Tensor, aligned: bool = False, *, chunk_pairs: int = DEFAULT_CHUNK_PAIRS
) -> Tensor:
    """Exact intersection volume of project boxes: BEV intersection area x vertical overlap.

    Shapes as in :func:`intersection_area_bev`; cubic metres.
    """
    return _overlap_matrix(boxes_a, boxes_b, aligned, with_height=True, as_iou=False, chunk_pairs=chunk_pairs)


def iou_bev(
    boxes_a: Tensor, boxes_b: Tensor, aligned: bool = False, *, chunk_pairs: int = DEFAULT_CHUNK_PAIRS
) -> Tensor:
    """Exact IoU of the rotated BEV rectangles ``(x, y, l, w, heading)`` of project boxes.

    ``boxes_a (N, 7)``, ``boxes_b (M, 7)`` -> ``(N, M)``; with ``aligned=True`` (``N == M``) -> ``(N,)`` for the
    pairs ``(a_i, b_i)``. Returned in the promoted input dtype on the input device. Pairs with zero union
    (both boxes of zero area) have IoU 0. ``chunk_pairs`` bounds how many overlapping pairs are computed at
    once (peak memory is roughly 3 kB per pair).
    """
    return _overlap_matrix(boxes_a, boxes_b, aligned, with_height=False, as_iou=True, chunk_pairs=chunk_pairs)


def iou_3d(
    boxes_a: Tensor, boxes_b: Tensor, aligned: bool = False, *, chunk_pairs: int = DEFAULT_CHUNK_PAIRS
) -> Tensor:
    """Exact 3D IoU of project boxes (rotation about the vertical axis only).

    Intersection = BEV intersection area x overlap of the vertical extents ``[z - h/2, z + h/2]``; union =
    sum of volumes - intersection. Shapes, dtype and device as in :func:`iou_bev`; zero union gives 0.
    """
    return _overlap_matrix(boxes_a, boxes_b, aligned, with_height=True, as_iou=True, chunk_pairs=chunk_pairs)
