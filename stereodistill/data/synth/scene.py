"""Random scene sampling: road layout, scenery (kerbs, buildings, trees, poles, signs, bushes) and
labelled-class objects (cars, vans, pedestrians, seated people, cyclists) placed without overlap.

Everything is in the project frame with the ground at ``z = GROUND_Z``. Object poses and sizes are
rounded to what a KITTI label file stores (centimetres, centiradians of ``rotation_y``), so the written
labels describe the rendered geometry exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stereodistill.data.synth import models
from stereodistill.data.synth.camera import GROUND_Z
from stereodistill.data.synth.materials import FACADE, FACADES, Material, MaterialTable, pick, srgb
from stereodistill.data.synth.presets import SynthPreset
from stereodistill.data.synth.road import RoadLayout, sample_layout
from stereodistill.data.synth.shapes import Part, Primitives
from stereodistill.geometry.angles import wrap_angle
from stereodistill.geometry.calibration import Calibration

# Size ranges (l, w, h) in metres per labelled class.
SIZE_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "Car": ((3.5, 4.8), (1.5, 1.9), (1.4, 1.7)),
    "Van": ((4.5, 5.5), (1.8, 2.1), (1.9, 2.4)),
    "Pedestrian": ((0.5, 0.95), (0.45, 0.75), (1.5, 1.95)),
    "Person_sitting": ((0.7, 1.0), (0.45, 0.65), (1.05, 1.4)),
    "Cyclist": ((1.5, 1.95), (0.5, 0.8), (1.55, 1.85)),
}
# Free space kept around each object's footprint (m), so neighbours do not touch.
_MARGIN = {"Car": 0.35, "Van": 0.35, "Pedestrian": 0.12, "Person_sitting": 0.12, "Cyclist": 0.25}
# The ego vehicle's footprint plus 3 m of free road ahead (x, y, l, w, yaw in the project frame).
_EGO = (0.5, 0.0, 8.0, 2.4, 0.0)


@dataclass(frozen=True)
class SceneObject:
    """A labelled-class object: its KITTI class, exact project box ``(7,)`` and world-frame parts."""

    kind: str
    box: np.ndarray
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class SceneryItem:
    """Unlabelled geometry; textures are defined in the frame ``rotation``, ``origin`` (world)."""

    parts: tuple[Part, ...]
    rotation: np.ndarray
    origin: np.ndarray


@dataclass(frozen=True)
class Scene:
    layout: RoadLayout
    objects: tuple[SceneObject, ...]
    scenery: tuple[SceneryItem, ...]
    materials: MaterialTable
    sun: np.ndarray  # unit vector towards the sun (project frame)
    sun_strength: float
    ambient: float
    exposure: float
    texture_seed: int

    def primitives(self) -> Primitives:
        """All parts stacked for ray casting; object parts are owned by their object's index."""
        parts: list[Part] = []
        owner: list[int] = []
        rotations: list[np.ndarray] = []
        origins: list[np.ndarray] = []
        for index, obj in enumerate(self.objects):
            rotation = models.rot_z(float(obj.box[6]))
            origin = np.array([obj.box[0], obj.box[1], GROUND_Z])
            for part in obj.parts:
                parts.append(part)
                owner.append(index)
                rotations.append(rotation)
                origins.append(origin)
        for item in self.scenery:
            for part in item.parts:
                parts.append(part)
                owner.append(-1)
                rotations.append(item.rotation)
                origins.append(item.origin)
        return Primitives(parts, owner, rotations, origins)


