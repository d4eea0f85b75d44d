"""Stage one: run the frozen teacher over a prepared split and write the teacher cache.

Work is cut into shards of ``frames_per_shard`` frames. Rank ``r`` of ``W`` owns shards ``r, r + W, ...``; for
each pending shard it runs the teacher in batches of ``batch_size`` frames (both views of a frame in the same
forward), fills a host buffer for the whole shard and hands it to a writer thread, which writes every array's
block in one call and then sets ``shard_complete[shard] = 1``. So a shard file is only ever written by one
process, a shard is either complete or rewritten from scratch on resume, and inference overlaps the writes.

Rank 0 takes the lock, creates the store (or checks the identity of an existing one), and, once every rank has
finished, sets the ``complete`` attribute.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from tqdm import tqdm

from stereodistill.cache.coverage import CoverageRule
from stereodistill.cache.lock import StoreLock
from stereodistill.cache.quantize import quantise_logits
from stereodistill.cache.ranks import Ranks
from stereodistill.cache.reader import CachedFeatures, CachedFrame
from stereodistill.cache.schema import (
    FEATURE_PER_FRAME_ARRAYS,
    FEATURE_PER_SHARD_ARRAYS,
    PER_FRAME_ARRAYS,
    PER_SHARD_ARRAYS,
    CacheSettings,
    check_views_supported,
    empty_block,
    num_shards,
    shard_frames,
)
from stereodistill.cache.store import StoreMismatch, bytes_on_disk, create_store, open_existing
from stereodistill.data.prepared import PreparedSplit
from stereodistill.errors import InputError, OutputError
from stereodistill.geometry.views import points_in_view, view_ground_truth
from stereodistill.head.anchor_head import HeadOutput
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import ground_truth_from_labels
from stereodistill.head.box_coder import apply_direction, decode_boxes
from stereodistill.head.cells import cells_in_boxes
from stereodistill.teacher.model import SecondTeacher


@dataclass(frozen=True)
class CacheRunStats:
    """What one run did (summed over ranks). ``forward_seconds``: time inside the teacher's forward only."""

    frames_written: int
    shards_written: int
    shards_skipped: int
    total_seconds: float
    forward_seconds: float
    bytes_on_disk: int

    @property
    def overhead_ratio(self) -> float:
        return self.total_seconds / self.forward_seconds if self.forward_seconds else float("nan")


