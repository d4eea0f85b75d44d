"""``stereodistill cache info`` and ``cache verify``: a store's summary, and a full consistency check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from stereodistill.cache.schema import (
    FEATURE_PER_FRAME_ARRAYS,
    FEATURE_PER_SHARD_ARRAYS,
    LOGIT_FILL,
    PER_FRAME_ARRAYS,
    num_shards,
)
from stereodistill.cache.store import bytes_on_disk
from stereodistill.errors import InputError
from stereodistill.head.anchors import AnchorGrid

FEATURE_ARRAYS = (*FEATURE_PER_FRAME_ARRAYS, *FEATURE_PER_SHARD_ARRAYS)


def _open(path: str | Path) -> zarr.Group:
    path = Path(path)
    if not path.is_dir():
        raise InputError("teacher cache is missing", path)
    try:
        return zarr.open_group(path, mode="r", use_consolidated=False)
    except Exception as err:  # several zarr error types for a folder that is not a group
        raise InputError(f"not a Zarr group ({type(err).__name__})", path) from None


def cache_info(path: str | Path) -> dict[str, Any]:
    """A JSON-able summary: frames, views, grid, teacher, dtypes, coverage, size on disk, completeness."""
    root = _open(path)
    identity = root.attrs.get("identity")
    if not isinstance(identity, dict):
        raise InputError("not a teacher cache (no identity attribute)", path)
    grid = AnchorGrid.from_dict(identity["grid"])
    done = root["shard_complete"][:]
    s = int(identity["frames_per_shard"])
    f = int(identity["num_frames"])
    frames_done = sum(min((k + 1) * s, f) - k * s for k in np.nonzero(done == 1)[0].tolist())
    size = bytes_on_disk(path)
    views = len(identity["views"])
    counts = root["covered_count"][:]
    written = counts[counts >= 0]
    return {
        "path": str(path),
        "schema_version": identity["schema_version"],
        "features": _features_info(Path(path), root, identity, grid, frames_done * views),
        "frames": f,
        "views": identity["views"],
        "grid": {
            "ny": grid.ny,
            "nx": grid.nx,
            "anchors_per_cell": grid.anchors_per_cell,
            "num_anchors": grid.num_anchors,
            "classes": list(grid.class_names),
            "definition": identity["grid"],
        },
        "teacher": {"sha256": identity["teacher"]["sha256"], "config": identity["teacher"]["config"]},
        "split_fingerprint": identity["split_fingerprint"],
        "quantisation": identity["quantisation"],
        "coverage": identity["coverage"],
        "covered_per_frame_view": {
            "mean": round(float(written.mean()), 1) if written.size else None,
            "max": int(written.max()) if written.size else None,
        },
        "codec": identity["codec"],
        "frames_per_shard": s,
        "bytes_on_disk": size,
        "bytes_per_frame_view": size / max(1, frames_done * views),
        "files": sum(1 for p in Path(path).rglob("*") if p.is_file()),
        "completeness": {
            "complete": bool(root.attrs.get("complete", False)),
            "shards_complete": int((done == 1).sum()),
            "shards": int(done.shape[0]),
            "frames_complete": frames_done,
        },
    }


def _features_info(
    path: Path, root: zarr.Group, identity: dict[str, Any], grid: AnchorGrid, written: int
) -> dict[str, Any]:
    """What the store holds of the teacher's features: maps, capacity, cells per frame/view, bytes."""
    features = identity.get("features", {})
    maps = list(features.get("maps", []))
    if "bev" not in maps:
        return {"maps": maps}
    counts = root["feature_count"][:]
    cells = counts[counts >= 0]
    channels = int(root["bev_features"].shape[-1])
    stored = sum(bytes_on_disk(path / name) for name in FEATURE_ARRAYS)
    return {
        "maps": maps,
        "dtype": features["dtype"],
        "capacity": features["capacity"],
        "bev_channels": channels,
        "cells_per_frame_view": {
            "mean": round(float(cells.mean()), 1) if cells.size else None,
            "max": int(cells.max()) if cells.size else None,
        },
        "bytes_per_frame_view": stored / max(1, written),
        "dense_float32_bytes_per_frame_view": grid.ny * grid.nx * channels * 4,
    }


