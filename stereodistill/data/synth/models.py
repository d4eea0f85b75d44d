"""Object geometry: labelled-class objects and scenery built from primitives.

Object builders work in the object frame (x forward along the length, y left, z up, origin at the
bottom-face centre) and end with :func:`fit_parts`, which scales the assembly so its tight bounding box is
exactly ``l x w x h``: that box is the object's label.
"""

from __future__ import annotations

import math

import numpy as np

from stereodistill.data.synth.materials import CABIN as CABIN_PATTERN
from stereodistill.data.synth.materials import CAR_PAINTS, CLOTHES, SKIN, Material, MaterialTable, pick, srgb
from stereodistill.data.synth.shapes import BOX, CYLINDER, ELLIPSOID, Part, parts_bounds

_I = np.eye(3)


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def box(
    size: tuple[float, float, float], centre: tuple[float, float, float], material: int, rotation=_I
) -> Part:
    """A box of full ``size`` (x, y, z before ``rotation``) centred at ``centre``."""
    return Part(
        BOX, rotation @ np.diag(np.asarray(size, dtype=np.float64) / 2), np.asarray(centre, float), material
    )


def ellipsoid(radii: tuple[float, float, float], centre: tuple[float, float, float], material: int) -> Part:
    return Part(ELLIPSOID, np.diag(np.asarray(radii, dtype=np.float64)), np.asarray(centre, float), material)


def cylinder(
    radii: tuple[float, float], length: float, centre: tuple[float, float, float], material: int, rotation=_I
) -> Part:
    """An (elliptic) cylinder along ``rotation``'s z axis with the given cross-section radii and length."""
    A = rotation @ np.diag([radii[0], radii[1], length / 2])
    return Part(CYLINDER, A, np.asarray(centre, dtype=np.float64), material)


def limb(a: tuple[float, float, float], b: tuple[float, float, float], radius: float, material: int) -> Part:
    """A round cylinder from point ``a`` to point ``b``."""
    pa, pb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    axis = pb - pa
    length = float(np.linalg.norm(axis))
    z = axis / length
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rotation = np.stack([x, y, z], axis=1)
    return cylinder((radius, radius), length, tuple((pa + pb) / 2), material, rotation)


def fit_parts(parts: list[Part], length: float, width: float, height: float) -> list[Part]:
    """Scale and shift ``parts`` so their tight bounds are ``[-l/2, l/2] x [-w/2, w/2] x [0, h]``."""
    lo, hi = parts_bounds(parts)
    scale = np.array([length, width, height]) / (hi - lo)
    shift = np.array([0.0, 0.0, height / 2]) - scale * (lo + hi) / 2
    return [Part(p.kind, scale[:, None] * p.matrix, scale * p.centre + shift, p.material) for p in parts]


def place(parts: list[Part], x: float, y: float, z: float, heading: float) -> list[Part]:
    """Object-frame parts -> world, for an object at ``(x, y, z)`` (bottom centre) facing ``heading``."""
    rotation = rot_z(heading)
    translation = np.array([x, y, z])
    return [p.moved(rotation, translation) for p in parts]