class Occupancy:
    """Bird's-eye-view footprints (oriented rectangles) taken so far; rejects overlapping placements."""

    def __init__(self) -> None:
        self._corners: list[np.ndarray] = []

    @staticmethod
    def _rectangle(x: float, y: float, length: float, width: float, yaw: float) -> np.ndarray:
        c, s = math.cos(yaw), math.sin(yaw)
        local = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64) * [length / 2, width / 2]
        return local @ np.array([[c, s], [-s, c]]) + [x, y]

    def free(self, x: float, y: float, length: float, width: float, yaw: float) -> bool:
        """Whether the rectangle overlaps no footprint taken so far (separating-axis test)."""
        if not self._corners:
            return True
        new = self._rectangle(x, y, length, width, yaw)  # (4, 2)
        taken = np.array(self._corners)  # (K, 4, 2)
        axes_new = new[[1, 3]] - new[0]  # (2, 2)
        axes_taken = taken[:, [1, 3]] - taken[:, [0]]  # (K, 2, 2)
        pn, pt = new @ axes_new.T, taken @ axes_new.T  # (4, 2), (K, 4, 2)
        apart_new = (pt.max(1) < pn.min(0)) | (pn.max(0) < pt.min(1))
        qn = np.einsum("pc,kac->kpa", new, axes_taken)
        qt = np.einsum("kpc,kac->kpa", taken, axes_taken)
        apart_taken = (qt.max(1) < qn.min(1)) | (qn.max(1) < qt.min(1))
        overlapping = ~(apart_new.any(1) | apart_taken.any(1))
        return not bool(overlapping.any())

    def take(self, x: float, y: float, length: float, width: float, yaw: float) -> None:
        self._corners.append(self._rectangle(x, y, length, width, yaw))


