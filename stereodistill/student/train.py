"""Training the stereo student (stage two: the `train_student` stage and `stereodistill train-student`).

Loss per batch (METHOD.md §1.5, §2.12)::

    L = cls + r * loc + dir (GT detection losses, head/losses.py, weights student.train.loss_weights)
      + depth * LIGA's two-hot depth CE (student/depth.py)
      + r * distill.xgd.weight * XGD (or the whole-box baseline)  when distill.xgd.mode != off
      + distill.cld.weight * CLD                                    when distill.cld.mode != off

with ``r`` = :func:`regression_factor`: 1, or a linear ramp 0 -> 1 over ``student.train.regression_warmup_epochs``.
The logged ``loc`` and ``xgd`` include ``r``; the ``loc_<code>`` columns do not.

XGD candidates are the student's positive anchors; their teacher boxes come from the cache view of the scene
the student sees (``hflip`` after a stereo flip), matched GT boxes from the assigner. CLD's teacher logits are
the cache's class logits, over the region ``distill.cld.region`` (a union of ``gt_boxes``, ``confident``, or
``all``). With both off the student trains on GT alone and no cache is opened.

AdamW, a linear warm-up from ``lr * warmup_factor`` over ``warmup_epochs``, then cosine decay to
``lr * min_lr_ratio`` or step decay (x ``step_gamma`` at each of ``step_epochs``), gradient-norm clipping, a
per-step loss log and a checkpoint after every epoch. Sample order and flips depend only on
``(seed, epoch, frame)``, so ``resume=True`` trains on exactly what an uninterrupted run would.

Under ``torchrun --nproc_per_node N`` the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on
CUDA): every rank draws the same epoch permutation and takes every N-th frame of it (the last few repeated so
the ranks take equal steps), ``batch_size`` is per rank, and rank 0 alone writes the log (loss terms averaged
over ranks) and the checkpoints.

Outputs in ``out_dir``: ``checkpoint.pt`` (latest epoch), ``student.pt`` (finished model) and ``loss_log.csv``,
one row per optimiser step (columns :func:`log_columns`: ``step``, ``epoch``, every loss term,
``loc_<code>`` = the regression term split by residual code before its weight (``x``, ``y``, ``z``, ``l``, ``w``,
``h``, ``heading``; ``loc = loc_weight * sum``), the batch's positives, ``xgd_kept_<component>`` = the share of
XGD candidates whose component was distilled, ``lr``, ``seconds``); DVC plots it.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from stereodistill.cache.ranks import current_ranks
from stereodistill.cache.reader import TeacherCache
from stereodistill.checkpoints import load_checkpoint, save_atomic
from stereodistill.data.prepared import PreparedSplit, split_fingerprint
from stereodistill.distill.cld import (
    CellLayout,
    CldOptions,
    all_cells,
    cells_in_boxes,
    cld_loss,
    confident_cells,
)
from stereodistill.distill.components import components
from stereodistill.distill.settings import DistillSettings
from stereodistill.distill.xgd import XgdOptions, whole_box_loss, xgd_loss
from stereodistill.errors import InputError
from stereodistill.fingerprint import source_fingerprint
from stereodistill.geometry.views import HFLIP, IDENTITY
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import FrameGroundTruth, TargetAssigner, ground_truth_from_labels
from stereodistill.head.box_coder import CODE_NAMES
from stereodistill.head.losses import detection_losses
from stereodistill.settings import load_settings, to_dict
from stereodistill.student.dataset import (
    StudentFrames,
    StudentSample,
    batch_inputs,
    collate_samples,
)
from stereodistill.student.depth import depth_loss, depth_target_map
from stereodistill.student.model import StereoStudent
from stereodistill.student.settings import StudentConfig, StudentTrainSettings
from stereodistill.training import read_loss_log, save_training_checkpoint, write_loss_log

CHECKPOINT_KIND = "student-training"
MODEL_KIND = "student"
LOSS_TERMS = ("total", "cls", "loc", "dir", "depth", "xgd", "cld")
LOC_CODE_COLUMNS = tuple(f"loc_{name}" for name in CODE_NAMES)


# ---------------------------------------------------------------------------------------- the cache
def views_needed(settings: StudentTrainSettings) -> list[str]:
    return [IDENTITY] + ([HFLIP] if settings.flip_probability > 0 else [])


def open_cache(
    path: str | Path,
    grid: AnchorGrid,
    settings: StudentTrainSettings,
    distill: DistillSettings,
    split: PreparedSplit,
    split_digest: str | None = None,
) -> TeacherCache:
    """Open the teacher cache and check it serves this run; errors name the param that asks for more.

    ``split_digest`` is ``split_fingerprint(split)`` when the caller already has it (it reads every frame).
    """
    cache = TeacherCache(path)
    held = cache.views
    missing = [v for v in views_needed(settings) if v not in held]
    if missing:
        raise InputError(
            f"student.train.flip_probability is {settings.flip_probability}: the student needs cache views "
            f"{missing}, the cache holds {held} (add them to cache.views and rerun cache-teacher, or set "
            "student.train.flip_probability: 0)",
            cache.path,
        )
    iou_needed = min(c.matched_iou for c in grid.classes)
    floor = float(cache.identity["coverage"]["iou_floor"])
    if distill.xgd.enabled and iou_needed < floor - 1e-9:
        raise InputError(
            f"grid.classes[*].matched_iou: the assigner's positives start at IoU {iou_needed}, but the cache holds "
            f"boxes only down to cache.coverage.iou_floor {floor} (needed by distill.xgd.mode "
            f"{distill.xgd.mode!r}); rebuild the cache with a lower iou_floor",
            cache.path,
        )
    if distill.xgd.enabled and distill.xgd.num_classes() != grid.num_classes:
        raise InputError(
            f"distill.xgd.thresholds: need one threshold per grid class ({grid.num_classes}), "
            f"got {distill.xgd.num_classes()}",
            "params.yaml",
        )
    cache.validate(
        grid,
        views_needed(settings),
        iou_floor_needed=iou_needed if distill.xgd.enabled else 1.0,
        split_fingerprint=split_digest or split_fingerprint(split),
        frame_ids=split.frame_ids,
    )
    return cache


# ---------------------------------------------------------------------------------------- losses
@functools.lru_cache(maxsize=4)
def _grid_anchors(grid: AnchorGrid, device: torch.device) -> Tensor:
    """The grid's anchors on ``device``, built once (525k on the KITTI grid; every step needs them)."""
    return grid.anchors(device=device)