def verify_cache(path: str | Path) -> list[str]:
    """Every problem found (empty when the store is sound): completeness, NaN/inf, fills, attribute consistency."""
    problems: list[str] = []
    try:
        root = _open(path)
    except InputError as err:
        return [str(err)]
    identity = root.attrs.get("identity")
    if not isinstance(identity, dict):
        return ["not a teacher cache (no identity attribute)"]
    try:
        grid = AnchorGrid.from_dict(identity["grid"])
        f, views = int(identity["num_frames"]), list(identity["views"])
        s, k = int(identity["frames_per_shard"]), int(identity["coverage"]["capacity"])
    except (KeyError, TypeError, ValueError, InputError) as err:
        return [f"identity attribute is malformed: {err}"]
    v, n, c = len(views), grid.num_anchors, grid.num_classes
    expected = {
        "frame_id": (f,),
        "cls_logits": (f, v, n, c),
        "covered_index": (f, v, k),
        "covered_kind": (f, v, k),
        "boxes": (f, v, k, 7),
        "dir_logits": (f, v, k, 2),
        "covered_count": (f, v),
        "score_floor_reached": (f, v),
        "shard_complete": (num_shards(f, s),),
    }
    features = "bev" in identity.get("features", {}).get("maps", [])
    if features:
        try:
            kf = int(identity["features"]["capacity"])
            cb = int(root["bev_features"].shape[-1])
        except (KeyError, TypeError, ValueError) as err:
            return [f"features: {err} is missing or malformed"]
        expected |= {
            "feature_count": (f, v),
            "feature_cell": (f, v, kf),
            "bev_features": (f, v, kf, cb),
            "bev_feature_abs_sum": (f, v, cb),
        }
    arrays = {}
    for name, shape in expected.items():
        try:
            arrays[name] = root[name]
        except KeyError:
            problems.append(f"array {name} is missing")
            continue
        if tuple(arrays[name].shape) != shape:
            problems.append(
                f"array {name} has shape {tuple(arrays[name].shape)}, the attributes imply {shape}"
            )
    if problems:
        return problems
    if root.attrs.get("views") != views:
        problems.append(f"attribute views {root.attrs.get('views')} != identity views {views}")
    small = {}
    names = ["frame_id", "shard_complete", "covered_count", "score_floor_reached"]
    for name in names + (["feature_count", "bev_feature_abs_sum"] if features else []):
        try:
            small[name] = arrays[name][:]
        except Exception as err:  # a damaged file: zarr/numcodecs raise various types
            problems.append(f"array {name}: unreadable ({type(err).__name__}: {err})")
    if problems:
        return problems
    if len(set(small["frame_id"].tolist())) != f:
        problems.append("frame_id has duplicates")
    done = small["shard_complete"]
    incomplete = np.nonzero(done != 1)[0].tolist()
    if incomplete:
        problems.append(
            f"{len(incomplete)} of {done.shape[0]} shards are incomplete (first: {incomplete[:5]})"
        )
    if root.attrs.get("complete") is not True and not incomplete:
        problems.append("every shard is complete but the 'complete' attribute is not set")
    counts = small["covered_count"]
    for shard in np.nonzero(done == 1)[0].tolist():
        frames = slice(shard * s, min((shard + 1) * s, f))
        where = f"shard {shard} (frames {frames.start}..{frames.stop - 1})"
        block, unreadable = {}, []
        for name in PER_FRAME_ARRAYS + (FEATURE_PER_FRAME_ARRAYS if features else ()):
            try:
                block[name] = arrays[name][frames]
            except Exception as err:  # a damaged shard file: zarr/numcodecs raise various types
                unreadable.append(f"{where}: unreadable (array {name}: {type(err).__name__}: {err})")
        if unreadable:
            problems.extend(unreadable)
            continue
        count = counts[frames]
        if (count < 0).any() or (count > k).any():
            problems.append(f"{where}: covered_count outside 0..{k}")
            continue
        filled = (block["cls_logits"] == LOGIT_FILL).reshape(count.shape[0], -1).any(axis=1)
        if filled.any():
            problems.append(
                f"{where}: cls_logits has unwritten (fill) values (frames {(np.nonzero(filled)[0] + frames.start).tolist()})"
            )
        for fi in range(count.shape[0]):
            for vi in range(v):
                m = int(count[fi, vi])
                name = f"{where} frame {frames.start + fi} view {views[vi]}"
                index = block["covered_index"][fi, vi]
                if m and ((index[:m] < 0).any() or (index[:m] >= n).any() or (np.diff(index[:m]) <= 0).any()):
                    problems.append(f"{name}: covered_index not ascending within 0..{n - 1}")
                if (index[m:] != -1).any():
                    problems.append(f"{name}: covered_index padding is not -1")
                if not np.isfinite(block["boxes"][fi, vi, :m]).all():
                    problems.append(f"{name}: boxes contain NaN or inf")
                if (block["dir_logits"][fi, vi, :m] == LOGIT_FILL).any():
                    problems.append(f"{name}: dir_logits has unwritten (fill) values")
                if m and (block["covered_kind"][fi, vi, :m] == 0).any():
                    problems.append(f"{name}: covered_kind is 0 for a covered anchor")
                if features:
                    problems += _feature_problems(
                        name,
                        block["feature_cell"][fi, vi],
                        block["bev_features"][fi, vi],
                        int(small["feature_count"][frames.start + fi, vi]),
                        small["bev_feature_abs_sum"][frames.start + fi, vi],
                        grid.ny * grid.nx,
                    )
    floors = small["score_floor_reached"]
    if done.size and np.all(done == 1) and not np.isfinite(floors).all():
        problems.append("score_floor_reached has NaN or inf")
    return problems


def _feature_problems(
    name: str, cell: np.ndarray, values: np.ndarray, count: int, abs_sum: np.ndarray, num_cells: int
) -> list[str]:
    """What is wrong with one frame/view's feature arrays: counts, cell order, padding, finiteness, the sums."""
    if not 0 <= count <= cell.shape[0]:
        return [f"{name}: feature_count {count} outside 0..{cell.shape[0]}"]
    problems = []
    if count and (
        (cell[:count] < 0).any() or (cell[:count] >= num_cells).any() or (np.diff(cell[:count]) <= 0).any()
    ):
        problems.append(f"{name}: feature_cell not ascending within 0..{num_cells - 1}")
    if (cell[count:] != -1).any():
        problems.append(f"{name}: feature_cell padding is not -1")
    if not np.isfinite(values[:count]).all():
        problems.append(f"{name}: bev_features contain NaN or inf")
    elif not np.allclose(
        np.abs(values[:count].astype(np.float64)).sum(axis=0), abs_sum, rtol=1e-4, atol=1e-3
    ):
        problems.append(f"{name}: bev_feature_abs_sum does not match bev_features")
    return problems
