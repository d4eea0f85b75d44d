"""Solid primitives and vectorised ray intersection.

Every primitive is a canonical solid under an affine map ``x = A q + c``: the cube ``[-1, 1]^3``
(``BOX``), the unit ball (``ELLIPSOID``) or the unit-radius cylinder ``x^2 + y^2 <= 1, |z| <= 1``
(``CYLINDER``). A ray ``o + t d`` maps to ``A^-1 (o - c) + t A^-1 d`` in canonical space with the same
``t``, so one intersection routine per canonical solid covers oriented boxes, ellipsoids, spheres,
elliptic and tilted cylinders. Normals map back with ``A^-T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOX, ELLIPSOID, CYLINDER = 0, 1, 2
_T_MIN = 1e-5  # hits closer than this along the ray are ignored (self-intersection of shadow rays)


@dataclass(frozen=True)
class Part:
    """A primitive in some frame: the points ``matrix @ q + centre`` for ``q`` in the canonical solid."""

    kind: int
    matrix: np.ndarray  # (3, 3)
    centre: np.ndarray  # (3,)
    material: int

    def half_extent(self) -> np.ndarray:
        """Half size ``(3,)`` of the tight axis-aligned bounding box around ``centre``."""
        A = self.matrix
        if self.kind == BOX:
            return np.abs(A).sum(axis=1)
        if self.kind == ELLIPSOID:
            return np.sqrt((A**2).sum(axis=1))
        return np.sqrt(A[:, 0] ** 2 + A[:, 1] ** 2) + np.abs(A[:, 2])

    def moved(self, rotation: np.ndarray, translation: np.ndarray) -> Part:
        """This part after ``x -> rotation @ x + translation``."""
        return Part(self.kind, rotation @ self.matrix, rotation @ self.centre + translation, self.material)


def rows_times(vectors: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``vectors (..., 3) @ matrix.T`` with element-wise arithmetic.

    BLAS would be faster on an idle machine, but its worker threads spin and thrash when the (2-core)
    machine is busy, which made large products 10x slower; this path is single-threaded and predictable.
    """
    return (
        vectors[..., 0:1] * matrix[:, 0] + vectors[..., 1:2] * matrix[:, 1] + vectors[..., 2:3] * matrix[:, 2]
    )


def parts_bounds(parts: list[Part]) -> tuple[np.ndarray, np.ndarray]:
    """Tight axis-aligned bounds ``(lo (3,), hi (3,))`` of the union of ``parts``."""
    lo = np.min([p.centre - p.half_extent() for p in parts], axis=0)
    hi = np.max([p.centre + p.half_extent() for p in parts], axis=0)
    return lo, hi


def _safe(d: np.ndarray) -> np.ndarray:
    return np.where(np.abs(d) < 1e-12, 1e-12, d)


