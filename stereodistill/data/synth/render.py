"""Stereo image rendering: ray-cast the scene from camera 2 and camera 3 and shade it.

Shading is Lambertian (sun + sky ambient) on procedural albedo, with sun shadows cast onto the ground,
distance haze, a sky gradient with clouds, exposure, mild blur and sensor noise. Textures live on the
surfaces, so both views see the same pattern shifted by the disparity.
"""

from __future__ import annotations

import numpy as np

from stereodistill.data.synth.camera import GROUND_Z, pixel_rays
from stereodistill.data.synth.materials import CABIN, FACADE, srgb
from stereodistill.data.synth.presets import SynthPreset
from stereodistill.data.synth.raycast import (
    GROUND,
    MISS,
    NEAREST_SURFACE,
    Hits,
    cast,
    image_windows,
    pixel_windows,
    shadow_mask,
)
from stereodistill.data.synth.road import ground_albedo
from stereodistill.data.synth.scene import Scene
from stereodistill.data.synth.shapes import Primitives
from stereodistill.data.synth.textures import cell_random, fractal_noise, periodic_coverage, value_noise
from stereodistill.geometry.calibration import Calibration

SKY_HORIZON = np.array(srgb(0.80, 0.85, 0.90))
SKY_ZENITH = np.array(srgb(0.38, 0.55, 0.82))
ROOF = np.array(srgb(0.36, 0.34, 0.33))
HAZE_DISTANCE = 600.0  # metres at which haze covers 1 - 1/e of a surface's colour
NOISE_SIGMA = 2.0 / 255.0


def render_view(
    scene: Scene,
    prims: Primitives,
    calib: Calibration,
    camera: int,
    preset: SynthPreset,
    rng: np.random.Generator,
) -> tuple[np.ndarray, Hits]:
    """Image ``(H, W, 3)`` uint8 of camera ``camera`` (2 or 3) and its per-pixel first hits (row-major)."""
    height, width = preset.image_height, preset.image_width
    origin, dirs = pixel_rays(calib, camera, height, width)
    windows = pixel_windows(prims, calib, camera, height, width)
    hits = cast(prims, origin, dirs, windows, GROUND_Z, count_unoccluded=camera == 2)
    linear = _shade(scene, prims, calib, camera, origin, dirs, hits, preset)
    image = linear.reshape(height, width, 3) * scene.exposure
    image = _blur(np.clip(image, 0.0, 1.0) ** (1 / 2.2))
    image += rng.normal(0.0, NOISE_SIGMA, size=image.shape)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8), hits


def _blur(image: np.ndarray) -> np.ndarray:
    """A light separable [0.15, 0.7, 0.15] blur (lens softness; also hides some aliasing)."""
    out = image * 0.7
    out[:, 1:] += 0.15 * image[:, :-1]
    out[:, :-1] += 0.15 * image[:, 1:]
    out[:, 0] += 0.15 * image[:, 0]
    out[:, -1] += 0.15 * image[:, -1]
    final = out * 0.7
    final[1:] += 0.15 * out[:-1]
    final[:-1] += 0.15 * out[1:]
    final[0] += 0.15 * out[0]
    final[-1] += 0.15 * out[-1]
    return final


def _shade(
    scene: Scene,
    prims: Primitives,
    calib: Calibration,
    camera: int,
    origin: np.ndarray,
    dirs: np.ndarray,
    hits: Hits,
    preset: SynthPreset,
) -> np.ndarray:
    """Linear RGB ``(N, 3)`` for every ray."""
    n = len(dirs)
    ray_len = np.linalg.norm(dirs, axis=1)
    unit = dirs / ray_len[:, None]
    colour = np.empty((n, 3))

    sky = np.flatnonzero(hits.prim == MISS)
    colour[sky] = _sky(unit[sky], scene.texture_seed)

    hit = np.flatnonzero(hits.prim != MISS)
    t = hits.t[hit]
    points = origin + t[:, None] * dirs[hit]
    dist = t * ray_len[hit]
    normal = hits.normal[hit]
    cos_incidence = np.abs((normal * unit[hit]).sum(axis=1))
    # pixel footprint on the surface; the sqrt compromises between a slanted surface's long and short axes
    footprint = dist / preset.focal / np.sqrt(np.maximum(cos_incidence, 0.04))
    albedo = np.empty((hit.size, 3))

    on_ground = hits.prim[hit] == GROUND
    g = np.flatnonzero(on_ground)
    albedo[g], _ = ground_albedo(scene.layout, points[g, :2], footprint[g], scene.texture_seed)
    o = np.flatnonzero(~on_ground)
    albedo[o] = _object_albedo(scene, prims, hits.prim[hit][o], points[o], normal[o], footprint[o])

    shadowed = np.zeros(hit.size, dtype=bool)
    if g.size:
        candidates = _shadow_candidates(prims, calib, camera, scene.sun, hit[g], preset)
        shadowed[g] = shadow_mask(prims, points[g], scene.sun, candidates)
    direct = np.clip((normal * scene.sun).sum(axis=1), 0.0, None) * scene.sun_strength * ~shadowed
    ambient = scene.ambient * (0.75 + 0.25 * normal[:, 2])
    lit = albedo * (ambient + direct)[:, None]
    haze = 1.0 - np.exp(-dist / HAZE_DISTANCE)
    colour[hit] = lit * (1 - haze[:, None]) + SKY_HORIZON * haze[:, None]
    return colour


