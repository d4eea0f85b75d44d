"""The road layout of a scene and the ground texture it implies.

Road coordinates ``(s, u)``: ``s`` along the road, ``u`` to its left, origin below the ego camera;
world (project-frame) ``x, y`` are ``(s, u)`` rotated by the road's ``yaw``. The ground is the plane
``z = GROUND_Z``: asphalt between the road edges (with lane markings and, at an intersection, a zebra
crossing), paved sidewalks beyond the kerbs, then grass or dirt verges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stereodistill.data.synth.materials import srgb
from stereodistill.data.synth.textures import cell_random, fractal_noise, periodic_coverage, stripe_coverage

DASHED, SOLID, DOUBLE = 0, 1, 2
LINE_HALF_WIDTH = 0.065


@dataclass(frozen=True)
class Lane:
    centre: float  # u of the lane centre
    direction: int  # +1: traffic drives towards +s (as the ego does), -1: towards -s


@dataclass(frozen=True)
class RoadLayout:
    yaw: float  # road direction in the project frame (radians)
    lane_width: float
    lanes: tuple[Lane, ...]  # ordered by u, right to left
    markings: tuple[tuple[float, int], ...]  # (u, DASHED / SOLID / DOUBLE)
    road_right: float  # u of the right road edge (kerb face), negative
    road_left: float  # u of the left road edge, positive
    parking_right: bool  # a parking strip runs along the right edge
    parking_left: bool
    sidewalk_right: float  # sidewalk width (m) beyond the kerb
    sidewalk_left: float
    crossing: float | None  # s of an intersecting road's centre line, if any
    crossing_half_width: float
    verge_grass: tuple[bool, bool]  # (right, left): grass verge, else dirt

    def to_world(self, s: np.ndarray | float, u: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        c, sn = math.cos(self.yaw), math.sin(self.yaw)
        s, u = np.asarray(s, dtype=np.float64), np.asarray(u, dtype=np.float64)
        return s * c - u * sn, s * sn + u * c

    def to_road(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, sn = math.cos(self.yaw), math.sin(self.yaw)
        return x * c + y * sn, -x * sn + y * c

    def in_crossing(self, s: np.ndarray) -> np.ndarray:
        if self.crossing is None:
            return np.zeros(np.shape(s), dtype=bool)
        return np.abs(np.asarray(s) - self.crossing) <= self.crossing_half_width

    def kerb_u(self, side: int) -> float:
        """u of the road edge on ``side`` (+1 left, -1 right)."""
        return self.road_left if side > 0 else self.road_right

    def sidewalk_width(self, side: int) -> float:
        return self.sidewalk_left if side > 0 else self.sidewalk_right

    def zebra(self) -> tuple[float, float] | None:
        """s-interval of the zebra crossing in front of the intersection, if any."""
        if self.crossing is None:
            return None
        near = self.crossing - self.crossing_half_width
        return near - 4.5, near - 1.5


def sample_layout(rng: np.random.Generator, label_range: float) -> RoadLayout:
    lane_width = rng.uniform(3.0, 3.7)
    ego_offset = rng.normal(0.0, 0.25)  # the ego is not exactly on its lane centre
    same_right = int(rng.random() < 0.35)
    same_left = int(rng.random() < 0.3)
    opposite = int(rng.choice([0, 1, 1, 2], p=[0.15, 0.35, 0.3, 0.2]))
    centres = [-ego_offset + lane_width * k for k in range(-same_right, same_left + opposite + 1)]
    directions = [1] * (same_right + 1 + same_left) + [-1] * opposite
    lanes = tuple(Lane(c, d) for c, d in zip(centres, directions, strict=True))
    markings: list[tuple[float, int]] = []
    for a, b in zip(lanes[:-1], lanes[1:], strict=False):
        markings.append(((a.centre + b.centre) / 2, DASHED if a.direction == b.direction else DOUBLE))
    right_lane_edge = lanes[0].centre - lane_width / 2
    left_lane_edge = lanes[-1].centre + lane_width / 2
    markings += [(right_lane_edge + 0.2, SOLID), (left_lane_edge - 0.2, SOLID)]
    parking_right = bool(rng.random() < 0.65)
    parking_left = bool(rng.random() < 0.5)
    crossing = float(rng.uniform(14.0, label_range + 5.0)) if rng.random() < 0.35 else None
    return RoadLayout(
        yaw=float(rng.normal(0.0, math.radians(4.0))),
        lane_width=lane_width,
        lanes=lanes,
        markings=tuple(markings),
        road_right=right_lane_edge - (rng.uniform(2.1, 2.6) if parking_right else rng.uniform(0.3, 0.8)),
        road_left=left_lane_edge + (rng.uniform(2.1, 2.6) if parking_left else rng.uniform(0.3, 0.8)),
        parking_right=parking_right,
        parking_left=parking_left,
        sidewalk_right=float(rng.uniform(2.0, 4.5)),
        sidewalk_left=float(rng.uniform(2.0, 4.5)),
        crossing=crossing,
        crossing_half_width=float(rng.uniform(4.0, 6.5)),
        verge_grass=(bool(rng.random() < 0.6), bool(rng.random() < 0.6)),
    )


ASPHALT = np.array(srgb(0.34, 0.34, 0.35))
MARKING = np.array(srgb(0.85, 0.85, 0.82))
PAVING = np.array(srgb(0.58, 0.56, 0.53))
GRASS = np.array(srgb(0.30, 0.42, 0.18))
DIRT = np.array(srgb(0.45, 0.38, 0.28))


def ground_albedo(
    layout: RoadLayout, xy: np.ndarray, footprint: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Linear-RGB albedo ``(M, 3)`` and LiDAR reflectivity ``(M,)`` of ground points ``xy (M, 2)``."""
    s, u = layout.to_road(xy[:, 0], xy[:, 1])
    crossing = layout.in_crossing(s)
    road = ((u >= layout.road_right) & (u <= layout.road_left)) | crossing
    right_walk = ~crossing & (u < layout.road_right) & (u >= layout.road_right - layout.sidewalk_right)
    left_walk = ~crossing & (u > layout.road_left) & (u <= layout.road_left + layout.sidewalk_left)
    walk = right_walk | left_walk
    verge = ~road & ~walk

    albedo = np.empty((len(s), 3))
    reflectivity = np.empty(len(s))
    ridx = np.flatnonzero(road)
    if ridx.size:
        p = np.stack([s[ridx], u[ridx]], axis=-1)
        fp = footprint[ridx]
        grain = fractal_noise(p, 4.0, 5, fp, seed + 11, persistence=0.75)
        patches = fractal_noise(p, 0.12, 2, fp, seed + 12)
        shade = 1.0 + 0.5 * grain + 0.35 * patches
        paint = _marking_coverage(layout, s[ridx], u[ridx], fp, crossing[ridx])
        wear = 0.75 + 0.25 * fractal_noise(p, 1.5, 2, fp, seed + 13)
        paint = np.clip(paint * wear, 0.0, 1.0)
        albedo[ridx] = ASPHALT * shade[:, None] * (1 - paint[:, None]) + MARKING * paint[:, None]
        reflectivity[ridx] = 0.16 + 0.05 * grain + 0.6 * paint
    widx = np.flatnonzero(walk)
    if widx.size:
        p = np.stack([s[widx], u[widx]], axis=-1)
        fp = footprint[widx]
        tile = 0.5
        grout = periodic_coverage(p[:, 0], tile, 0.03, fp) + periodic_coverage(p[:, 1], tile, 0.03, fp)
        tint = 0.9 + 0.2 * cell_random(p, tile, seed + 14)
        shade = (
            tint * (1.0 + 0.25 * fractal_noise(p, 4.0, 3, fp, seed + 15)) * (1 - 0.4 * np.clip(grout, 0, 1))
        )
        albedo[widx] = PAVING * shade[:, None]
        reflectivity[widx] = 0.3 + 0.05 * tint
    vidx = np.flatnonzero(verge)
    if vidx.size:
        p = np.stack([s[vidx], u[vidx]], axis=-1)
        fp = footprint[vidx]
        grass = np.where(u[vidx] > 0, layout.verge_grass[1], layout.verge_grass[0])
        n = fractal_noise(p, 1.0, 6, fp, seed + 16)
        base = np.where(grass[:, None], GRASS, DIRT)
        albedo[vidx] = base * (1.0 + 0.6 * n)[:, None]
        reflectivity[vidx] = np.where(grass, 0.45, 0.32) + 0.1 * n
    return np.clip(albedo, 0.0, 1.0), np.clip(reflectivity, 0.02, 1.0)