# ------------------------------------------------------------------------------------------- vehicles
def car_parts(
    rng: np.random.Generator, mats: MaterialTable, l: float, w: float, h: float, van: bool
) -> list[Part]:
    """Body, cabin (glass sides, painted roof), four wheels, lights and number plates."""
    paint_colour = pick(rng, CAR_PAINTS, 0.05)
    paint = mats.add(Material(paint_colour, 0.04, 1.5, 2, reflectivity=0.45))
    cabin = mats.add(
        Material(paint_colour, 0.05, 2.0, 2, 0.15, pattern=CABIN_PATTERN, accent=srgb(0.12, 0.14, 0.17))
    )
    tyre = mats.add(Material(srgb(0.07, 0.07, 0.07), 0.15, 6.0, 2, reflectivity=0.08))
    head_light = mats.add(Material(srgb(0.92, 0.92, 0.85), 0.02, 4.0, 1, reflectivity=0.7))
    tail_light = mats.add(Material(srgb(0.70, 0.05, 0.04), 0.02, 4.0, 1, reflectivity=0.7))
    plate = mats.add(Material(srgb(0.95, 0.95, 0.90), 0.05, 8.0, 1, reflectivity=0.95))

    r = rng.uniform(0.34, 0.38) if van else rng.uniform(0.30, 0.34)
    body_bottom = 0.26
    body_top = (rng.uniform(0.48, 0.56) if van else rng.uniform(0.58, 0.66)) * h
    body_len = l - 0.02
    parts = [box((body_len, w, body_top - body_bottom), (0.0, 0.0, (body_top + body_bottom) / 2), paint)]
    if van:
        cab_len = 0.82 * body_len
        parts.append(
            box(
                (cab_len, 0.96 * w, h - body_top), (-(body_len - cab_len) / 2, 0.0, (h + body_top) / 2), cabin
            )
        )
    else:
        parts += _greenhouse(l, w, h, body_top, cabin, rng)
    front_axle = l / 2 - rng.uniform(0.75, 0.95)
    rear_axle = -l / 2 + rng.uniform(0.85, 1.05)
    for ax in (front_axle, rear_axle):
        for side in (-1.0, 1.0):
            parts.append(cylinder((r, r), 0.2, (ax, side * (w / 2 - 0.12), r), tyre, rot_x(math.pi / 2)))
    light_z = body_top - 0.12
    for side in (-1.0, 1.0):
        parts.append(box((0.02, 0.24, 0.10), (l / 2 - 0.01, side * (w / 2 - 0.22), light_z), head_light))
        parts.append(box((0.02, 0.22, 0.10), (-l / 2 + 0.01, side * (w / 2 - 0.20), light_z), tail_light))
    for end in (-1.0, 1.0):
        parts.append(box((0.02, 0.50, 0.12), (end * (l / 2 - 0.01), 0.0, 0.45), plate))
    return fit_parts(parts, l, w, h)


def _greenhouse(
    l: float, w: float, h: float, body_top: float, material: int, rng: np.random.Generator
) -> list[Part]:
    """A car's cabin: a roof box with a sloped windscreen and rear window (thin tilted slabs whose outer
    faces run from the roof edges down to the body; their inner sides are buried in the roof box and body)."""
    rise = h - body_top
    roof_len = rng.uniform(0.28, 0.36) * l
    roof_rear = -rng.uniform(0.12, 0.2) * l
    roof_front = roof_rear + roof_len
    width = 0.86 * w
    parts = [box((roof_len, width, rise), ((roof_front + roof_rear) / 2, 0.0, body_top + rise / 2), material)]
    thickness = 0.25
    for edge, run, sign in (
        (roof_front, rng.uniform(0.85, 1.1) * rise, 1.0),
        (roof_rear, rng.uniform(0.6, 0.9) * rise, -1.0),
    ):
        slope = math.hypot(run, rise)
        tilt = math.atan2(rise, run)  # slab angle above horizontal
        # outer face from (edge, h) to (edge + sign * run, body_top); the slab extends inwards (down and back)
        inward = np.array([-sign * math.sin(tilt), 0.0, -math.cos(tilt)])
        mid = np.array([edge + sign * run / 2, 0.0, body_top + rise / 2]) + inward * thickness / 2
        parts.append(box((slope, width, thickness), tuple(mid), material, rot_y(sign * tilt)))
    return parts


# ------------------------------------------------------------------------------------------- people
def _person_materials(rng: np.random.Generator, mats: MaterialTable) -> tuple[int, int, int, int, int]:
    top = mats.add(Material(pick(rng, CLOTHES), 0.15, 5.0, 2, reflectivity=0.35))
    legs = mats.add(Material(pick(rng, CLOTHES), 0.12, 5.0, 2, reflectivity=0.3))
    skin = mats.add(Material(pick(rng, SKIN, 0.04), 0.05, 8.0, 1, reflectivity=0.4))
    hair = mats.add(
        Material(pick(rng, (srgb(0.08, 0.06, 0.05), srgb(0.35, 0.25, 0.15), srgb(0.7, 0.6, 0.4))), 0.2)
    )
    shoes = mats.add(Material(srgb(0.1, 0.1, 0.1), 0.1, 6.0, 1, reflectivity=0.2))
    return top, legs, skin, hair, shoes


def _head(top_z: float, x: float, skin: int, hair: int) -> list[Part]:
    return [
        ellipsoid((0.10, 0.085, 0.115), (x, 0.0, top_z - 0.115), skin),
        ellipsoid((0.095, 0.088, 0.09), (x - 0.015, 0.0, top_z - 0.085), hair),
    ]