@dataclass(frozen=True)
class StepLosses:
    """Loss terms of one batch (scalars; ``total`` carries the graph), ``loc`` per residual code (unweighted) and
    XGD's kept share per component."""

    terms: dict[str, Tensor]
    xgd_kept: dict[str, float]
    num_positive: int
    loc_codes: dict[str, Tensor]  # LOC_CODE_COLUMNS -> detached scalars


def ground_truths(
    samples: list[StudentSample], grid: AnchorGrid, device: torch.device
) -> list[FrameGroundTruth]:
    out = []
    for s in samples:
        gt = ground_truth_from_labels(s.names, torch.from_numpy(s.boxes), grid.class_names)
        out.append(type(gt)(*(getattr(gt, f).to(device) for f in gt.__dataclass_fields__)))
    return out


def student_losses(
    model: StereoStudent,
    assigner: TargetAssigner,
    samples: list[StudentSample],
    settings: StudentTrainSettings,
    distill: DistillSettings,
    device: torch.device,
    cache: TeacherCache | None = None,
    network: torch.nn.Module | None = None,
    regression_scale: float = 1.0,
) -> StepLosses:
    """Forward one batch and compute every loss term (see the module docstring).

    ``network`` runs the forward pass when given (``model`` wrapped in DistributedDataParallel).
    ``regression_scale`` (:func:`regression_factor`) multiplies the ``loc`` and ``xgd`` terms.
    """
    grid, cfg = model.grid, model.config
    inputs = batch_inputs(
        [s.left for s in samples], [s.right for s in samples], [s.calib for s in samples], device
    )
    out = (network or model)(inputs.left, inputs.right, inputs.P2, inputs.baseline)
    head = model.head.flatten(out.head)
    gts = ground_truths(samples, grid, device)
    targets = assigner.assign_batch(gts)
    w = settings.loss_weights
    terms = detection_losses(
        head.cls,
        head.box,
        head.dir,
        targets.labels,
        targets.box_targets,
        targets.dir_targets,
        cls_weight=w["cls"],
        loc_weight=regression_scale * w["loc"],
        dir_weight=w["dir"],
    )
    loc_codes = dict(zip(LOC_CODE_COLUMNS, terms.pop("loc_codes").unbind(), strict=True))
    padded_hw = tuple(inputs.left.shape[-2:])
    depth_target = torch.stack(
        [
            depth_target_map(s.depth, padded_hw, cfg.feature_stride, (cfg.depth_min, cfg.depth_max))
            for s in samples
        ]
    ).to(device)
    terms["depth"] = w["depth"] * depth_loss(out.depth_logits, depth_target, model.plane_depths)
    zero = terms["depth"].new_zeros(())
    terms["xgd"], terms["cld"] = zero, zero
    positive = targets.positive
    kept: dict[str, float] = {}
    if distill.xgd.enabled:
        frame_of, anchor_of = torch.nonzero(positive, as_tuple=True)
        teacher_boxes = []
        for b, s in enumerate(samples):
            idx = anchor_of[frame_of == b]
            cached = s.teacher
            if cached is None:
                raise ValueError("distillation needs samples with the teacher's cached answer")
            if cache is not None:
                cache.require_covered(cached, idx)
            slot = torch.searchsorted(cached.covered_index, idx.cpu())
            teacher_boxes.append(cached.boxes[slot])
        teacher = torch.cat(teacher_boxes).to(device=device, dtype=head.box.dtype)
        matched = targets.matched_gt[frame_of, anchor_of]
        gt_boxes = torch.cat([gts[b].boxes[matched[frame_of == b]] for b in range(len(samples))]).to(
            head.box.dtype
        )
        anchors = _grid_anchors(grid, device)[anchor_of]
        class_ids = targets.labels[frame_of, anchor_of]
        codes = head.box[frame_of, anchor_of]
        x = distill.xgd
        if x.mode == "xgd":
            result = xgd_loss(
                codes,
                teacher,
                gt_boxes,
                anchors,
                class_ids,
                frame_of,
                len(samples),
                XgdOptions(split=x.split, iou=x.iou, thresholds=x.thresholds, beta=x.beta),  # type: ignore[arg-type]
                weight=regression_scale * x.weight,
            )
        else:
            result = whole_box_loss(
                codes,
                teacher,
                gt_boxes,
                anchors,
                class_ids,
                frame_of,
                len(samples),
                iou=x.iou,  # type: ignore[arg-type]
                thresholds=x.thresholds,
                beta=x.beta,
                weight=regression_scale * x.weight,
            )
        terms["xgd"] = result.loss
        kept = {name: float(v) for name, v in zip(result.components, result.kept_share.tolist(), strict=True)}
    if distill.cld.enabled:
        layout = CellLayout.from_grid(grid)
        teacher_logits = torch.stack([s.teacher.cls_logits for s in samples]).to(device)  # type: ignore[union-attr]
        c = distill.cld
        region = torch.zeros(len(samples), layout.num_cells, dtype=torch.bool, device=device)
        if "all" in c.region:
            region |= all_cells(len(samples), layout, device)
        if "gt_boxes" in c.region:
            region |= cells_in_boxes(grid, [g.boxes for g in gts]).to(device)
        if "confident" in c.region:
            region |= confident_cells(teacher_logits, layout, c.confident_threshold)
        options = CldOptions(mode=c.mode, temperature=c.temperature)  # type: ignore[arg-type]
        terms["cld"] = cld_loss(head.cls, teacher_logits, layout, region, options, weight=c.weight).loss
    terms["total"] = terms["total"] + terms["depth"] + terms["xgd"] + terms["cld"]
    return StepLosses(terms, kept, int(positive.sum()), loc_codes)


