"""Training the stereo student (stage two: the `train_student` stage and `stereodistill train-student`).

Per batch the student sums the GT detection losses, LIGA's depth loss and, when ``distill`` turns them on, XGD,
CLD and LIGA's BEV feature imitation against the teacher cache (:mod:`stereodistill.student.losses`); with the
imitation on, the network gets its 1x1 adapter to the cache's ``feature_channels()`` and the loss the cache's
``feature_scale()``, read once at the start. AdamW, a linear warm-up from
``lr * warmup_factor`` over ``warmup_epochs``, then cosine decay to ``lr * min_lr_ratio`` or step decay (x
``step_gamma`` at each of ``step_epochs``) (:mod:`stereodistill.student.schedule`), gradient-norm clipping and
a per-step loss log (:mod:`stereodistill.student.loss_log`); with ``ema_decay`` the finished ``student.pt`` holds
the moving average of the weights; resume, checkpoints and the finished
``student.pt`` are the shared run's (:mod:`stereodistill.training.run`). Sample order and flips depend only on
``(seed, epoch, frame)``, so ``resume=True`` trains on exactly what an uninterrupted run would.

Under ``torchrun --nproc_per_node N`` the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on
CUDA; the resnet34 trunk's BatchNorm is synchronised over the GPUs): every rank draws the same epoch
permutation and takes every N-th frame of it (the last few repeated so the ranks take equal steps,
:mod:`stereodistill.student.ranks`), ``batch_size`` is per rank, and rank 0 alone writes the log (loss terms
averaged over ranks) and the checkpoints.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from stereodistill.cache.ranks import current_ranks
from stereodistill.cache.store import file_sha256
from stereodistill.data.prepared import PreparedSplit, split_fingerprint
from stereodistill.distill.settings import DistillSettings
from stereodistill.errors import InputError
from stereodistill.head.anchors import AnchorGrid
from stereodistill.settings import to_dict
from stereodistill.student.checkpoint import MODEL_KIND, student_model_checkpoint
from stereodistill.student.dataset import StudentFrames, epoch_loader
from stereodistill.student.loss_log import log_columns, step_row
from stereodistill.student.losses import LOSS_TERMS, student_losses
from stereodistill.student.model import StereoStudent
from stereodistill.student.pretrain import load_trunk, trunk_recipe
from stereodistill.student.ranks import rank_mean
from stereodistill.student.resnet import load_imagenet_weights
from stereodistill.student.schedule import lr_factor, regression_factor
from stereodistill.student.settings import StudentConfig, StudentPretrainSettings, StudentTrainSettings
from stereodistill.student.teacher_cache import open_cache
from stereodistill.training.run import TrainingRun, run_identity

SCHEDULES = ("cosine", "step")
XGD_MODES = ("xgd", "whole_box", "off")
CLD_REGIONS = ("gt_boxes", "confident", "all")


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
    trunk: str | Path | None = None,
    pretrain: StudentPretrainSettings | None = None,
) -> Path:
    """Train and return the path of ``student.pt`` (see the module docstring).

    ``trunk`` is a ``trunk.pt`` pretrained with ``pretrain`` (:mod:`stereodistill.student.pretrain`) that the
    network starts from; its sha256 joins the run's identity.

    ``cache_path`` is needed (and validated) only when ``distill`` enables XGD, CLD or the imitation. The
    checkpoint records the grid, network, training and distillation settings, a fingerprint of the training code,
    of the training split and the cache's identity; resuming under a different one is an error or, with
    ``restart_on_mismatch`` (the DVC stage), a fresh start.
    """
    ranks = current_ranks()
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
                "distill.xgd/cld/imitation are on but no teacher cache (cache.store) was given", "params.yaml"
            )
        cache = open_cache(cache_path, grid, settings, distill, split, data_digest)
    # LIGA's feature imitation: the adapter's width and the fixed per-channel normaliser come from the cache.
    imitation_channels, imitation_scale = 0, None
    if cache is not None and distill.imitation.enabled:
        imitation_channels, imitation_scale = cache.feature_channels(), cache.feature_scale().to(device)
    model = StereoStudent(config, grid, imitation_channels)
    # Before the first step, so a wrong file fails at once (a resumed run then loads its checkpoint over it).
    if config.pretrained is not None:
        load_imagenet_weights(model.features.trunk, config.pretrained)
    if trunk is not None:
        load_trunk(model, trunk, trunk_recipe(config, pretrain or StudentPretrainSettings(), settings))
    model = model.to(device)
    network: torch.nn.Module = model
    if ranks.world > 1:
        if config.backbone == "resnet34" and device.type == "cuda":
            # The resnet34 trunk's BatchNorm (as LIGA, synchronised over the GPUs): one frame per rank.
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # The student's other buffers are constants every rank builds alike, so broadcasting them each step
        # (plane and voxel centres, tens of MB at KITTI scale) is pure traffic; synchronised BatchNorm keeps its
        # running statistics equal on every rank.
        network = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    frames = StudentFrames(
        split,
        settings.flip_probability,
        settings.image_scale,
        settings.seed,
        cache,
        settings.frame_limit,
        grid=grid,
        read_features=imitation_channels > 0,
    )
    per_rank = -(-len(frames) // ranks.world)
    steps_per_epoch = max(1, -(-per_rank // settings.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, settings)
    )
    identity = run_identity(
        grid,
        config,
        settings,
        __name__,
        data_digest,
        distill=distill,
        cache=None if cache is None else cache.identity,
        trunk=None if trunk is None else file_sha256(trunk),
    )
    run = TrainingRun(
        MODEL_KIND,
        out_dir,
        identity,
        model,
        optimizer,
        scheduler,
        settings.epochs,
        log_columns(distill),
        stop_after_epoch=stop_after_epoch,
        ranks=ranks,
        ema_decay=settings.ema_decay,
    )
    run.start(resume, restart_on_mismatch)

    for epoch in run.epochs():
        model.train()
        loader = epoch_loader(
            frames, epoch, settings.seed, settings.batch_size, settings.num_workers, ranks.rank, ranks.world
        )
        sums = dict.fromkeys(LOSS_TERMS, 0.0)
        bar = run.progress_bar(loader, epoch, progress)
        for samples in bar:
            started = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            scale = regression_factor(scheduler.last_epoch, steps_per_epoch, settings)
            step = student_losses(
                model,
                samples,
                settings,
                distill,
                device,
                cache,
                network,
                regression_scale=scale,
                imitation_scale=imitation_scale,
            )
            run.step(step.terms["total"], settings.grad_clip)
            values = rank_mean(
                {**{key: step.terms[key].detach() for key in LOSS_TERMS}, **step.loc_codes}, ranks.world
            )
            for key in LOSS_TERMS:
                sums[key] += values[key]
            run.log_rows.append(
                step_row(scheduler.last_epoch, epoch, values, step, lr, time.perf_counter() - started)
            )
            bar.set_postfix(loss=f"{values['total']:.3f}")
        n = len(loader)
        run.end_epoch(
            epoch,
            f"student epoch {epoch}: loss {sums['total'] / n:.4f} ("
            + ", ".join(f"{k} {sums[k] / n:.4f}" for k in LOSS_TERMS[1:])
            + ")",
        )
    extra = {"settings": to_dict(settings), "distill": to_dict(distill)}
    path = run.finish(student_model_checkpoint(run.final_model, settings.epochs, extra))
    ranks.close()
    return path