def _sky(unit: np.ndarray, seed: int) -> np.ndarray:
    up = np.clip(unit[:, 2], 0.0, 1.0)
    blend = np.sqrt(up)[:, None]
    base = SKY_HORIZON * (1 - blend) + SKY_ZENITH * blend
    # clouds on a virtual plane far above: a function of direction only, so they have zero disparity
    plane = unit[:, :2] / np.maximum(unit[:, 2:3], 0.08)
    cloud = np.zeros(len(unit))
    amplitude, frequency = 0.5, 1.5
    for octave in range(4):
        cloud += amplitude * value_noise(plane * frequency, seed + 101 + octave)
        amplitude, frequency = amplitude / 2, frequency * 2
    fade = np.clip((unit[:, 2] - 0.03) / 0.12, 0.0, 1.0)  # no clouds smeared along the horizon
    cover = (np.clip((cloud - 0.5) * 3.0, 0.0, 1.0) * fade)[:, None] * 0.8
    return base * (1 - cover) + np.array([0.9, 0.9, 0.92]) * cover


def _object_albedo(
    scene: Scene,
    prims: Primitives,
    prim: np.ndarray,
    points: np.ndarray,
    normal: np.ndarray,
    footprint: np.ndarray,
) -> np.ndarray:
    """Albedo ``(M, 3)`` of hits on primitives ``prim (M,)`` at world ``points`` with world ``normal``."""
    table = scene.materials.arrays()
    mat = prims.material[prim]
    tex = prims.texture_coords(prim, points)
    noise = np.zeros(len(prim))
    octaves = table["octaves"][mat]
    for count in np.unique(octaves):
        sel = np.flatnonzero(octaves == count)
        freq = table["noise_frequency"][mat[sel]]
        noise[sel] = fractal_noise(tex[sel], freq, int(count), footprint[sel], scene.texture_seed + 3)
    albedo = table["colour"][mat] * (1.0 + table["noise_amplitude"][mat] * noise)[:, None]

    pattern = table["pattern"][mat]
    facade = np.flatnonzero(pattern == FACADE)
    if facade.size:
        albedo[facade] = _facade(
            tex[facade], normal[facade], footprint[facade], albedo[facade], table, mat[facade], scene
        )
    cabin = np.flatnonzero(pattern == CABIN)
    if cabin.size:
        roof = normal[cabin, 2] > 0.8
        glass = table["accent"][mat[cabin]] * (1.0 + 0.8 * np.clip(normal[cabin, 2], 0.0, 1.0))[:, None]
        albedo[cabin] = np.where(roof[:, None], albedo[cabin], glass)
    return np.clip(albedo, 0.0, 1.0)


def _facade(
    tex: np.ndarray,
    normal: np.ndarray,
    footprint: np.ndarray,
    wall: np.ndarray,
    table: dict[str, np.ndarray],
    mat: np.ndarray,
    scene: Scene,
) -> np.ndarray:
    """Windows on the walls, a plain roof on top."""
    spacing = table["spacing"][mat]
    along = tex[:, 0] + tex[:, 1]  # the coordinate that varies across each vertical face
    up = tex[:, 2]
    window = periodic_coverage(along, spacing[:, 0], 0.55 * spacing[:, 0], footprint, phase=0.2)
    window *= periodic_coverage(up, spacing[:, 1], 0.5 * spacing[:, 1], footprint, phase=0.9)
    window *= up > 1.0
    cells = np.stack([along / spacing[:, 0], up / spacing[:, 1]], axis=-1)
    brightness = 0.6 + 0.9 * cell_random(cells, 1.0, scene.texture_seed + 5)
    glass = table["accent"][mat] * brightness[:, None]
    out = wall * (1 - window[:, None]) + glass * window[:, None]
    roof = normal[:, 2] > 0.5
    return np.where(roof[:, None], ROOF, out)


def _shadow_candidates(
    prims: Primitives,
    calib: Calibration,
    camera: int,
    sun: np.ndarray,
    ground_rays: np.ndarray,
    preset: SynthPreset,
) -> list[np.ndarray]:
    """Per primitive, indices into ``ground_rays`` (flat pixel indices of ground hits) it may shadow.

    The primitive's bounding box swept along the sun direction down to the ground gives a ground
    rectangle; the pixels of that rectangle's image window are the candidates.
    """
    height, width = preset.image_height, preset.image_width
    position = np.full(height * width, -1, dtype=np.int64)
    position[ground_rays] = np.arange(ground_rays.size)
    corners = prims.aabb_corners()  # (P, 8, 3)
    drop = (corners[..., 2] - GROUND_Z) / max(sun[2], 1e-3)
    shadow_xy = corners[..., :2] - drop[..., None] * sun[:2]
    xy = np.concatenate([corners[..., :2], shadow_xy], axis=1)  # (P, 16, 2)
    lo, hi = xy.min(axis=1), xy.max(axis=1)
    lo[:, 0] = np.maximum(lo[:, 0], NEAREST_SURFACE)
    quad = np.stack(
        [
            np.stack([lo[:, 0], lo[:, 1]], -1),
            np.stack([lo[:, 0], hi[:, 1]], -1),
            np.stack([hi[:, 0], lo[:, 1]], -1),
            np.stack([hi[:, 0], hi[:, 1]], -1),
        ],
        axis=1,
    )  # (P, 4, 2)
    ground = np.concatenate([quad, np.full(quad.shape[:2] + (1,), GROUND_Z)], axis=-1)
    uv, _ = calib.project_to_image(ground.reshape(-1, 3), camera)
    out: list[np.ndarray] = []
    for window in image_windows(uv.reshape(-1, 4, 2), hi[:, 0] < NEAREST_SURFACE, height, width):
        idx = position[window]
        out.append(idx[idx >= 0])
    return out