def _hit_box(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inv = 1.0 / _safe(d)
    t1 = (-1.0 - o) * inv
    t2 = (1.0 - o) * inv
    tmin = np.minimum(t1, t2)
    t_far = np.maximum(t1, t2).min(axis=1)
    axis = np.argmax(tmin, axis=1)
    rows = np.arange(len(d))
    t_near = tmin[rows, axis]
    hit = (t_near <= t_far) & (t_near > _T_MIN)
    normal = np.zeros_like(d)
    normal[rows, axis] = -np.sign(d[rows, axis])
    return np.where(hit, t_near, np.inf), normal


def _hit_ellipsoid(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = (d * d).sum(axis=-1)
    b = (o * d).sum(axis=-1)
    c = (o * o).sum(axis=-1) - 1.0
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    hit = (disc >= 0) & (t > _T_MIN)
    t = np.where(hit, t, np.inf)
    normal = o + np.where(hit, t, 0.0)[:, None] * d
    return t, normal


def _hit_cylinder(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ox, oy, oz = o[..., 0], o[..., 1], o[..., 2]
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - 1.0
    disc = b * b - a * c
    parallel = a < 1e-12
    sq = np.sqrt(np.maximum(disc, 0.0))
    a_safe = np.where(parallel, 1.0, a)
    side_near = np.where(parallel, np.where(c <= 0, -np.inf, np.inf), (-b - sq) / a_safe)
    side_far = np.where(parallel, np.inf, (-b + sq) / a_safe)
    inv_dz = 1.0 / _safe(dz)
    z1, z2 = (-1.0 - oz) * inv_dz, (1.0 - oz) * inv_dz
    cap_near, cap_far = np.minimum(z1, z2), np.maximum(z1, z2)
    t_near = np.maximum(side_near, cap_near)
    t_far = np.minimum(side_far, cap_far)
    hit = (parallel | (disc >= 0)) & (t_near <= t_far) & (t_near > _T_MIN)
    t = np.where(hit, t_near, np.inf)
    t0 = np.where(hit, t_near, 0.0)
    on_side = side_near >= cap_near
    normal = np.stack(
        [
            np.where(on_side, ox + t0 * dx, 0.0),
            np.where(on_side, oy + t0 * dy, 0.0),
            np.where(on_side, 0.0, -np.sign(dz)),
        ],
        axis=-1,
    )
    return t, normal


def _hit_canonical(kind: int, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if kind == BOX:
        return _hit_box(o, d)
    if kind == ELLIPSOID:
        return _hit_ellipsoid(o, d)
    return _hit_cylinder(o, d)


class Primitives:
    """The scene's parts stacked into arrays, in the project frame.

    ``owner[k]`` is the index of the labelled-class object part ``k`` belongs to, or ``-1`` for
    unlabelled scenery. ``texture_rotation[k]`` / ``texture_origin[k]`` map world points into the frame
    textures are defined in (the owning object's frame), so a texture moves with its object and both
    cameras see the same pattern.
    """

    def __init__(
        self,
        parts: list[Part],
        owner: list[int],
        texture_rotation: list[np.ndarray],
        texture_origin: list[np.ndarray],
    ) -> None:
        n = len(parts)
        self.count = n
        self.kind = np.array([p.kind for p in parts], dtype=np.int64)
        self.matrix = np.array([p.matrix for p in parts]).reshape(n, 3, 3)
        self.inverse = np.linalg.inv(self.matrix) if n else np.zeros((0, 3, 3))
        self.centre = np.array([p.centre for p in parts]).reshape(n, 3)
        self.half_extent = np.array([p.half_extent() for p in parts]).reshape(n, 3)
        self.material = np.array([p.material for p in parts], dtype=np.int64)
        self.owner = np.array(owner, dtype=np.int64)
        self.texture_rotation = np.array(texture_rotation).reshape(n, 3, 3)
        self.texture_origin = np.array(texture_origin).reshape(n, 3)

    def aabb_corners(self) -> np.ndarray:
        """Corners ``(P, 8, 3)`` of every primitive's world-axis-aligned bounding box."""
        signs = np.array(
            [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64
        )
        return self.centre[:, None, :] + signs[None] * self.half_extent[:, None, :]

    def bounding_radius(self) -> np.ndarray:
        """Radius ``(P,)`` of a sphere around ``centre`` that contains each primitive."""
        return np.linalg.norm(self.half_extent, axis=1)

    def intersect(self, k: int, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First hit of rays ``origins + t * dirs`` with primitive ``k``.

        ``origins`` and ``dirs`` are ``(M, 3)`` or a shared ``(3,)`` (not both shared). Returns ``t (M,)``
        (``inf`` for a miss) and the normals ``(M, 3)`` in canonical space; turn the ones you keep into world
        normals with :meth:`world_normals` (most rays of a window end up occluded, so that is done lazily).
        """
        inv = self.inverse[k]
        o = rows_times(origins - self.centre[k], inv)
        d = rows_times(dirs, inv)
        if d.ndim == 1:
            d = np.broadcast_to(d, o.shape)
        return _hit_canonical(int(self.kind[k]), o, d)

    def world_normals(self, k: int, canonical: np.ndarray) -> np.ndarray:
        """Canonical-space normals ``(M, 3)`` of primitive ``k`` -> unit world normals ``(M, 3)``."""
        n = rows_times(canonical, self.inverse[k].T)
        return n / np.maximum(np.sqrt((n * n).sum(axis=1, keepdims=True)), 1e-12)

    def texture_coords(self, prim: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Points ``(M, 3)`` hit on primitives ``prim (M,)`` -> their owners' texture frames ``(M, 3)``."""
        rel = points - self.texture_origin[prim]
        return np.einsum("mi,mij->mj", rel, self.texture_rotation[prim])