# ---------------------------------------------------------------------------------------- ranks
def epoch_indices(num_frames: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """The frames rank ``rank`` of ``world`` trains on in ``epoch``, in order.

    One permutation per ``(seed, epoch)``, shared by every rank; rank ``r`` takes positions ``r, r + N, ...``.
    When ``world`` does not divide ``num_frames`` the permutation is extended by its own first frames, so
    every rank takes the same number of steps (DDP needs that).
    """
    order = torch.randperm(
        num_frames, generator=torch.Generator().manual_seed(seed * 100003 + epoch)
    ).tolist()
    per_rank = -(-num_frames // world)
    order += order[: per_rank * world - num_frames]
    return order[rank::world]


def _rank_mean(terms: dict[str, Tensor], world: int) -> dict[str, float]:
    """Loss terms as floats, averaged over the ranks (one all-reduce)."""
    values = torch.stack(list(terms.values())).float()
    if world > 1:
        dist.all_reduce(values)
        values /= world
    return dict(zip(terms, values.tolist(), strict=True))


# ---------------------------------------------------------------------------------------- schedule
def lr_factor(step: int, steps_per_epoch: int, settings: StudentTrainSettings) -> float:
    """Multiplier of ``settings.lr`` at optimiser step ``step`` (0-based)."""
    warmup = settings.warmup_epochs * steps_per_epoch
    if step < warmup:
        return settings.warmup_factor + (1.0 - settings.warmup_factor) * step / warmup
    if settings.schedule == "step":
        epoch = step // steps_per_epoch  # 0-based epoch of this step
        return settings.step_gamma ** sum(1 for e in settings.step_epochs if epoch >= e)
    total = settings.epochs * steps_per_epoch
    progress = (step - warmup) / max(1.0, total - warmup)
    low = settings.min_lr_ratio
    return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def regression_factor(step: int, steps_per_epoch: int, settings: StudentTrainSettings) -> float:
    """Weight of the ``loc`` and ``xgd`` terms at optimiser step ``step`` (0-based): a linear ramp from 0 to 1
    over ``regression_warmup_epochs``, then 1.

    Box-regression gradients that reach the shared backbone before the classifier has found the objects can hold
    a from-scratch student on the focal-loss plateau where it predicts background everywhere (docs/RESULTS.md,
    "what holds the plateau"); the ramp lets classification and depth shape the features first.
    """
    ramp = settings.regression_warmup_epochs * steps_per_epoch
    return 1.0 if step >= ramp else step / ramp


# ---------------------------------------------------------------------------------------- checkpoints
def student_model_checkpoint(
    model: StereoStudent, epoch: int, extra: Mapping[str, Any] | None = None
) -> dict:
    return {
        "kind": MODEL_KIND,
        "model": model.state_dict(),
        "grid": model.grid.to_dict(),
        "config": to_dict(model.config),
        "epoch": epoch,
        **(extra or {}),
    }


def load_student(
    path: str | Path, device: torch.device | str = "cpu", grid: AnchorGrid | None = None
) -> tuple[StereoStudent, dict[str, Any]]:
    """The finished student at ``path`` in eval mode and its checkpoint's extra fields (``settings`` ...)."""
    ckpt = load_checkpoint(path, MODEL_KIND)
    stored = AnchorGrid.from_dict(ckpt["grid"])
    if grid is not None:
        grid.check_compatible(stored, what=str(path))
    config = dict(ckpt["config"])
    # Checkpoints written before the field existed were trained with a plain-ReLU regression tower.
    config.setdefault("box_tower_negative_slope", 0.0)
    model = StereoStudent(load_settings(StudentConfig, config, "config", path), stored)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


LOG_COLUMNS_BASE = ["step", "epoch", *LOSS_TERMS, *LOC_CODE_COLUMNS, "positives", "lr", "seconds"]


def log_columns(distill: DistillSettings) -> list[str]:
    names: tuple[str, ...] = ()
    if distill.xgd.mode == "xgd":
        names = tuple(components(distill.xgd.split))  # type: ignore[arg-type]
    elif distill.xgd.mode == "whole_box":
        names = ("box",)
    return LOG_COLUMNS_BASE[:-2] + [f"xgd_kept_{n}" for n in names] + LOG_COLUMNS_BASE[-2:]


def training_code_fingerprint() -> str:
    """Fingerprint of the code a student's training runs (student, head, distill, geometry, cache reader, data)."""
    import stereodistill.cache.reader as reader
    import stereodistill.data.prepared as prepared
    import stereodistill.distill as distill
    import stereodistill.geometry as geometry
    import stereodistill.head as head
    import stereodistill.student as student

    digest = hashlib.sha256(source_fingerprint(student, head, distill, geometry).encode())
    digest.update(Path(prepared.__file__).read_bytes())
    digest.update(Path(reader.__file__).read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------- training
def train_student(
    grid: AnchorGrid,
    config: StudentConfig,
    settings: StudentTrainSettings,
    distill: DistillSettings,
    train_split: str | Path,
    out_dir: str | Path,
    cache_path: str | Path | None = None,
    resume: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    restart_on_mismatch: bool = False,
) -> Path:
    """Train and return the path of ``student.pt`` (see the module docstring).

    ``cache_path`` is needed (and validated) only when ``distill`` enables XGD or CLD. The checkpoint records
    the grid, network, training and distillation settings, a fingerprint of the training code, of the training
    split and the cache's identity; resuming under a different one is an error or, with
    ``restart_on_mismatch`` (the DVC stage), a fresh start.
    """
    out_dir = Path(out_dir)
    ranks = current_ranks()
    lead = ranks.rank == 0
    if ranks.world > 1:
        device = ranks.device
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(settings.seed)
    split = PreparedSplit(train_split)
    data_digest = split_fingerprint(split)
    cache = None
    if distill.enabled:
        if cache_path is None:
            raise InputError(
                "distill.xgd/cld are on but no teacher cache (cache.store) was given", "params.yaml"
            )
        cache = open_cache(cache_path, grid, settings, distill, split, data_digest)
    model = StereoStudent(config, grid).to(device)
    network: torch.nn.Module = model
    if ranks.world > 1:
        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    assigner = TargetAssigner(grid)
    frames = StudentFrames(
        split, settings.flip_probability, settings.image_scale, settings.seed, cache, settings.frame_limit
    )
    per_rank = -(-len(frames) // ranks.world)
    steps_per_epoch = max(1, -(-per_rank // settings.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, settings)
    )
    identity = {
        "grid": grid.to_dict(),
        "config": to_dict(config),
        "settings": to_dict(settings),
        "distill": to_dict(distill),
        "code": training_code_fingerprint(),
        "data": data_digest,
        "cache": None if cache is None else cache.identity,
    }
    start_epoch = 0
    ckpt_path = out_dir / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, CHECKPOINT_KIND, map_location=device)
        changed = [key for key in identity if ckpt.get(key) != identity[key]]
        if not changed:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            start_epoch = int(ckpt["epoch"])
            if lead:
                tqdm.write(f"resuming the student after epoch {start_epoch} from {ckpt_path}")
        elif restart_on_mismatch:
            tqdm.write(  # every rank reads the same checkpoint, so every rank starts over
                f"not resuming from {ckpt_path}: the student's {', '.join(changed)} changed; starting over"
            )
        else:
            raise InputError(
                f"cannot resume: the student's {', '.join(changed)} changed since this checkpoint was written "
                "(delete it to start over)",
                ckpt_path,
            )
    columns = log_columns(distill)
    log_path = out_dir / "loss_log.csv"
    log_rows: list[dict[str, Any]] = read_loss_log(log_path, start_epoch)
    if lead:
        out_dir.mkdir(parents=True, exist_ok=True)  # only now: a refused run leaves nothing behind

    for epoch in range(start_epoch + 1, settings.epochs + 1):
        model.train()
        frames.set_epoch(epoch)
        loader = DataLoader(
            Subset(frames, epoch_indices(len(frames), settings.seed, epoch, ranks.rank, ranks.world)),
            batch_size=settings.batch_size,
            shuffle=False,
            collate_fn=collate_samples,
            num_workers=settings.num_workers,
        )
        sums = dict.fromkeys(LOSS_TERMS, 0.0)
        bar = tqdm(
            loader,
            desc=f"student epoch {epoch}/{settings.epochs}",
            unit="batch",
            disable=None if progress and lead else True,
            leave=False,
        )
        for samples in bar:
            started = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            scale = regression_factor(scheduler.last_epoch, steps_per_epoch, settings)
            step = student_losses(
                model, assigner, samples, settings, distill, device, cache, network, regression_scale=scale
            )
            optimizer.zero_grad(set_to_none=True)
            step.terms["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            values = _rank_mean(
                {**{key: step.terms[key].detach() for key in LOSS_TERMS}, **step.loc_codes}, ranks.world
            )
            for key in LOSS_TERMS:
                sums[key] += values[key]
            row = {"step": scheduler.last_epoch, "epoch": epoch, **{k: f"{v:.6f}" for k, v in values.items()}}
            row["positives"] = step.num_positive
            row.update({f"xgd_kept_{k}": f"{v:.4f}" for k, v in step.xgd_kept.items()})
            row.update(lr=f"{lr:.6g}", seconds=f"{time.perf_counter() - started:.3f}")
            log_rows.append(row)
            bar.set_postfix(loss=f"{values['total']:.3f}")
        n = len(loader)
        if not lead:
            continue
        write_loss_log(log_path, log_rows, columns)
        save_training_checkpoint(ckpt_path, CHECKPOINT_KIND, model, optimizer, scheduler, epoch, identity)
        tqdm.write(
            f"student epoch {epoch}: loss {sums['total'] / n:.4f} ("
            + ", ".join(f"{k} {sums[k] / n:.4f}" for k in LOSS_TERMS[1:])
            + ")"
        )
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < settings.epochs:
            return ckpt_path
    final = out_dir / "student.pt"
    if lead:
        extra = {"settings": to_dict(settings), "distill": to_dict(distill)}
        save_atomic(student_model_checkpoint(model, settings.epochs, extra), final)
    ranks.barrier()
    return final