def pedestrian_parts(
    rng: np.random.Generator, mats: MaterialTable, l: float, w: float, h: float
) -> list[Part]:
    """A walking person: legs in a stride, feet, torso, swinging arms, head with hair."""
    top, legs, skin, hair, shoes = _person_materials(rng, mats)
    s = h / 1.75
    hip = 0.52 * h
    stride = max(l / 2 - 0.12 * s, 0.02)
    phase = rng.choice([-1.0, 1.0])
    parts: list[Part] = []
    for side, sign in ((-1.0, phase), (1.0, -phase)):
        foot = (sign * stride, side * 0.1 * s, 0.06 * s)
        parts.append(limb((0.0, side * 0.1 * s, hip), foot, 0.075 * s, legs))
        parts.append(box((0.24 * s, 0.1 * s, 0.08 * s), (foot[0] + 0.04 * s, foot[1], 0.04 * s), shoes))
    shoulder_z = 0.81 * h
    parts.append(
        cylinder(
            (0.12 * s, 0.19 * s), shoulder_z - hip + 0.06, (0.0, 0.0, (shoulder_z + hip) / 2 + 0.02), top
        )
    )
    swing = stride * 0.6
    for side, sign in ((-1.0, -phase), (1.0, phase)):
        hand = (sign * swing, side * (w / 2 - 0.045), 0.47 * h)
        parts.append(limb((0.0, side * 0.22 * s, shoulder_z), hand, 0.045 * s, top))
    parts.extend(_head(h, 0.01, skin, hair))
    return fit_parts(parts, l, w, h)


def sitting_person_parts(
    rng: np.random.Generator, mats: MaterialTable, l: float, w: float, h: float
) -> list[Part]:
    """A seated person facing +x: upright torso, horizontal thighs, vertical shins, hands on knees."""
    top, legs, skin, hair, shoes = _person_materials(rng, mats)
    s = h / 1.3
    seat = 0.45 * s
    back = -l / 2 + 0.12 * s
    knee_x = l / 2 - 0.1 * s
    parts: list[Part] = []
    for side in (-1.0, 1.0):
        y = side * 0.1 * s
        parts.append(limb((back + 0.05, y, seat), (knee_x, y, seat), 0.08 * s, legs))
        parts.append(limb((knee_x, y, seat), (knee_x, y, 0.08 * s), 0.065 * s, legs))
        parts.append(box((0.24 * s, 0.1 * s, 0.08 * s), (knee_x + 0.06 * s, y, 0.04 * s), shoes))
    shoulder_z = seat + 0.55 * s
    parts.append(
        cylinder((0.12 * s, 0.19 * s), shoulder_z - seat, (back + 0.02, 0.0, (shoulder_z + seat) / 2), top)
    )
    for side in (-1.0, 1.0):
        parts.append(
            limb(
                (back + 0.02, side * 0.22 * s, shoulder_z),
                (knee_x - 0.1, side * (w / 2 - 0.05), seat + 0.1),
                0.045 * s,
                top,
            )
        )
    parts.extend(_head(h, back + 0.04, skin, hair))
    return fit_parts(parts, l, w, h)


def cyclist_parts(rng: np.random.Generator, mats: MaterialTable, l: float, w: float, h: float) -> list[Part]:
    """A bicycle (wheels, frame, handlebar) with a rider leaning forward."""
    top, legs, skin, hair, shoes = _person_materials(rng, mats)
    frame = mats.add(Material(pick(rng, CAR_PAINTS), 0.05, 4.0, 1, reflectivity=0.5))
    tyre = mats.add(Material(srgb(0.06, 0.06, 0.06), 0.1, 6.0, 1, reflectivity=0.1))
    rw = 0.34
    rear, front = -l / 2 + rw, l / 2 - rw
    parts = [
        cylinder((rw, rw), 0.05, (rear, 0.0, rw), tyre, rot_x(math.pi / 2)),
        cylinder((rw, rw), 0.05, (front, 0.0, rw), tyre, rot_x(math.pi / 2)),
    ]
    crank = (rear + 0.42 * (front - rear), 0.0, rw - 0.02)
    saddle = (rear + 0.25 * (front - rear), 0.0, rw + 0.55)
    bar = (front - 0.08, 0.0, rw + 0.62)
    for a, b in (
        ((rear, 0.0, rw), crank),
        (crank, saddle),
        (saddle, bar),
        (crank, bar),
        (bar, (front, 0.0, rw)),
    ):
        parts.append(limb(a, b, 0.025, frame))
    parts.append(limb((bar[0], -0.28, bar[2]), (bar[0], 0.28, bar[2]), 0.02, frame))
    hip = (saddle[0], 0.0, saddle[2] + 0.08)
    lean = rng.uniform(0.45, 0.8)  # torso angle from vertical
    torso_len = 0.55
    shoulder = (hip[0] + torso_len * math.sin(lean), 0.0, hip[2] + torso_len * math.cos(lean))
    parts.append(
        cylinder((0.11, 0.18), torso_len + 0.06, tuple((np.array(hip) + shoulder) / 2), top, rot_y(lean))
    )
    for side in (-1.0, 1.0):
        parts.append(
            limb((shoulder[0], side * 0.2, shoulder[2]), (bar[0], side * (w / 2 - 0.04), bar[2]), 0.045, top)
        )
        pedal = (crank[0] + side * 0.12, side * 0.12, crank[2] + side * 0.1)
        parts.append(limb((hip[0], side * 0.1, hip[2]), pedal, 0.075, legs))
    head_top = h
    parts.extend(_head(head_top, shoulder[0] + 0.08, skin, hair))
    return fit_parts(parts, l, w, h)


