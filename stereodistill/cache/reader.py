"""Reading the teacher cache in stage two: :class:`TeacherCache`.

The object holds only the path until first use, opens the Zarr group lazily in the process that reads, and
drops the handle when pickled, so it can be given to DataLoader workers (fork, spawn or forkserver).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch import Tensor

from stereodistill.cache.quantize import dequantise_logits
from stereodistill.cache.schema import LOGIT_FILL, SCHEMA_VERSION
from stereodistill.errors import InputError
from stereodistill.geometry.views import IDENTITY
from stereodistill.head.anchors import AnchorGrid


@dataclass(frozen=True)
class CachedFrame:
    """The teacher's answer for one frame and view (``N`` anchors, ``C`` classes, ``K`` covered anchors).

    ``cls_logits (N, C)`` float32 for every anchor (grid anchor order); ``covered_index (K,)`` long, ascending;
    for each covered anchor ``boxes (K, 7)`` float32 ``(x, y, z, l, w, h, heading)`` decoded project boxes
    (heading resolved with the direction classifier), ``dir_logits (K, 2)`` float32 and ``covered_kind (K,)``
    uint8 (bits: 1 IoU floor, 2 best anchor of a GT, 4 score floor).
    """

    frame_id: str
    view: str
    cls_logits: Tensor
    covered_index: Tensor
    boxes: Tensor
    dir_logits: Tensor
    covered_kind: Tensor
    score_floor_reached: float

    def boxes_at(self, anchor_index: Tensor) -> Tensor:
        """The cached teacher boxes ``(M, 7)`` of ``anchor_index (M,)``, which must all be covered
        (:meth:`TeacherCache.require_covered` checks that)."""
        return self.boxes[torch.searchsorted(self.covered_index, anchor_index.to(torch.int64).cpu())]


@dataclass(frozen=True)
class CachedFeatures:
    """The teacher's BEV features for one frame and view at its ``M`` in-box cells (``cache.features: [bev]``).

    ``cell (M,)`` long, ascending BEV cell indices ``iy * nx + ix``; ``bev (M, Cb)`` float32 (stored as float16):
    the teacher's BEV feature map (the input of its anchor head) at those cells, in the scene as ``view`` sees it.
    """

    frame_id: str
    view: str
    cell: Tensor
    bev: Tensor


class TeacherCache:
    """A teacher cache store opened for reading. ``TeacherCache(path)`` checks nothing until first use."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._root: zarr.Group | None = None
        self._pid: int | None = None
        self._meta: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    # ------------------------------------------------------------------ opening
    def _group(self) -> zarr.Group:
        if self._root is None or self._pid != os.getpid():
            if not self.path.is_dir():
                raise InputError("teacher cache is missing (run `stereodistill cache-teacher`)", self.path)
            try:
                root = zarr.open_group(self.path, mode="r", use_consolidated=False)
            except Exception as err:  # several zarr error types for a folder that is not a group
                raise InputError(f"not a Zarr group ({type(err).__name__})", self.path) from None
            identity = root.attrs.get("identity")
            if not isinstance(identity, Mapping):
                raise InputError("not a teacher cache (no identity attribute)", self.path)
            if identity.get("schema_version") != SCHEMA_VERSION:
                raise InputError(
                    f"schema_version is {identity.get('schema_version')}, this code reads {SCHEMA_VERSION}; "
                    "rerun `stereodistill cache-teacher --force`",
                    self.path,
                )
            frame_ids = [str(v) for v in root["frame_id"][:]]
            self._meta = {
                "identity": dict(identity),
                "frame_ids": frame_ids,
                "index": {f: i for i, f in enumerate(frame_ids)},
                "views": list(identity["views"]),
                "shard_complete": root["shard_complete"][:],
            }
            self._arrays = {
                name: root[name]
                for name in ("cls_logits", "covered_index", "covered_kind", "boxes", "dir_logits")
            }
            self._floors = root["score_floor_reached"][:]
            self._counts = root["covered_count"][:]
            if "bev" in self._feature_maps(identity):
                self._arrays.update({name: root[name] for name in ("feature_cell", "bev_features")})
                self._feature_counts = root["feature_count"][:]
                grid = AnchorGrid.from_dict(identity["grid"], self.path)
                self._num_cells = grid.ny * grid.nx
            self._root, self._pid = root, os.getpid()
        return self._root

    @property
    def identity(self) -> dict[str, Any]:
        self._group()
        return self._meta["identity"]  # type: ignore[index]

    @property
    def frame_ids(self) -> list[str]:
        self._group()
        return self._meta["frame_ids"]  # type: ignore[index]

    @property
    def views(self) -> list[str]:
        return list(self.identity["views"])

    @property
    def grid(self) -> AnchorGrid:
        return AnchorGrid.from_dict(self.identity["grid"], self.path)

    def __len__(self) -> int:
        return len(self.frame_ids)

    @staticmethod
    def _feature_maps(identity: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(identity.get("features", {}).get("maps", ()))

    @property
    def feature_maps(self) -> tuple[str, ...]:
        """The teacher feature maps the store holds: ``()`` or ``("bev",)`` (``cache.features``)."""
        return self._feature_maps(self.identity)

    def _require_bev(self) -> None:
        if "bev" not in self.feature_maps:
            raise InputError(
                "the cache holds no teacher BEV features (cache.features is []); set cache.features: [bev] and "
                "rerun `stereodistill cache-teacher`",
                self.path,
            )

    def feature_channels(self) -> int:
        """``Cb``, the teacher's BEV feature channels."""
        self._require_bev()
        return int(self._arrays["bev_features"].shape[-1])

    def feature_scale(self) -> Tensor:
        """``(Cb,)`` float32: per channel, the mean ``|feature|`` over every stored cell of every frame and view.

        LIGA normalises the teacher's features per channel by a running mean of ``|x|`` over the in-box cells it
        meets during training; over a fixed cache that mean has one value, this one.
        """
        self._require_bev()
        sums = self._group()["bev_feature_abs_sum"][:].astype(np.float64)
        counts = self._feature_counts.astype(np.float64)
        if (counts < 0).any() or not np.isfinite(sums).all():
            raise InputError(
                "bev_feature_abs_sum / feature_count hold unwritten values (incomplete cache)", self.path
            )
        total = counts.sum()
        if total == 0:
            raise InputError("the cache holds no in-box cells: no feature scale", self.path)
        scale = sums.reshape(-1, sums.shape[-1]).sum(axis=0) / total
        return torch.from_numpy(np.maximum(scale, 1e-6).astype(np.float32))

    # ------------------------------------------------------------------ checking a consumer's needs
    def validate(
        self,
        grid: AnchorGrid,
        views: Sequence[str],
        iou_floor_needed: float,
        score_floor_needed: float | None = None,
        teacher_sha256: str | None = None,
        split_fingerprint: str | None = None,
        frame_ids: Sequence[str] | None = None,
    ) -> None:
        """Raise :class:`InputError` naming the field when the cache cannot serve this consumer.

        ``iou_floor_needed``: the lowest IoU at which the consumer needs teacher boxes (e.g. the smallest
        ``matched_iou`` of the student's assigner); ``score_floor_needed``: it needs boxes of every anchor whose
        teacher score reaches this. Force-matched best anchors are always stored.
        """
        identity = self.identity
        grid.check_compatible(self.grid, what=f"the teacher cache {self.path}")
        missing = [v for v in views if v not in identity["views"]]
        if missing:
            raise InputError(
                f"cache.views: the cache holds views {identity['views']}, the consumer needs {missing}",
                self.path,
            )
        coverage = identity["coverage"]
        if iou_floor_needed < coverage["iou_floor"] - 1e-9:
            raise InputError(
                f"cache.coverage.iou_floor is {coverage['iou_floor']} but boxes are needed down to IoU "
                f"{iou_floor_needed}; rebuild the cache with a lower cache.coverage.iou_floor",
                self.path,
            )
        if score_floor_needed is not None:
            worst = float(np.nanmax(self._floors)) if self._floors.size else coverage["score_floor"]
            if score_floor_needed < max(coverage["score_floor"], worst) - 1e-6:
                raise InputError(
                    f"cache.coverage.score_floor: boxes are stored for scores >= {max(coverage['score_floor'], worst)} "
                    f"in every frame (capacity permitting), but {score_floor_needed} is needed",
                    self.path,
                )
        if teacher_sha256 is not None and identity["teacher"]["sha256"] != teacher_sha256:
            raise InputError(
                f"teacher: the cache was written by teacher sha256 {identity['teacher']['sha256'][:16]}..., "
                f"not {teacher_sha256[:16]}...",
                self.path,
            )
        if split_fingerprint is not None and identity["split_fingerprint"] != split_fingerprint:
            raise InputError(
                "split_fingerprint: the cache was written for a different prepared split", self.path
            )
        if frame_ids is not None and list(frame_ids) != self.frame_ids:
            raise InputError("frame_id: the cache's frame ids differ from the split's", self.path)
        if not bool(np.all(self._meta["shard_complete"] == 1)):  # type: ignore[index]
            raise InputError("the cache is incomplete (rerun `stereodistill cache-teacher`)", self.path)

    # ------------------------------------------------------------------ reading
    def frame_index(self, frame: int | str) -> int:
        self._group()
        if isinstance(frame, str):
            try:
                return self._meta["index"][frame]  # type: ignore[index]
            except KeyError:
                raise InputError(f"frame {frame!r} is not in the teacher cache", self.path) from None
        if not 0 <= frame < len(self.frame_ids):
            raise InputError(f"frame index {frame} is out of range (0..{len(self.frame_ids) - 1})", self.path)
        return int(frame)

    def read(self, frame: int | str, view: str = IDENTITY) -> CachedFrame:
        """The cached teacher answer for ``frame`` (index or id) seen through ``view``."""
        i, v, where = self._locate(frame, view)
        step = float(self.identity["quantisation"]["logits"]["step"])
        count = int(self._counts[i, v])
        capacity = int(self.identity["coverage"]["capacity"])
        if not 0 <= count <= capacity:
            raise InputError(
                f"{where}: covered_count {count} is outside 0..{capacity} (damaged cache)", self.path
            )
        cls = self._read_block("cls_logits", (i, v), where)
        index = self._read_block("covered_index", (i, v, slice(0, count)), where)
        boxes = self._read_block("boxes", (i, v, slice(0, count)), where)
        dirs = self._read_block("dir_logits", (i, v, slice(0, count)), where)
        kind = self._read_block("covered_kind", (i, v, slice(0, count)), where)
        # Cheap whole-array checks, so a damaged cache stops training instead of turning its losses into NaN.
        if (cls == LOGIT_FILL).any() or (dirs == LOGIT_FILL).any():
            name = "cls_logits" if (cls == LOGIT_FILL).any() else "dir_logits"
            raise InputError(f"{where}: {name} holds unwritten (fill) values (damaged cache)", self.path)
        if not np.isfinite(boxes).all():
            raise InputError(f"{where}: boxes contain NaN or inf (damaged cache)", self.path)
        if count and (index.min() < 0 or index.max() >= cls.shape[0] or (np.diff(index) <= 0).any()):
            raise InputError(
                f"{where}: covered_index is not ascending within the anchors (damaged cache)", self.path
            )
        floor = float(self._floors[i, v])
        if not np.isfinite(floor):
            raise InputError(f"{where}: score_floor_reached is {floor} (damaged cache)", self.path)
        return CachedFrame(
            frame_id=self.frame_ids[i],
            view=view,
            cls_logits=torch.from_numpy(dequantise_logits(cls, step)),
            covered_index=torch.from_numpy(index.astype(np.int64)),
            boxes=torch.from_numpy(boxes),
            dir_logits=torch.from_numpy(dequantise_logits(dirs, step)),
            covered_kind=torch.from_numpy(kind),
            score_floor_reached=floor,
        )

    def read_features(self, frame: int | str, view: str = IDENTITY) -> CachedFeatures:
        """The teacher's BEV features at the in-box cells of ``frame`` (index or id) seen through ``view``."""
        self._require_bev()
        i, v, where = self._locate(frame, view)
        count = int(self._feature_counts[i, v])
        capacity = int(self.identity["features"]["capacity"])
        if not 0 <= count <= capacity:
            raise InputError(
                f"{where}: feature_count {count} is outside 0..{capacity} (damaged cache)", self.path
            )
        cell = self._read_block("feature_cell", (i, v, slice(0, count)), where)
        values = self._read_block("bev_features", (i, v, slice(0, count)), where)
        if count and (cell.min() < 0 or cell.max() >= self._num_cells or (np.diff(cell) <= 0).any()):
            raise InputError(
                f"{where}: feature_cell is not ascending within the grid (damaged cache)", self.path
            )
        if not np.isfinite(values).all():
            raise InputError(f"{where}: bev_features contain NaN or inf (damaged cache)", self.path)
        return CachedFeatures(
            frame_id=self.frame_ids[i],
            view=view,
            cell=torch.from_numpy(cell.astype(np.int64)),
            bev=torch.from_numpy(values.astype(np.float32)),
        )

    def _locate(self, frame: int | str, view: str) -> tuple[int, int, str]:
        """Frame index, view index and ``"frame F view V"`` of a written frame; errors name what is missing."""
        self._group()
        i = self.frame_index(frame)
        views = self._meta["views"]  # type: ignore[index]
        if view not in views:
            raise InputError(f"view {view!r} is not in the teacher cache (it holds {views})", self.path)
        shard = i // int(self.identity["frames_per_shard"])
        if not self._meta["shard_complete"][shard]:  # type: ignore[index]
            raise InputError(f"frame {self.frame_ids[i]} has not been written (incomplete cache)", self.path)
        return i, views.index(view), f"frame {self.frame_ids[i]} view {view}"

    def _read_block(self, name: str, key: tuple[int | slice, ...], where: str) -> np.ndarray:
        """``array[key]``, or an ``InputError`` naming the frame, view and array when its bytes do not decode."""
        try:
            return self._arrays[name][key]
        except Exception as err:  # a damaged shard file: zarr and the codecs raise various types
            raise InputError(
                f"{where}: array {name} is unreadable ({type(err).__name__}: {err}); "
                "the cache is damaged, rerun `stereodistill cache-teacher --force`",
                self.path,
            ) from None

    def require_covered(self, cached: CachedFrame, anchor_index: Tensor) -> None:
        """Raise :class:`InputError` if some of ``anchor_index (M,)`` has no cached box in ``cached``."""
        present = torch.isin(anchor_index.to(torch.int64).cpu(), cached.covered_index)
        if not bool(present.all()):
            missing = anchor_index[~present][:5].tolist()
            raise InputError(
                f"frame {cached.frame_id} view {cached.view}: anchors {missing} have no cached teacher box; "
                "lower cache.coverage.iou_floor / score_floor or raise cache.coverage.capacity",
                self.path,
            )
