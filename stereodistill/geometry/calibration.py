"""KITTI object-benchmark calibration files and the transforms they define.

A KITTI ``calib/NNNNNN.txt`` holds one matrix per line, ``KEY: v1 v2 ...``:

- ``P0``..``P3`` (3x4): projection of *rectified camera-0* coordinates into the image of camera i
  (``image_2`` is the left colour camera, ``image_3`` the right one);
- ``R0_rect`` (3x3): rectifying rotation of camera 0;
- ``Tr_velo_to_cam`` (3x4): Velodyne -> unrectified camera 0;
- ``Tr_imu_to_velo`` (3x4, optional).

Points go Velodyne -> rect with ``x_rect = R0_rect @ (Tr_velo_to_cam @ [x; 1])`` and rect -> pixels of
camera i with ``[u*d, v*d, d] = P_i @ [x_rect; 1]``. All 3D inputs and outputs of this module are in the
project frame (see :mod:`stereodistill.geometry.frames`) unless a name says ``rect`` or ``velo``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stereodistill.errors import InputError, read_text_file
from stereodistill.geometry.frames import project_to_rect, rect_to_project

# Key -> (shape, required). The KITTI tracking benchmark spells two keys differently; accept both.
_KEYS: dict[str, tuple[tuple[int, int], bool]] = {
    "P0": ((3, 4), True),
    "P1": ((3, 4), True),
    "P2": ((3, 4), True),
    "P3": ((3, 4), True),
    "R0_rect": ((3, 3), True),
    "Tr_velo_to_cam": ((3, 4), True),
    "Tr_imu_to_velo": ((3, 4), False),
}
_ALIASES = {"R_rect": "R0_rect", "Tr_velo_cam": "Tr_velo_to_cam", "Tr_imu_velo": "Tr_imu_to_velo"}


@dataclass(frozen=True)
class Calibration:
    """One frame's calibration. Matrices are float64 numpy arrays."""

    P0: np.ndarray
    P1: np.ndarray
    P2: np.ndarray
    P3: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    Tr_imu_to_velo: np.ndarray | None = None

    # ----------------------------------------------------------------- parsing and writing
    @classmethod
    def from_file(cls, path: str | Path) -> Calibration:
        path = Path(path)
        return cls.from_text(read_text_file(path, "calibration"), path)

    @classmethod
    def from_text(cls, text: str, path: str | Path = "<calib>") -> Calibration:
        found: dict[str, np.ndarray] = {}
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line:
                continue
            if ":" not in line:
                raise InputError(f"expected 'KEY: values', got {line[:40]!r}", path, lineno)
            key, values = line.split(":", 1)
            key = _ALIASES.get(key.strip(), key.strip())
            if key not in _KEYS:
                continue  # unknown keys are tolerated (some tools add their own)
            shape, _ = _KEYS[key]
            try:
                numbers = np.array([float(v) for v in values.split()], dtype=np.float64)
            except ValueError:
                raise InputError(f"{key} has a value that is not a number", path, lineno) from None
            if numbers.size != shape[0] * shape[1]:
                raise InputError(
                    f"{key} needs {shape[0] * shape[1]} numbers, found {numbers.size}", path, lineno
                )
            if not np.all(np.isfinite(numbers)):
                raise InputError(f"{key} contains NaN or inf", path, lineno)
            if key in found:
                raise InputError(f"{key} appears twice", path, lineno)
            found[key] = numbers.reshape(shape)
        missing = [k for k, (_, required) in _KEYS.items() if required and k not in found]
        if missing:
            raise InputError(f"missing {', '.join(missing)}", path)
        calib = cls(**found)
        calib._check_projections(path)
        return calib

    def _check_projections(self, path: str | Path) -> None:
        if abs(np.linalg.det(self.R0_rect)) < 1e-6:
            raise InputError("R0_rect is not invertible", path)
        if abs(np.linalg.det(self.Tr_velo_to_cam[:, :3])) < 1e-6:
            raise InputError("the rotation of Tr_velo_to_cam is not invertible", path)
        for name in ("P2", "P3"):
            P = getattr(self, name)
            if P[0, 0] <= 0 or P[1, 1] <= 0 or P[2, 2] != 1.0:
                raise InputError(
                    f"{name} is not a rectified camera projection (need fu, fv > 0, P[2,2] = 1)", path
                )

    def to_text(self) -> str:
        """The calibration in KITTI's text layout (numbers in ``%.12e``, lossless for float64 round trips)."""
        lines = []
        for key in _KEYS:
            value = getattr(self, key)
            if value is None:
                continue
            lines.append(f"{key}: " + " ".join(f"{v:.12e}" for v in value.reshape(-1)))
        return "\n".join(lines) + "\n"

    # ----------------------------------------------------------------- stereo geometry
    @property
    def focal_length(self) -> float:
        """Horizontal focal length ``f_u`` of image_2 in pixels."""
        return float(self.P2[0, 0])

    def camera_centre(self, camera: int) -> np.ndarray:
        """Optical centre ``(3,)`` of camera ``camera`` in rect coordinates: ``-K^-1 P[:, 3]`` for ``P = K [I | t]``."""
        P = self.projection(camera)
        return -np.linalg.solve(P[:, :3], P[:, 3])

    @property
    def baseline(self) -> float:
        """Distance in metres along x_rect between the image_2 and image_3 optical centres (image_3 is right).

        Exact, including KITTI's tiny per-camera ``tz``; the common shortcut ``(P2[0,3] - P3[0,3]) / fu``
        differs from it by about 3e-5 m on KITTI.
        """
        return float(self.camera_centre(3)[0] - self.camera_centre(2)[0])

    def disparity_to_depth(self, disparity: np.ndarray) -> np.ndarray:
        """Pixel disparity between image_2 and image_3 -> depth along the optical axis (metres)."""
        return self.focal_length * self.baseline / disparity

    # ----------------------------------------------------------------- frame transforms
    def velo_to_rect(self, points_velo: np.ndarray) -> np.ndarray:
        """Velodyne ``(N, 3)`` -> rectified camera-0 ``(N, 3)``."""
        pts = np.asarray(points_velo, dtype=np.float64)
        cam = pts @ self.Tr_velo_to_cam[:, :3].T + self.Tr_velo_to_cam[:, 3]
        return cam @ self.R0_rect.T

    def rect_to_velo(self, points_rect: np.ndarray) -> np.ndarray:
        """Rectified camera-0 ``(N, 3)`` -> Velodyne ``(N, 3)`` (inverse of :meth:`velo_to_rect`)."""
        cam = np.asarray(points_rect, dtype=np.float64) @ np.linalg.inv(self.R0_rect).T
        R, t = self.Tr_velo_to_cam[:, :3], self.Tr_velo_to_cam[:, 3]
        return (cam - t) @ np.linalg.inv(R).T

    def velo_to_project(self, points_velo: np.ndarray) -> np.ndarray:
        """Velodyne ``(N, 3)`` -> project frame ``(N, 3)``."""
        return rect_to_project(self.velo_to_rect(points_velo))

    def project_to_velo(self, points: np.ndarray) -> np.ndarray:
        """Project frame ``(N, 3)`` -> Velodyne ``(N, 3)``."""
        return self.rect_to_velo(project_to_rect(np.asarray(points, dtype=np.float64)))

    def projection(self, camera: int) -> np.ndarray:
        if camera not in (0, 1, 2, 3):
            raise ValueError(f"camera must be 0..3, got {camera}")
        return getattr(self, f"P{camera}")

    def rect_to_image(self, points_rect: np.ndarray, camera: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Rect ``(N, 3)`` -> pixel coordinates ``(N, 2)`` (u right, v down) and depth ``(N,)``.

        Depth is the third homogeneous coordinate (distance along the optical axis of camera ``camera``);
        points with depth <= 0 are behind the camera and their (u, v) are meaningless.
        """
        P = self.projection(camera)
        hom = np.asarray(points_rect, dtype=np.float64) @ P[:, :3].T + P[:, 3]
        depth = hom[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = hom[:, :2] / depth[:, None]
        return uv, depth

    def project_to_image(self, points: np.ndarray, camera: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Project frame ``(N, 3)`` -> pixels ``(N, 2)`` and depth ``(N,)`` in image ``camera``."""
        return self.rect_to_image(project_to_rect(np.asarray(points, dtype=np.float64)), camera)

    def image_to_rect(self, uv: np.ndarray, depth: np.ndarray, camera: int = 2) -> np.ndarray:
        """Pixels ``(N, 2)`` with depth ``(N,)`` (as returned by :meth:`rect_to_image`) -> rect ``(N, 3)``.

        Exact inverse of :meth:`rect_to_image` for a rectified ``P`` (``[[fu,0,cu,a],[0,fv,cv,b],[0,0,1,c]]``).
        """
        P = self.projection(camera)
        uv = np.asarray(uv, dtype=np.float64)
        d = np.asarray(depth, dtype=np.float64)
        z = d - P[2, 3]
        x = (uv[:, 0] * d - P[0, 2] * z - P[0, 3]) / P[0, 0]
        y = (uv[:, 1] * d - P[1, 2] * z - P[1, 3]) / P[1, 1]
        return np.stack([x, y, z], axis=-1)

    def image_to_project(self, uv: np.ndarray, depth: np.ndarray, camera: int = 2) -> np.ndarray:
        """Pixels ``(N, 2)`` with depth ``(N,)`` -> project frame ``(N, 3)``."""
        return rect_to_project(self.image_to_rect(uv, depth, camera))

    def flipped(self, image_width: int) -> Calibration:
        """Calibration of the horizontally mirrored stereo pair (LIGA's stereo flip augmentation).

        Mirroring both images about the vertical axis and swapping them (the mirrored right image becomes
        the new left one) is a valid rectified pair: the new ``P2`` is the old ``P3`` with ``cu -> W-1-cu`` and
        its x translation negated (``P = K [I | t]``, ``tx -> -tx``), and likewise for ``P3``. 3D points mirror as ``x_rect -> -x_rect``
        (project ``y -> -y``).
        """

        def mirror(P: np.ndarray) -> np.ndarray:
            # P = K [I | t] with P[0,3] = fu*tx + cu*tz: mirror cu and tx, keep tz.
            cu, tz = P[0, 2], P[2, 3]
            Q = P.copy()
            Q[0, 2] = image_width - 1 - cu
            Q[0, 3] = -(P[0, 3] - cu * tz) + Q[0, 2] * tz
            return Q

        mirror_x = np.diag([-1.0, 1.0, 1.0])
        return Calibration(
            P0=mirror(self.P1),
            P1=mirror(self.P0),
            P2=mirror(self.P3),
            P3=mirror(self.P2),
            R0_rect=mirror_x @ self.R0_rect @ mirror_x,
            Tr_velo_to_cam=mirror_x @ self.Tr_velo_to_cam,
            Tr_imu_to_velo=self.Tr_imu_to_velo,
        )