def _marking_coverage(
    layout: RoadLayout, s: np.ndarray, u: np.ndarray, fp: np.ndarray, crossing: np.ndarray
) -> np.ndarray:
    """Fraction of each footprint covered by road paint."""
    cover = np.zeros(len(s))
    for u_m, kind in layout.markings:
        if kind == DOUBLE:
            across = stripe_coverage(u, u_m - 0.2, u_m - 0.2 + 2 * LINE_HALF_WIDTH, fp)
            across += stripe_coverage(u, u_m + 0.2 - 2 * LINE_HALF_WIDTH, u_m + 0.2, fp)
        else:
            across = stripe_coverage(u, u_m - LINE_HALF_WIDTH, u_m + LINE_HALF_WIDTH, fp)
        if kind == DASHED:
            across = across * periodic_coverage(s, 9.0, 3.0, fp)
        cover = np.maximum(cover, across)
    cover = np.where(crossing, 0.0, cover)
    zebra = layout.zebra()
    if zebra is not None:
        lanes_span = (
            layout.lanes[0].centre - layout.lane_width / 2,
            layout.lanes[-1].centre + layout.lane_width / 2,
        )
        stripes = periodic_coverage(u, 1.0, 0.5, fp) * stripe_coverage(s, zebra[0], zebra[1], fp)
        stripes *= stripe_coverage(u, lanes_span[0], lanes_span[1], fp)
        cover = np.maximum(cover, stripes)
    return cover