class _ShardWriter(threading.Thread):
    """Writes queued shard blocks in order; the first error is kept and re-raised by :meth:`finish`."""

    def __init__(self, root: zarr.Group, features: bool) -> None:
        super().__init__(name="teacher-cache-writer", daemon=True)
        names = [*PER_FRAME_ARRAYS, *PER_SHARD_ARRAYS, "shard_complete"]
        if features:
            names += [*FEATURE_PER_FRAME_ARRAYS, *FEATURE_PER_SHARD_ARRAYS]
        self.arrays = {name: root[name] for name in names}
        self.queue: queue.Queue[tuple[int, range, dict[str, np.ndarray]] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None

    def run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue
            shard, frames, block = item
            try:
                for name, values in block.items():
                    self.arrays[name][frames.start : frames.stop] = values
                self.arrays["shard_complete"][shard] = 1  # after the data: the shard's completeness record
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                self.error = err

    def put(self, shard: int, frames: range, block: dict[str, np.ndarray]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((shard, frames, block))

    def finish(self) -> None:
        if self.is_alive():
            self.queue.put(None)
            self.join()
        if self.error is not None:
            raise self.error


def frame_inputs(
    split: PreparedSplit, i: int, views: Sequence[str], features: int, grid: AnchorGrid
) -> list[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Per view: points ``(P, F)`` and the GT boxes ``(G, 7)`` / class ids ``(G,)`` coverage is measured against,
    all in the project frame of the view."""
    points = split.read_points(i)[:, :features]
    labels = split.labels(i)
    out = []
    for view in views:
        boxes, names = view_ground_truth(labels, view)
        gt = ground_truth_from_labels(names, boxes, grid)
        out.append((points_in_view(points, view), gt.boxes, gt.classes))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def teacher_answer(
    out: HeadOutput,
    j: int,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    rule: CoverageRule,
    anchors: torch.Tensor,
    frame_id: str,
    view: str,
) -> CachedFrame:
    """Sample ``j`` of a flattened teacher forward as the cache holds it, before quantisation (float32 logits).

    ``gt_boxes (G, 7)`` / ``gt_classes (G,)`` in the sample's view decide which anchors are covered; ``anchors
    (N, 7)`` on the teacher's device. Used by the writer and by anything that runs the teacher online.
    """
    cov = rule(out.cls[j], gt_boxes, gt_classes, f"frame {frame_id} view {view}")
    boxes = decode_boxes(out.box[j][cov.index], anchors[cov.index])
    dir_logits = out.dir[j][cov.index]
    boxes[:, 6] = apply_direction(boxes[:, 6], dir_logits.argmax(dim=-1))
    return CachedFrame(
        frame_id=frame_id,
        view=view,
        cls_logits=out.cls[j],
        covered_index=cov.index,
        boxes=boxes,
        dir_logits=dir_logits,
        covered_kind=cov.kind,
        score_floor_reached=cov.score_floor_reached,
    )


def teacher_bev_features(
    features: torch.Tensor,
    gt_boxes: torch.Tensor,
    grid: AnchorGrid,
    capacity: int,
    frame_id: str,
    view: str,
) -> CachedFeatures:
    """The teacher's BEV features ``features (Cb, ny, nx)`` of one sample at its in-box cells, as the cache holds
    them (rounded to float16, returned as float32).

    In-box cells: cell centre inside one of ``gt_boxes (G, 7)`` (the sample's view) — LIGA's imitation region.
    More than ``capacity`` of them is an :class:`InputError` naming the frame, view and ``cache.feature_capacity``.
    """
    cell = torch.nonzero(cells_in_boxes(grid, [gt_boxes])[0]).squeeze(1)
    if cell.numel() > capacity:
        raise InputError(
            f"frame {frame_id} view {view}: {cell.numel()} in-box cells exceed cache.feature_capacity {capacity}; "
            "raise it"
        )
    values = features.flatten(1)[:, cell.to(features.device)].T.to(torch.float16).float()
    return CachedFeatures(frame_id=frame_id, view=view, cell=cell.cpu(), bev=values.cpu())


@torch.no_grad()
def _compute_shard(
    model: SecondTeacher,
    split: PreparedSplit,
    frames: range,
    settings: CacheSettings,
    rule: CoverageRule,
    anchors: torch.Tensor,
    bar: tqdm,
) -> tuple[dict[str, np.ndarray], float]:
    """The shard's host block and the seconds spent in the teacher's forward."""
    grid, device, views = model.grid, model.device, settings.views
    v = len(views)
    bev = "bev" in settings.features
    block = empty_block(
        len(frames),
        v,
        grid.num_anchors,
        grid.num_classes,
        settings.coverage.capacity,
        settings.feature_capacity,
        model.bev.out_channels if bev else 0,
    )
    forward = 0.0
    for start in range(0, len(frames), settings.batch_size):
        batch = frames[start : start + settings.batch_size]
        inputs = [
            item for i in batch for item in frame_inputs(split, i, views, model.config.point_features, grid)
        ]
        clouds = [torch.from_numpy(np.ascontiguousarray(p)).to(device) for p, _, _ in inputs]
        _sync(device)
        t0 = time.perf_counter()
        features = model.features(clouds)
        out = model.head.flatten(model.head(features))
        _sync(device)
        forward += time.perf_counter() - t0
        for j, (_, gt_boxes, gt_classes) in enumerate(inputs):
            f, view = start + j // v, j % v
            frame_id = split.frame_ids[batch[j // v]]
            where = f"frame {frame_id} view {views[view]}"
            answer = teacher_answer(
                out, j, gt_boxes.to(device), gt_classes.to(device), rule, anchors, frame_id, views[view]
            )
            m = answer.covered_index.numel()
            try:
                block["cls_logits"][f, view] = (
                    quantise_logits(answer.cls_logits, settings.logit_step).cpu().numpy()
                )
                block["dir_logits"][f, view, :m] = (
                    quantise_logits(answer.dir_logits, settings.logit_step).cpu().numpy()
                )
            except ValueError as err:
                raise InputError(f"{where}: {err}", split.path) from None
            block["covered_index"][f, view, :m] = answer.covered_index.cpu().numpy()
            block["covered_kind"][f, view, :m] = answer.covered_kind.cpu().numpy()
            block["boxes"][f, view, :m] = answer.boxes.cpu().numpy()
            block["covered_count"][f, view] = m
            block["score_floor_reached"][f, view] = answer.score_floor_reached
            if bev:
                cached = teacher_bev_features(
                    features[j], gt_boxes, grid, settings.feature_capacity, frame_id, views[view]
                )
                mf = cached.cell.numel()
                block["feature_cell"][f, view, :mf] = cached.cell.numpy()
                block["bev_features"][f, view, :mf] = cached.bev.numpy().astype(np.float16)
                block["feature_count"][f, view] = mf
                block["bev_feature_abs_sum"][f, view] = cached.bev.abs().sum(dim=0).numpy()
        bar.update(len(batch))
    return block, forward


def _write_failed(store: Path, err: OSError) -> OutputError:
    """The error for a failed write (a full disk, most often); complete shards stay and a rerun resumes."""
    done = 0
    try:
        done = int(zarr.open_group(store, mode="r", use_consolidated=False)["shard_complete"][:].sum())
    except Exception:  # noqa: BLE001 - the count is only a hint in the message
        pass
    return OutputError(
        f"writing the teacher cache failed ({err.strerror or err}{f': {err.filename}' if err.filename else ''}); "
        f"{done} complete shard(s) are kept and the store stays resumable: free space, then rerun the same "
        "command",
        store,
    )


def _remove_partial_files(store: Path) -> None:
    """Zarr writes each chunk to ``*.partial`` and renames it; a killed writer leaves those behind."""
    for path in store.rglob("*.partial"):
        path.unlink(missing_ok=True)


def _prepare_store(
    store: Path,
    identity: dict[str, Any],
    frame_ids: Sequence[str],
    model: SecondTeacher,
    settings: CacheSettings,
    force: bool,
    recompute_on_mismatch: bool,
) -> None:
    channels = model.bev.out_channels
    if force or not store.exists():
        create_store(store, identity, frame_ids, model.grid, settings, channels)
        return
    try:
        open_existing(store, identity)
    except StoreMismatch as err:
        if not recompute_on_mismatch:
            raise
        tqdm.write(f"recomputing the teacher cache: {err.reason}")
        create_store(store, identity, frame_ids, model.grid, settings, channels)


def write_cache(
    model: SecondTeacher,
    split: PreparedSplit,
    store: str | Path,
    settings: CacheSettings,
    identity: dict[str, Any] | None,
    ranks: Ranks,
    force: bool = False,
    progress: bool = True,
    recompute_on_mismatch: bool = False,
) -> CacheRunStats:
    """Write (or finish) the cache at ``store``; every rank of ``ranks`` calls this.

    ``identity`` (see :func:`~stereodistill.cache.store.store_identity`) is needed on rank 0 only. An existing
    store written under another identity is refused unless ``force`` or ``recompute_on_mismatch`` (the DVC
    stage's choice), which recompute it from scratch.
    """
    started = time.perf_counter()
    store = Path(store)
    check_views_supported(settings.views, model.grid.point_cloud_range, "params.yaml")
    lock = StoreLock(store)
    problem: str | None = None
    if ranks.rank == 0:
        try:
            assert identity is not None, "rank 0 needs the store identity"
            lock.acquire()
            if store.exists():
                _remove_partial_files(store)
            _prepare_store(store, identity, split.frame_ids, model, settings, force, recompute_on_mismatch)
        except InputError as err:
            lock.release()
            problem = str(err)
            if ranks.world == 1:
                raise
    problem = ranks.broadcast_from_zero(problem)  # type: ignore[assignment]
    if problem is not None:
        raise InputError(f"rank 0 failed: {problem}")
    try:
        root = zarr.open_group(store, mode="r+", use_consolidated=False)
        n = len(split)
        done = root["shard_complete"][:] if n else np.zeros(0, np.uint8)
        mine = [s for s in range(ranks.rank, num_shards(n, settings.frames_per_shard), ranks.world)]
        pending = [s for s in mine if not done[s]]
        rule = CoverageRule(
            model.grid, settings.coverage.iou_floor, settings.coverage.score_floor, settings.coverage.capacity
        )
        anchors = model.grid.shared_anchors(model.device)
        model.eval()
        total = sum(len(shard_frames(s, n, settings.frames_per_shard)) for s in pending)
        bar = tqdm(
            total=total,
            desc=f"teacher cache (rank {ranks.rank})" if ranks.world > 1 else "teacher cache",
            unit="frame",
            disable=None if progress and ranks.rank == 0 else True,
        )
        writer = _ShardWriter(root, "bev" in settings.features)
        writer.start()
        forward = 0.0
        try:
            try:
                for shard in pending:
                    frames = shard_frames(shard, n, settings.frames_per_shard)
                    block, seconds = _compute_shard(model, split, frames, settings, rule, anchors, bar)
                    forward += seconds
                    writer.put(shard, frames, block)
            finally:
                writer.finish()
                bar.close()
        except OSError as err:
            raise _write_failed(store, err) from err
        per_rank = (len(pending), len(mine) - len(pending), total, forward)
        gathered = ranks.gather(per_rank)
        ranks.barrier()
        if ranks.rank == 0:
            complete = bool(np.all(root["shard_complete"][:] == 1)) if n else True
            root.attrs["complete"] = complete
    finally:
        lock.release()
    ranks.barrier()
    return CacheRunStats(
        frames_written=sum(g[2] for g in gathered),  # type: ignore[index]
        shards_written=sum(g[0] for g in gathered),  # type: ignore[index]
        shards_skipped=sum(g[1] for g in gathered),  # type: ignore[index]
        total_seconds=time.perf_counter() - started,
        forward_seconds=sum(g[3] for g in gathered),  # type: ignore[index]
        bytes_on_disk=bytes_on_disk(store),
    )
