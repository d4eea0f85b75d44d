"""A tiny teacher cache for tests: an untrained, calibrated SMALL teacher run over the synthetic split.

Used by the ``teacher_cache_setup`` fixture (tests/conftest.py), which tests/test_cache.py and
tests/test_cache_inspect.py share.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import yaml
import zarr

from stereodistill.cache.run import cache_teacher_from_params
from stereodistill.cache.schema import CacheSettings, CoverageSettings
from stereodistill.checkpoints import save_atomic
from stereodistill.data.prepared import PreparedSplit
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import parse_params, read_params_yaml
from stereodistill.teacher.checkpoint import teacher_model_checkpoint
from stereodistill.teacher.model import SecondTeacher
from stereodistill.teacher.settings import TeacherConfig

REPO = Path(__file__).resolve().parents[1]
SMALL = TeacherConfig(
    sparse_channels=(16, 32, 32),
    sparse_out_channels=32,
    bev_channels=(32, 64),
    bev_layers=(1, 1),
    bev_upsample_channels=32,
)
ARRAYS = ("frame_id", "cls_logits", "covered_count", "covered_index", "covered_kind", "boxes", "dir_logits")
ARRAYS += ("score_floor_reached", "shard_complete", "feature_count", "feature_cell", "bev_features")
ARRAYS += ("bev_feature_abs_sum",)
SETTINGS = CacheSettings(frames_per_shard=2, batch_size=2, coverage=CoverageSettings(capacity=4096))

# Points of the split's frames, for the teacher's batch-norm statistics; filled by build_teacher_cache.
_CALIBRATION: list[torch.Tensor] = []


def anchor_grid(**class_overrides) -> AnchorGrid:
    """The params.yaml grid, with keys of its first class (Car) overridden."""
    section = read_params_yaml((REPO / "params.yaml").read_text())["grid"]
    for key, value in class_overrides.items():
        section["classes"][0][key] = value
    return AnchorGrid.from_params(section)


@functools.cache
def calibrated_teacher(grid: AnchorGrid) -> SecondTeacher:
    """An untrained SMALL teacher with batch-norm statistics of real frames (else its features are ~1e-7) and a
    randomised head, so logits and boxes vary (some scores >= 0.1). Same weights on every call."""
    torch.manual_seed(7)
    model = SecondTeacher(SMALL, grid)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(_CALIBRATION)
    model.eval()
    g = torch.Generator().manual_seed(3)
    head = model.head
    with torch.no_grad():
        head.conv_cls.weight.copy_(torch.randn(head.conv_cls.weight.shape, generator=g) * 0.5)
        head.conv_cls.bias.fill_(-7.5)
        head.conv_box.weight.copy_(torch.randn(head.conv_box.weight.shape, generator=g) * 0.05)
        head.conv_dir.weight.copy_(torch.randn(head.conv_dir.weight.shape, generator=g) * 0.5)
    return model


def build_teacher_cache(split_path: Path, work: Path) -> dict:
    """The teacher saved as a checkpoint under ``work``, a params file for it, and a store written in-process.

    Returns ``work``, ``grid``, ``split`` (the prepared split's path), ``params`` and ``params_path``; the store
    is ``params["cache"]["store"]`` (views identity and hflip, 2 frames per shard). Do not modify it: copy it.
    """
    split = PreparedSplit(split_path)
    _CALIBRATION[:] = [torch.from_numpy(split.read_points(i)) for i in range(len(split))]
    grid = anchor_grid()
    model = calibrated_teacher(grid)
    save_atomic(teacher_model_checkpoint(model, 0), work / "teacher" / "teacher.pt")
    params = read_params_yaml((REPO / "params.yaml").read_text())
    params["data"]["prepared_dir"] = str(split_path.parent)
    params["teacher"]["out_dir"] = str(work / "teacher")
    params["cache"] = {
        "store": str(work / "reference.zarr"),
        "split": split_path.stem,
        "views": ["identity", "hflip"],
        "batch_size": SETTINGS.batch_size,
        "frames_per_shard": SETTINGS.frames_per_shard,
        "coverage": {"iou_floor": 0.3, "score_floor": 0.1, "capacity": SETTINGS.coverage.capacity},
    }
    params_path = work / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    cache_teacher_from_params(parse_params(params, params_path), progress=False)
    return {"work": work, "grid": grid, "split": split_path, "params": params, "params_path": params_path}


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    root = zarr.open_group(path, mode="r", use_consolidated=False)
    return {name: root[name][:] for name in ARRAYS}


def assert_stores_equal(a: Path, b: Path) -> None:
    """Same attributes and every array equal bitwise (NaN padding included)."""
    ra, rb = (zarr.open_group(p, mode="r", use_consolidated=False) for p in (a, b))
    assert dict(ra.attrs) == dict(rb.attrs)
    arrays_a, arrays_b = store_arrays(a), store_arrays(b)
    for name in ARRAYS:
        assert arrays_a[name].dtype == arrays_b[name].dtype
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)
        if arrays_a[name].dtype.kind == "f":
            assert arrays_a[name].tobytes() == arrays_b[name].tobytes(), name