# ------------------------------------------------------------------------------------------- scenery
def tree_parts(rng: np.random.Generator, mats: MaterialTable, crown_bottom: float) -> list[Part]:
    """Trunk and one or two leafy crowns; nothing below ``crown_bottom`` except the trunk."""
    bark = mats.add(Material(srgb(0.30, 0.24, 0.18), 0.3, 6.0, 3, reflectivity=0.3))
    leaves = mats.add(
        Material(
            pick(rng, (srgb(0.20, 0.35, 0.12), srgb(0.28, 0.40, 0.15), srgb(0.18, 0.28, 0.14))),
            0.6,
            2.5,
            4,
            0.5,
        )
    )
    rxy, rz = rng.uniform(1.3, 2.8), rng.uniform(1.4, 3.0)
    centre_z = crown_bottom + rz
    trunk_r = rng.uniform(0.10, 0.25)
    parts = [cylinder((trunk_r, trunk_r), centre_z, (0.0, 0.0, centre_z / 2), bark)]
    parts.append(ellipsoid((rxy, rxy * rng.uniform(0.85, 1.15), rz), (0.0, 0.0, centre_z), leaves))
    if rng.random() < 0.5:
        dx, dy = rng.uniform(-0.5, 0.5, size=2) * rxy
        parts.append(ellipsoid((0.7 * rxy, 0.7 * rxy, 0.7 * rz), (dx, dy, centre_z + 0.6 * rz), leaves))
    return parts


def street_light_parts(mats: MaterialTable, height: float, arm: float) -> list[Part]:
    """A pole with an arm reaching towards +y (turn it to face the road)."""
    metal = mats.add(Material(srgb(0.45, 0.46, 0.47), 0.08, 3.0, 2, reflectivity=0.55))
    return [
        cylinder((0.08, 0.08), height, (0.0, 0.0, height / 2), metal),
        box((0.12, arm, 0.1), (0.0, arm / 2, height - 0.05), metal),
        box((0.3, 0.5, 0.12), (0.0, arm, height - 0.15), metal),
    ]


def sign_parts(rng: np.random.Generator, mats: MaterialTable) -> list[Part]:
    """A traffic sign on a post, the plate facing +x."""
    metal = mats.add(Material(srgb(0.5, 0.5, 0.5), 0.05, 3.0, 1, reflectivity=0.5))
    face = pick(
        rng, (srgb(0.8, 0.1, 0.1), srgb(0.1, 0.3, 0.8), srgb(0.95, 0.85, 0.1), srgb(0.95, 0.95, 0.95))
    )
    plate = mats.add(Material(face, 0.05, 3.0, 1, reflectivity=0.95))
    height = rng.uniform(2.2, 2.8)
    return [
        cylinder((0.04, 0.04), height, (0.0, 0.0, height / 2), metal),
        box((0.04, 0.65, 0.65), (0.04, 0.0, height + 0.2), plate),
    ]


def bush_parts(rng: np.random.Generator, mats: MaterialTable) -> list[Part]:
    leaves = mats.add(Material(srgb(0.18, 0.32, 0.12), 0.6, 3.0, 3, reflectivity=0.5))
    r = rng.uniform(0.5, 1.3)
    rz = rng.uniform(0.4, 1.0)
    return [ellipsoid((r, r * rng.uniform(0.7, 1.3), rz), (0.0, 0.0, rz * 0.35), leaves)]
