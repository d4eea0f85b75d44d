"""Creating a teacher-cache store, and checking an existing one against what a run would write."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec, ZstdCodec

from stereodistill.cache.schema import (
    FEATURE_DTYPE,
    INDEX_FILL,
    LOGIT_FILL,
    SCHEMA_VERSION,
    CacheSettings,
    num_shards,
)
from stereodistill.errors import InputError
from stereodistill.head.anchors import AnchorGrid

_KEYS = {"name": "default", "separator": "."}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def frame_ids_sha256(frame_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(frame_ids).encode()).hexdigest()


def store_identity(
    grid: AnchorGrid,
    settings: CacheSettings,
    frame_ids: Sequence[str],
    split_fingerprint: str,
    teacher: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything the stored bytes depend on, as JSON-normalised attributes (the ``identity`` attribute).

    ``teacher``: ``{"sha256": <checkpoint file hash>, "config": ..., "settings": ...}``.
    """
    identity = {
        "schema_version": SCHEMA_VERSION,
        "grid": grid.to_dict(),
        **settings.store_layout(),
        "num_frames": len(frame_ids),
        "frame_ids_sha256": frame_ids_sha256(frame_ids),
        "split_fingerprint": split_fingerprint,
        "teacher": dict(teacher),
    }
    return json.loads(json.dumps(identity))


def identity_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields where ``stored`` differs from ``wanted`` (grid fields via AnchorGrid.diff)."""
    out = []
    for key in sorted(set(stored) | set(wanted)):
        name = f"{prefix}{key}"
        a, b = stored.get(key), wanted.get(key)
        if a == b:
            continue
        if name == "grid" and isinstance(a, Mapping) and isinstance(b, Mapping):
            try:
                out.append(AnchorGrid.from_dict(b).diff(AnchorGrid.from_dict(a)) or "grid")
            except InputError:
                out.append("grid")
        elif isinstance(a, Mapping) and isinstance(b, Mapping) and name != "teacher.config":
            out.extend(identity_differences(a, b, name + "."))
        else:
            out.append(name)
    return out


def _compressors(settings: CacheSettings) -> Any:
    """The chunk codecs, ending with a CRC32C checksum: bytes damaged inside a chunk fail to decode instead of
    decoding to wrong values (4 bytes per chunk)."""
    if settings.codec == "none":
        return (Crc32cCodec(),)
    if settings.codec == "zstd":
        return (ZstdCodec(level=settings.codec_level), Crc32cCodec())
    return (
        BloscCodec(cname="zstd", clevel=settings.codec_level, shuffle=BloscShuffle.bitshuffle),
        Crc32cCodec(),
    )


def create_store(
    path: str | Path,
    identity: Mapping[str, Any],
    frame_ids: Sequence[str],
    grid: AnchorGrid,
    settings: CacheSettings,
    bev_channels: int = 0,
) -> zarr.Group:
    """A new, empty store at ``path`` (replacing anything there) with every array preallocated.

    ``bev_channels``: the teacher's BEV feature channels, needed when ``settings.features`` holds ``bev``.

    Built as ``PATH.creating`` and renamed into place, so a writer killed while creating leaves no half-made
    store at ``path`` (the next run starts over).
    """
    path = Path(path)
    final = path
    path = final.with_name(final.name + ".creating")
    for old in (path, final):
        if old.exists():
            shutil.rmtree(old)
    f, v, n, c, k = (
        len(frame_ids),
        len(settings.views),
        grid.num_anchors,
        grid.num_classes,
        settings.coverage.capacity,
    )
    s = settings.frames_per_shard
    root = zarr.open_group(path, mode="w", zarr_format=3)
    common = {"chunk_key_encoding": _KEYS, "compressors": _compressors(settings)}
    ids = root.create_array(
        "frame_id", shape=(f,), dtype=str, chunks=(max(f, 1),), dimension_names=("frame",), **common
    )
    if f:
        ids[:] = np.asarray(frame_ids, dtype=str)

    def per_frame(name: str, tail: tuple[int, ...], dtype: str, fill: Any, dims: tuple[str, ...]) -> None:
        root.create_array(
            name,
            shape=(f, v, *tail),
            dtype=dtype,
            chunks=(1, 1, *tail),
            shards=(s, v, *tail),
            fill_value=fill,
            dimension_names=("frame", "view", *dims),
            **common,
        )

    per_frame("cls_logits", (n, c), "int16", LOGIT_FILL, ("anchor", "class"))
    per_frame("covered_index", (k,), "int32", INDEX_FILL, ("slot",))
    per_frame("covered_kind", (k,), "uint8", 0, ("slot",))
    per_frame("boxes", (k, 7), "float32", float("nan"), ("slot", "component"))
    per_frame("dir_logits", (k, 2), "int16", LOGIT_FILL, ("slot", "bin"))
    per_shard = [
        ("covered_count", (), "int32", -1, ()),
        ("score_floor_reached", (), "float32", float("nan"), ()),
    ]
    if "bev" in settings.features:
        if bev_channels < 1:
            raise ValueError("cache.features holds bev: create_store needs the teacher's bev_channels")
        kf = settings.feature_capacity
        per_frame("feature_cell", (kf,), "int32", INDEX_FILL, ("cell_slot",))
        per_frame("bev_features", (kf, bev_channels), FEATURE_DTYPE, 0.0, ("cell_slot", "channel"))
        per_shard += [
            ("feature_count", (), "int32", -1, ()),
            ("bev_feature_abs_sum", (bev_channels,), "float32", float("nan"), ("channel",)),
        ]
    for name, tail, dtype, fill, dims in per_shard:
        root.create_array(
            name,
            shape=(f, v, *tail),
            dtype=dtype,
            chunks=(s, v, *tail),
            fill_value=fill,
            dimension_names=("frame", "view", *dims),
            **common,
        )
    root.create_array(
        "shard_complete",
        shape=(num_shards(f, s),),
        dtype="uint8",
        chunks=(1,),
        fill_value=0,
        compressors=None,
        chunk_key_encoding=_KEYS,
        dimension_names=("shard",),
    )
    root.attrs.update(
        {
            "identity": dict(identity),
            "views": list(settings.views),
            "class_names": list(grid.class_names),
            "box_components": ["x", "y", "z", "l", "w", "h", "heading"],
            "features": list(settings.features),
            "complete": False,
        }
    )
    os.replace(path, final)
    return zarr.open_group(final, mode="r+", use_consolidated=False)


class StoreMismatch(InputError):
    """An existing store is not this run's cache (another identity, or not a cache at all)."""


def open_existing(path: str | Path, identity: Mapping[str, Any]) -> zarr.Group:
    """The store at ``path`` for resuming; an error naming every identity field that differs."""
    try:
        root = zarr.open_group(path, mode="r+", use_consolidated=False)
    except Exception as err:  # zarr raises several types for a folder that is not a group
        raise StoreMismatch(
            f"exists but is not a Zarr group ({type(err).__name__}); rerun with --force", path
        ) from None
    stored = root.attrs.get("identity")
    if not isinstance(stored, Mapping):
        raise StoreMismatch(
            "exists but is not a teacher cache (no identity attribute); rerun with --force", path
        )
    changed = identity_differences(stored, identity)
    if changed:
        raise StoreMismatch(
            f"this cache was written with a different {'; '.join(changed)}; rerun with --force to recompute it",
            path,
        )
    for partial in Path(path).rglob("*.partial"):  # temp files of a writer killed mid-write
        partial.unlink(missing_ok=True)
    return root


def bytes_on_disk(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
