"""Training the LiDAR teacher (the `train_teacher` stage and `stereodistill train-teacher`).

AdamW with a one-cycle schedule, SECOND's augmentations, gradient clipping, a per-epoch loss log (a DVC plot)
and a checkpoint after every epoch. ``resume=True`` continues from the last checkpoint; because sample order and
augmentation depend only on (seed, epoch, frame), a resumed run trains on exactly what an uninterrupted one would.

Outputs in ``out_dir``: ``checkpoint.pt`` (latest epoch: model, optimizer, scheduler, epoch, settings, grid),
``teacher.pt`` (the finished model, written once the last epoch is done) and ``loss_log.csv``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from stereodistill.checkpoints import load_checkpoint, save_atomic
from stereodistill.data.prepared import PreparedSplit, split_fingerprint
from stereodistill.errors import InputError
from stereodistill.fingerprint import source_fingerprint
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import TargetAssigner, ground_truth_from_labels
from stereodistill.head.losses import detection_losses
from stereodistill.settings import load_settings, to_dict
from stereodistill.teacher.augment import GroundTruthSampler
from stereodistill.teacher.dataset import TeacherFrames, build_object_database, collate_frames
from stereodistill.teacher.model import SecondTeacher
from stereodistill.teacher.settings import TeacherConfig, TeacherTrainSettings
from stereodistill.training import read_loss_log, save_training_checkpoint, write_loss_log

CHECKPOINT_KIND = "teacher-training"
MODEL_KIND = "teacher"


def _model_from(ckpt: Mapping[str, Any]) -> SecondTeacher:
    grid = AnchorGrid.from_dict(ckpt["grid"])
    model = SecondTeacher(load_settings(TeacherConfig, ckpt["config"], "config"), grid)
    model.load_state_dict(ckpt["model"])
    return model


def load_teacher(
    path: str | Path, device: torch.device | str = "cpu", grid: AnchorGrid | None = None
) -> SecondTeacher:
    """The finished teacher at ``path`` on ``device`` in eval mode; checked against ``grid`` when given."""
    ckpt = load_checkpoint(path, MODEL_KIND)
    if grid is not None:
        grid.check_compatible(AnchorGrid.from_dict(ckpt["grid"]), what=str(path))
    return _model_from(ckpt).to(device).eval()


def teacher_model_checkpoint(
    model: SecondTeacher, epoch: int, extra: Mapping[str, Any] | None = None
) -> dict:
    return {
        "kind": MODEL_KIND,
        "model": model.state_dict(),
        "grid": model.grid.to_dict(),
        "config": to_dict(model.config),
        "epoch": epoch,
        **(extra or {}),
    }


LOG_COLUMNS = ["epoch", "total", "cls", "loc", "dir", "lr", "seconds"]


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
    out_dir = Path(out_dir)
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
    start_epoch = 0
    ckpt_path = out_dir / "checkpoint.pt"
    identity = {
        "grid": grid.to_dict(),
        "config": to_dict(config),
        "settings": to_dict(settings),
        "code": training_code_fingerprint(),
        "data": split_fingerprint(split),
    }
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, CHECKPOINT_KIND, map_location=device)
        changed = [key for key in identity if ckpt.get(key) != identity[key]]
        if not changed:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            start_epoch = int(ckpt["epoch"])
            tqdm.write(f"resuming the teacher after epoch {start_epoch} from {ckpt_path}")
        elif restart_on_mismatch:
            tqdm.write(
                f"not resuming from {ckpt_path}: the teacher's {', '.join(changed)} changed; starting over"
            )
        else:
            raise InputError(
                f"cannot resume: the teacher's {', '.join(changed)} changed since this checkpoint was written "
                "(delete it to start over)",
                ckpt_path,
            )
    log_path = out_dir / "loss_log.csv"
    log_rows: list[dict[str, Any]] = read_loss_log(log_path, start_epoch)
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a refused run leaves nothing behind

    for epoch in range(start_epoch + 1, settings.epochs + 1):
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
        sums = {"total": 0.0, "cls": 0.0, "loc": 0.0, "dir": 0.0}
        started = time.perf_counter()
        bar = tqdm(
            loader,
            desc=f"teacher epoch {epoch}/{settings.epochs}",
            unit="batch",
            disable=None if progress else True,
            leave=False,
        )
        for batch in bar:
            points = [torch.from_numpy(f.points).to(device) for f in batch]
            gts = [
                ground_truth_from_labels(f.names, torch.from_numpy(f.boxes), grid.class_names) for f in batch
            ]
            targets = assigner.assign_batch([_to(gt, device) for gt in gts])
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
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            for key in sums:
                sums[key] += float(losses[key].detach())
            bar.set_postfix(loss=f"{float(losses['total'].detach()):.3f}")
        n = len(loader)
        log_rows.append(
            {
                "epoch": epoch,
                **{k: f"{v / n:.6f}" for k, v in sums.items()},
                "lr": f"{scheduler.get_last_lr()[0]:.6g}",
                "seconds": f"{time.perf_counter() - started:.1f}",
            }
        )
        write_loss_log(log_path, log_rows, LOG_COLUMNS)
        save_training_checkpoint(ckpt_path, CHECKPOINT_KIND, model, optimizer, scheduler, epoch, identity)
        tqdm.write(
            f"teacher epoch {epoch}: loss {sums['total'] / n:.4f} "
            f"(cls {sums['cls'] / n:.4f}, loc {sums['loc'] / n:.4f}, dir {sums['dir'] / n:.4f})"
        )
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < settings.epochs:
            return ckpt_path
    final = out_dir / "teacher.pt"
    save_atomic(teacher_model_checkpoint(model, settings.epochs, {"settings": to_dict(settings)}), final)
    return final


def _to(gt, device):
    return type(gt)(*(getattr(gt, f).to(device) for f in gt.__dataclass_fields__))


def training_code_fingerprint() -> str:
    """Fingerprint of the code a teacher's training runs (teacher, head, geometry, prepared-data reader)."""
    import stereodistill.data.prepared as prepared
    import stereodistill.geometry as geometry
    import stereodistill.head as head
    import stereodistill.teacher as teacher

    digest = hashlib.sha256(source_fingerprint(teacher, head, geometry).encode())
    digest.update(Path(prepared.__file__).read_bytes())
    return digest.hexdigest()