# ------------------------------------------------------------------------------------------- sampling
def sample_scene(preset: SynthPreset, calib: Calibration, rng: np.random.Generator) -> Scene:
    """A random street scene for one frame (``calib`` decides which objects are in the camera's view)."""
    layout = sample_layout(rng, preset.label_range)
    mats = MaterialTable()
    occupancy = Occupancy()
    occupancy.take(*_EGO)
    scenery = _sample_scenery(rng, layout, mats, occupancy)
    placer = _ObjectPlacer(rng, layout, mats, occupancy, calib, preset)
    placer.fill()
    elevation = math.radians(rng.uniform(25.0, 65.0))
    azimuth = rng.uniform(-math.pi, math.pi)
    sun = np.array(
        [
            math.cos(elevation) * math.cos(azimuth),
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
        ]
    )
    return Scene(
        layout=layout,
        objects=tuple(placer.objects),
        scenery=tuple(scenery),
        materials=mats,
        sun=sun,
        sun_strength=float(rng.uniform(0.85, 1.1)),
        ambient=float(rng.uniform(0.28, 0.42)),
        exposure=float(rng.uniform(0.9, 1.15)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _item(parts: list[Part], layout: RoadLayout, s: float, u: float, yaw_in_road: float) -> SceneryItem:
    """Scenery built in its own frame, placed at road coordinates ``(s, u)`` on the ground."""
    x, y = layout.to_world(s, u)
    yaw = layout.yaw + yaw_in_road
    world = models.place(parts, float(x), float(y), GROUND_Z, yaw)
    return SceneryItem(tuple(world), models.rot_z(yaw), np.array([float(x), float(y), GROUND_Z]))


def _spans_outside_crossing(
    layout: RoadLayout, s0: float, s1: float, pad: float
) -> list[tuple[float, float]]:
    """``[s0, s1]`` minus the intersecting road (widened by ``pad``)."""
    if layout.crossing is None:
        return [(s0, s1)]
    a, b = (
        layout.crossing - layout.crossing_half_width - pad,
        layout.crossing + layout.crossing_half_width + pad,
    )
    return [(lo, hi) for lo, hi in ((s0, min(s1, a)), (max(s0, b), s1)) if hi > lo]


def _sample_scenery(
    rng: np.random.Generator, layout: RoadLayout, mats: MaterialTable, occupancy: Occupancy
) -> list[SceneryItem]:
    items: list[SceneryItem] = []
    kerb = mats.add(Material(srgb(0.68, 0.67, 0.64), 0.2, 3.0, 3, reflectivity=0.35))
    for side in (-1, 1):
        edge = layout.kerb_u(side)
        walk = layout.sidewalk_width(side)
        for lo, hi in _spans_outside_crossing(layout, -70.0, 220.0, 0.0):
            for a in np.arange(lo, hi, 15.0):
                b = min(a + 15.0, hi)
                part = models.box((b - a, 0.2, 0.13), (0.0, 0.0, 0.065), kerb)
                items.append(_item([part], layout, (a + b) / 2, edge + side * 0.1, 0.0))
        setback = rng.uniform(0.5, 6.0)
        if rng.random() < 0.85:
            items += _buildings(rng, layout, mats, side, abs(edge) + walk + setback)
        if rng.random() < 0.65:
            spacing = rng.uniform(6.0, 14.0)
            in_verge = setback > 2.5 and rng.random() < 0.5
            u_tree = edge + side * ((walk + setback / 2) if in_verge else (walk - 0.7))
            for lo, hi in _spans_outside_crossing(layout, -40.0, 150.0, 2.0):
                for s in np.arange(lo + rng.uniform(0, spacing), hi, spacing):
                    s_t = float(s + rng.normal(0, 0.4))
                    x, y = layout.to_world(s_t, u_tree)
                    if occupancy.free(float(x), float(y), 1.0, 1.0, layout.yaw):
                        occupancy.take(float(x), float(y), 1.0, 1.0, layout.yaw)
                        parts = models.tree_parts(rng, mats, crown_bottom=rng.uniform(2.6, 3.5))
                        items.append(_item(parts, layout, s_t, u_tree, 0.0))
        if rng.random() < 0.55:
            spacing = rng.uniform(25.0, 40.0)
            u_pole = edge + side * 0.45
            for lo, hi in _spans_outside_crossing(layout, -50.0, 150.0, 1.0):
                for s in np.arange(lo + rng.uniform(0, spacing), hi, spacing):
                    x, y = layout.to_world(float(s), u_pole)
                    if occupancy.free(float(x), float(y), 0.6, 0.6, layout.yaw):
                        occupancy.take(float(x), float(y), 0.6, 0.6, layout.yaw)
                        parts = models.street_light_parts(mats, rng.uniform(6.0, 8.0), rng.uniform(1.0, 2.0))
                        # the arm points along local +y; turn it towards the road
                        items.append(_item(parts, layout, float(s), u_pole, 0.0 if side < 0 else math.pi))
        for _ in range(rng.integers(0, 2)):
            s = float(rng.uniform(5.0, 60.0))
            u_sign = edge + side * 0.35
            x, y = layout.to_world(s, u_sign)
            if not layout.in_crossing(s) and occupancy.free(float(x), float(y), 0.5, 0.8, layout.yaw):
                occupancy.take(float(x), float(y), 0.5, 0.8, layout.yaw)
                facing = math.pi if side < 0 else 0.0  # the ego side's signs face oncoming (ego) traffic
                items.append(_item(models.sign_parts(rng, mats), layout, s, u_sign, facing))
        if setback > 1.5:
            for _ in range(rng.integers(0, 8)):
                s = float(rng.uniform(-20.0, 100.0))
                if layout.in_crossing(s):
                    continue
                u_bush = edge + side * (walk + rng.uniform(0.8, setback - 0.4))
                items.append(_item(models.bush_parts(rng, mats), layout, s, u_bush, 0.0))
    if rng.random() < 0.35:
        far = float(rng.uniform(110.0, 200.0))
        facade = _facade_material(rng, mats)
        width, depth, height = rng.uniform(60, 110), rng.uniform(10, 20), rng.uniform(10, 30)
        part = models.box((depth, width, height), (0.0, 0.0, height / 2), facade)
        items.append(_item([part], layout, far + depth / 2, 0.0, 0.0))
    return items


def _facade_material(rng: np.random.Generator, mats: MaterialTable) -> int:
    accent = pick(rng, (srgb(0.15, 0.18, 0.22), srgb(0.25, 0.30, 0.38), srgb(0.10, 0.10, 0.12)))
    return mats.add(
        Material(
            pick(rng, FACADES, 0.1),
            noise_amplitude=rng.uniform(0.1, 0.3),
            noise_frequency=rng.uniform(0.5, 2.0),
            octaves=4,
            reflectivity=rng.uniform(0.25, 0.5),
            pattern=FACADE,
            accent=accent,
            spacing=(float(rng.uniform(2.2, 4.0)), float(rng.uniform(2.8, 3.4))),
        )
    )


def _buildings(
    rng: np.random.Generator, layout: RoadLayout, mats: MaterialTable, side: int, face_distance: float
) -> list[SceneryItem]:
    """A row of buildings whose street faces stand ``face_distance`` (+ jitter) from the road centre line."""
    items = []
    s = -70.0 + rng.uniform(0, 10)
    while s < 220.0:
        length = rng.uniform(8.0, 30.0)
        gap = rng.uniform(1.0, 8.0) if rng.random() < 0.5 else 0.0
        if rng.random() < 0.12:  # an empty lot
            s += length + gap
            continue
        spans = _spans_outside_crossing(layout, s, s + length, 2.0)
        depth, height = rng.uniform(8.0, 16.0), rng.uniform(4.0, 18.0)
        face = face_distance + rng.uniform(0.0, 1.5)
        material = _facade_material(rng, mats)
        for lo, hi in spans:
            if hi - lo < 3.0:
                continue
            part = models.box((hi - lo, depth, height), (0.0, 0.0, height / 2), material)
            items.append(_item([part], layout, (lo + hi) / 2, side * (face + depth / 2), 0.0))
        s += length + gap
    return items


class _ObjectPlacer:
    """Places labelled-class objects: in-view ones up to ``label_range``, far ones that end up DontCare, and
    a few behind the ego (seen by the LiDAR only, unlabelled as in KITTI)."""

    def __init__(
        self,
        rng: np.random.Generator,
        layout: RoadLayout,
        mats: MaterialTable,
        occupancy: Occupancy,
        calib: Calibration,
        preset: SynthPreset,
    ) -> None:
        self.rng, self.layout, self.mats, self.occupancy = rng, layout, mats, occupancy
        self.calib, self.preset = calib, preset
        self.objects: list[SceneObject] = []

    # ----------------------------------------------------------------------------- driver
    def fill(self) -> None:
        rng, preset = self.rng, self.preset
        lo, hi = preset.objects_per_frame
        target = int(rng.integers(lo, hi + 1))
        placed = attempts = 0
        while placed < target and attempts < 40 * target:
            attempts += 1
            placed += self._place_one((2.0, preset.label_range), want_in_view=True)
        for _ in range(int(rng.integers(1, 5))):
            for _ in range(20):
                if self._place_one((preset.label_range + 2.0, preset.scene_range), want_in_view=True):
                    break
        # LiDAR-only objects behind the ego; none beside it inside the anchor grid, where they would be
        # unlabelled positives for the LiDAR teacher
        for _ in range(int(rng.integers(1, 6))):
            for _ in range(20):
                if self._place_one((-40.0, 1.0), want_in_view=False):
                    break

    def _place_one(self, s_range: tuple[float, float], want_in_view: bool) -> int:
        """Try one random placement; returns how many objects were placed (0, 1 or 2).

        ``s_range`` is the forward range in metres: positions are drawn along the road and the object's
        project-frame ``x`` must fall in it too. ``want_in_view``: whether its centre must project into image_2.
        """
        rng, layout = self.rng, self.layout
        draw = rng.random()
        if draw < 0.33:
            candidate = self._lane_car(s_range)
        elif draw < 0.58:
            candidate = self._parked_car(s_range)
        elif draw < 0.64:
            candidate = self._crossing_car() if layout.crossing is not None else self._lane_car(s_range)
        elif draw < 0.78:
            candidate = self._sidewalk_person(s_range)
        elif draw < 0.83:
            candidate = self._crossing_person(s_range)
        elif draw < 0.85:
            candidate = self._sitting_person(s_range)
        else:
            candidate = self._cyclist(s_range)
        if candidate is None:
            return 0
        kind, s, u, heading = candidate
        if kind == "Car" and rng.random() < 0.08:
            kind = "Van"
        obj = self._try_add(kind, s, u, heading, s_range, want_in_view)
        if obj is None:
            return 0
        if kind == "Pedestrian" and rng.random() < 0.3:  # a companion walking alongside
            side = rng.choice([-1.0, 1.0])
            companion = self._try_add(
                kind,
                s + rng.uniform(-1.2, 1.2),
                u + side * rng.uniform(0.6, 0.9),
                heading + rng.normal(0, 0.1),
                (s_range[0] - 2, s_range[1] + 2),
                want_in_view,
            )
            return 1 + int(companion is not None)
        return 1

    # ----------------------------------------------------------------------------- candidate poses
    def _lane_car(self, s_range: tuple[float, float]) -> tuple[str, float, float, float] | None:
        rng, layout = self.rng, self.layout
        lane = layout.lanes[int(rng.integers(len(layout.lanes)))]
        s = rng.uniform(*s_range)
        if abs(lane.centre) < layout.lane_width / 2 and -8.0 < s < 8.0:
            return None  # keep the ego lane clear around the ego
        heading = (0.0 if lane.direction > 0 else math.pi) + rng.normal(0.0, math.radians(2.5))
        if rng.random() < 0.1:
            heading += rng.choice([-1.0, 1.0]) * math.radians(rng.uniform(5.0, 15.0))  # changing lanes
        return "Car", s, lane.centre + rng.normal(0.0, 0.2), heading

    def _parked_car(self, s_range: tuple[float, float]) -> tuple[str, float, float, float] | None:
        rng, layout = self.rng, self.layout
        sides = [side for side, has in ((-1, layout.parking_right), (1, layout.parking_left)) if has]
        if not sides:
            return self._lane_car(s_range)
        side = sides[int(rng.integers(len(sides)))]
        s = rng.uniform(*s_range)
        if layout.in_crossing(s):
            return None
        reversed_ = rng.random() < 0.25
        heading = (math.pi if reversed_ else 0.0) + rng.normal(0.0, math.radians(3.0))
        u = layout.kerb_u(side) - side * rng.uniform(1.05, 1.25)
        return "Car", s, u, heading

    def _crossing_car(self) -> tuple[str, float, float, float] | None:
        rng, layout = self.rng, self.layout
        assert layout.crossing is not None
        if rng.random() < 0.7:  # driving along the intersecting road
            direction = rng.choice([-1.0, 1.0])
            s = layout.crossing - direction * rng.uniform(1.4, 2.2)
            u = rng.uniform(-25.0, 25.0)
            return "Car", s, u, direction * math.pi / 2 + rng.normal(0.0, math.radians(3.0))
        s = layout.crossing + rng.uniform(-1.0, 1.0) * layout.crossing_half_width
        u = rng.uniform(layout.road_right + 1.0, layout.road_left - 1.0)
        return "Car", s, u, rng.choice([-1.0, 1.0]) * math.radians(rng.uniform(15.0, 75.0))  # turning

    def _sidewalk_person(self, s_range: tuple[float, float]) -> tuple[str, float, float, float] | None:
        rng, layout = self.rng, self.layout
        side = int(rng.choice([-1, 1]))
        s = rng.uniform(*s_range)
        width = layout.sidewalk_width(side)
        u = layout.kerb_u(side) + side * rng.uniform(0.7, max(width - 0.5, 0.75))
        if rng.random() < 0.75:
            heading = rng.choice([0.0, math.pi]) + rng.normal(0.0, math.radians(12.0))
        else:
            heading = rng.uniform(-math.pi, math.pi)
        return "Pedestrian", s, u, heading

    def _crossing_person(self, s_range: tuple[float, float]) -> tuple[str, float, float, float] | None:
        rng, layout = self.rng, self.layout
        zebra = layout.zebra()
        if zebra is not None and rng.random() < 0.6:
            s = rng.uniform(zebra[0] + 0.5, zebra[1] - 0.5)
        else:
            s = rng.uniform(*s_range)
        u = rng.uniform(layout.road_right + 0.5, layout.road_left - 0.5)
        heading = rng.choice([-1.0, 1.0]) * math.pi / 2 + rng.normal(0.0, math.radians(12.0))
        return "Pedestrian", s, u, heading

    def _sitting_person(self, s_range: tuple[float, float]) -> tuple[str, float, float, float] | None:
        rng, layout = self.rng, self.layout
        side = int(rng.choice([-1, 1]))
        u = layout.kerb_u(side) + side * (layout.sidewalk_width(side) - 0.55)
        return (
            "Person_sitting",
            rng.uniform(*s_range),
            u,
            -side * math.pi / 2 + rng.normal(0.0, math.radians(10.0)),
        )

    def _cyclist(self, s_range: tuple[float, float]) -> tuple[str, float, float, float] | None:
        rng, layout = self.rng, self.layout
        s = rng.uniform(*s_range)
        draw = rng.random()
        if draw < 0.6:
            lane = layout.lanes[0]
            return (
                "Cyclist",
                s,
                lane.centre - layout.lane_width / 2 + rng.uniform(0.6, 1.0),
                rng.normal(0.0, 0.06),
            )
        if draw < 0.85:
            lane = layout.lanes[-1]
            u = lane.centre + lane.direction * (layout.lane_width / 2 - rng.uniform(0.6, 1.0))
            return "Cyclist", s, u, (0.0 if lane.direction > 0 else math.pi) + rng.normal(0.0, 0.06)
        u = rng.uniform(layout.road_right + 0.8, layout.road_left - 0.8)
        return "Cyclist", s, u, rng.choice([-1.0, 1.0]) * math.pi / 2 + rng.normal(0.0, 0.15)

    # ----------------------------------------------------------------------------- building objects
    def _in_view(self, x: float, y: float, h: float) -> bool:
        """Whether the box centre projects into image_2 (with a 3% margin) in front of the camera."""
        uv, depth = self.calib.project_to_image(np.array([[x, y, GROUND_Z + h / 2]]), camera=2)
        width = self.preset.image_width
        return bool(depth[0] > 1.0 and -0.03 * width <= uv[0, 0] <= 1.03 * width)

    def _try_add(
        self,
        kind: str,
        s: float,
        u: float,
        heading_in_road: float,
        s_range: tuple[float, float],
        want_in_view: bool,
    ) -> SceneObject | None:
        rng, layout = self.rng, self.layout
        (l0, l1), (w0, w1), (h0, h1) = SIZE_RANGES[kind]
        l, w, h = (round(float(rng.uniform(a, b)), 2) for a, b in ((l0, l1), (w0, w1), (h0, h1)))
        xw, yw = layout.to_world(s, u)
        x, y = round(float(xw), 2), round(float(yw), 2)
        if not s_range[0] <= x <= s_range[1]:
            return None
        if self._in_view(x, y, h) != want_in_view:
            return None
        rotation_y = round(float(wrap_angle(-(layout.yaw + heading_in_road) - math.pi / 2)), 2)
        heading = float(wrap_angle(-rotation_y - math.pi / 2))
        margin = _MARGIN[kind]
        if not self.occupancy.free(x, y, l + 2 * margin, w + 2 * margin, heading):
            return None
        self.occupancy.take(x, y, l + 2 * margin, w + 2 * margin, heading)
        if kind in ("Car", "Van"):
            local = models.car_parts(rng, self.mats, l, w, h, van=kind == "Van")
        elif kind == "Pedestrian":
            local = models.pedestrian_parts(rng, self.mats, l, w, h)
        elif kind == "Person_sitting":
            local = models.sitting_person_parts(rng, self.mats, l, w, h)
        else:
            local = models.cyclist_parts(rng, self.mats, l, w, h)
        parts = models.place(local, x, y, GROUND_Z, heading)
        box = np.array([x, y, GROUND_Z + h / 2, l, w, h, heading])
        obj = SceneObject(kind, box, tuple(parts))
        self.objects.append(obj)
        return obj
