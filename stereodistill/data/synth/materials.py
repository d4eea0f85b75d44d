"""Surface materials: albedo, procedural texture parameters and LiDAR reflectivity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Texture patterns on top of the fractal-noise albedo.
PLAIN = 0  # noise only
FACADE = 1  # a grid of windows (``accent`` colour) on vertical faces; the roof is darker
CABIN = 2  # glass (``accent``) on the sides, body colour on the roof


def srgb(r: float, g: float, b: float) -> tuple[float, float, float]:
    """An sRGB colour in [0, 1] -> linear RGB (gamma 2.2), the space shading happens in."""
    return (r**2.2, g**2.2, b**2.2)


@dataclass(frozen=True)
class Material:
    colour: tuple[float, float, float]  # linear RGB albedo
    noise_amplitude: float = 0.1  # relative albedo modulation by the fractal noise
    noise_frequency: float = 2.0  # first-octave cycles per metre
    octaves: int = 3
    reflectivity: float = 0.3  # LiDAR return strength at normal incidence, [0, 1]
    pattern: int = PLAIN
    accent: tuple[float, float, float] = (0.0, 0.0, 0.0)  # window / glass colour (linear)
    spacing: tuple[float, float] = (3.0, 3.0)  # FACADE: window period horizontally and vertically (m)


class MaterialTable:
    """The materials of one scene; parts refer to them by index."""

    def __init__(self) -> None:
        self.items: list[Material] = []

    def add(self, material: Material) -> int:
        self.items.append(material)
        return len(self.items) - 1

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-field arrays over the table (``colour (K, 3)``, ``noise_amplitude (K,)``, ...)."""
        items = self.items or [Material((0.0, 0.0, 0.0))]
        return {
            "colour": np.array([m.colour for m in items], dtype=np.float64),
            "noise_amplitude": np.array([m.noise_amplitude for m in items]),
            "noise_frequency": np.array([m.noise_frequency for m in items]),
            "octaves": np.array([m.octaves for m in items], dtype=np.int64),
            "reflectivity": np.array([m.reflectivity for m in items]),
            "pattern": np.array([m.pattern for m in items], dtype=np.int64),
            "accent": np.array([m.accent for m in items], dtype=np.float64),
            "spacing": np.array([m.spacing for m in items], dtype=np.float64),
        }


CAR_PAINTS = (
    srgb(0.92, 0.92, 0.92),
    srgb(0.70, 0.72, 0.74),
    srgb(0.45, 0.46, 0.48),
    srgb(0.12, 0.12, 0.13),
    srgb(0.62, 0.10, 0.09),
    srgb(0.13, 0.22, 0.50),
    srgb(0.10, 0.14, 0.28),
    srgb(0.18, 0.32, 0.22),
    srgb(0.70, 0.64, 0.52),
    srgb(0.85, 0.70, 0.15),
)
CLOTHES = (
    srgb(0.10, 0.10, 0.12),
    srgb(0.20, 0.22, 0.35),
    srgb(0.55, 0.12, 0.12),
    srgb(0.75, 0.75, 0.72),
    srgb(0.30, 0.40, 0.25),
    srgb(0.45, 0.35, 0.25),
    srgb(0.15, 0.35, 0.60),
    srgb(0.80, 0.55, 0.20),
)
SKIN = (srgb(0.92, 0.76, 0.64), srgb(0.78, 0.58, 0.45), srgb(0.55, 0.38, 0.28), srgb(0.35, 0.24, 0.18))
FACADES = (
    srgb(0.75, 0.70, 0.62),
    srgb(0.62, 0.55, 0.50),
    srgb(0.55, 0.35, 0.28),
    srgb(0.80, 0.78, 0.72),
    srgb(0.50, 0.52, 0.55),
    srgb(0.70, 0.60, 0.42),
)


def pick(
    rng: np.random.Generator, palette: tuple[tuple[float, float, float], ...], jitter: float = 0.08
) -> tuple:
    """A palette colour with a small multiplicative jitter per channel."""
    base = np.array(palette[rng.integers(len(palette))])
    return tuple(np.clip(base * rng.uniform(1 - jitter, 1 + jitter, size=3), 0.0, 1.0).tolist())
