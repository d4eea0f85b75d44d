"""The ``data`` section of params.yaml: where the KITTI-layout data and its prepared splits live, and the
synthetic benchmark's settings. Defaults are params.yaml's values; imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SynthSettings:
    """``data.synth``: the synthetic benchmark (read only by the `synthesize` stage)."""

    out: str = "data/synthetic"
    preset: str = "default"  # default (CPU-sized) or kitti (KITTI resolution and range)
    lidar: str = "hdl32"  # LiDAR sensor profile (data/synth/sensors.py): hdl32, vlp16 or ideal
    frames: int = 160
    val_fraction: float = 0.5
    extra_val_frames: int = 640  # frames after `frames` that go to val only (a larger val split, same train split)
    seed: int = 0


@dataclass(frozen=True)
class DataSettings:
    """The ``data`` section."""

    root: str = "data/synthetic"  # a KITTI object-layout root (training/, testing/)
    split_dir: str = "data/synthetic/ImageSets"  # train.txt / val.txt
    prepared_dir: str = "data/prepared"  # one HDF5 file per split: {split}.h5
    splits: tuple[str, ...] = ("train", "val")
    synth: SynthSettings = SynthSettings()

    def prepared_split(self, split: str) -> Path:
        """The prepared HDF5 file of ``split``: ``{prepared_dir}/{split}.h5``."""
        return Path(self.prepared_dir) / f"{split}.h5"
