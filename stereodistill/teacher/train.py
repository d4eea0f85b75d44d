"""Training the LiDAR teacher (the `train_teacher` stage and `stereodistill train-teacher`).

AdamW with a one-cycle schedule, SECOND's augmentations, gradient clipping and a per-epoch loss log; resume,
checkpoints and the finished ``teacher.pt`` are the shared run's (:mod:`stereodistill.training.run`).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from stereodistill.data.prepared import PreparedSplit, split_fingerprint
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import TargetAssigner, ground_truth_from_labels
from stereodistill.head.losses import detection_losses
from stereodistill.settings import to_dict
from stereodistill.teacher.augment import GroundTruthSampler
from stereodistill.teacher.checkpoint import MODEL_KIND, teacher_model_checkpoint
from stereodistill.teacher.dataset import (
    TeacherFrames,
    build_object_database,
    collate_frames,
    frame_points,
)
from stereodistill.teacher.model import SecondTeacher
from stereodistill.teacher.settings import TeacherConfig, TeacherTrainSettings
from stereodistill.training.run import TrainingRun, run_identity

LOSS_KEYS = ("total", "cls", "loc", "dir")
LOG_COLUMNS = ["epoch", *LOSS_KEYS, "lr", "seconds"]


def train_teacher(
    grid: AnchorGrid,
    config: TeacherConfig,
    settings: TeacherTrainSettings,
    train_split: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    restart_on_mismatch: bool = False,
) -> Path:
    """Train and return the path of ``teacher.pt``.

    ``resume`` continues from ``out_dir/checkpoint.pt`` when it exists. The checkpoint records the grid, the
    network and training settings, a fingerprint of the training code and of the training split; resuming
    under a different one is an error, or, with ``restart_on_mismatch`` (the DVC stage, whose output persists
    between runs), a fresh start. ``stop_after_epoch`` ends early after that epoch (for tests of resume).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(settings.seed)
    split = PreparedSplit(train_split)
    model = SecondTeacher(config, grid).to(device)
    assigner = TargetAssigner(grid)

    sampler = None
    if settings.augment.gt_sampling:
        database = build_object_database(
            split,
            list(settings.augment.gt_sampling),
            settings.augment.gt_sampling_min_points,
            config.point_features,
        )
        sampler = GroundTruthSampler(database, dict(settings.augment.gt_sampling))
    frames = TeacherFrames(split, config.point_features, settings.augment, sampler, settings.seed)
    steps_per_epoch = max(1, -(-len(frames) // settings.batch_size))

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.95, 0.99)
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=settings.lr,
        epochs=settings.epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=settings.pct_start,
        div_factor=settings.div_factor,
        base_momentum=0.85,
        max_momentum=0.95,
    )
    identity = run_identity(grid, config, settings, __name__, split_fingerprint(split))
    run = TrainingRun(
        MODEL_KIND,
        out_dir,
        identity,
        model,
        optimizer,
        scheduler,
        settings.epochs,
        LOG_COLUMNS,
        stop_after_epoch=stop_after_epoch,
    )
    run.start(resume, restart_on_mismatch)

    for epoch in run.epochs():
        model.train()
        frames.set_epoch(epoch)
        order = torch.Generator().manual_seed(settings.seed * 100003 + epoch)
        loader = DataLoader(
            frames,
            batch_size=settings.batch_size,
            shuffle=True,
            generator=order,
            collate_fn=collate_frames,
            num_workers=settings.num_workers,
        )
        # Summed on the device in float64 (the same additions as Python floats), read once per epoch.
        sums_device = torch.zeros(len(LOSS_KEYS), dtype=torch.float64, device=device)
        started = time.perf_counter()
        bar = run.progress_bar(loader, epoch, progress)
        for batch in bar:
            points = frame_points(batch, device)
            gts = [ground_truth_from_labels(f.names, torch.from_numpy(f.boxes), grid) for f in batch]
            targets = assigner.assign_batch([gt.to(device) for gt in gts])
            out = model.head.flatten(model(points))
            losses = detection_losses(
                out.cls,
                out.box,
                out.dir,
                targets.labels,
                targets.box_targets,
                targets.dir_targets,
                cls_weight=settings.loss_weights["cls"],
                loc_weight=settings.loss_weights["loc"],
                dir_weight=settings.loss_weights["dir"],
            )
            run.step(losses["total"], settings.grad_clip)
            sums_device += torch.stack([losses[key].detach() for key in LOSS_KEYS]).double()
            if not bar.disable:
                bar.set_postfix(loss=f"{float(losses['total'].detach()):.3f}")
        sums = dict(zip(LOSS_KEYS, sums_device.tolist(), strict=True))
        n = len(loader)
        run.log_rows.append(
            {
                "epoch": epoch,
                **{k: f"{v / n:.6f}" for k, v in sums.items()},
                "lr": f"{scheduler.get_last_lr()[0]:.6g}",
                "seconds": f"{time.perf_counter() - started:.1f}",
            }
        )
        run.end_epoch(
            epoch,
            f"teacher epoch {epoch}: loss {sums['total'] / n:.4f} "
            f"(cls {sums['cls'] / n:.4f}, loc {sums['loc'] / n:.4f}, dir {sums['dir'] / n:.4f})",
        )
    return run.finish(teacher_model_checkpoint(model, settings.epochs, {"settings": to_dict(settings)}))
