"""Depth pretraining of the student's stereo trunk (the `pretrain_student` stage and `stereodistill pretrain-student`).

The trunk (:data:`~stereodistill.student.model.TRUNK_MODULES`: the 2D feature extractor, the cost aggregation
and the depth head) learns depth alone, with LIGA's two-hot depth loss against the training split's LiDAR depth,
on the images the student sees (``student.train.image_scale``, the stereo flip). Its weights, ``trunk.pt``, are
computed once and are where every student run starts (:func:`load_trunk`); the student's seed still decides
the rest of the network's initial weights, its frame order and its flips.

Why: trained from scratch, a student spends most of a short schedule learning stereo matching while its
detection head waits on a focal-loss plateau, and when each run leaves it depends on the seed
(docs/RESULTS.md). Matching and depth need no boxes, so they are learnt once, like an ImageNet trunk.

Resume, checkpoints and the loss log are the shared run's (:mod:`stereodistill.training.run`); sample order and
flips depend only on ``(student.pretrain.seed, epoch, frame)``. ``student.pretrain.epochs: 0`` writes a
``trunk.pt`` holding no weights: students then train their trunk from scratch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from stereodistill.checkpoints import default_device, load_checkpoint, save_atomic
from stereodistill.data.prepared import PreparedSplit, split_fingerprint
from stereodistill.errors import InputError
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import Params
from stereodistill.settings import to_dict
from stereodistill.student.dataset import StudentFrames, batch_inputs, epoch_loader
from stereodistill.student.depth import batch_depth_targets, depth_loss, soft_argmin_depth
from stereodistill.student.model import TRUNK_MODULES, StereoStudent
from stereodistill.student.resnet import load_imagenet_weights
from stereodistill.student.schedule import lr_factor
from stereodistill.student.settings import StudentConfig, StudentPretrainSettings, StudentTrainSettings
from stereodistill.training.run import TrainingRun, run_identity

MODEL_KIND = "trunk"
TRUNK_NAME = f"{MODEL_KIND}.pt"  # what TrainingRun.finish writes
LOG_COLUMNS = ["step", "epoch", "depth", "depth_abs_error", "lr", "seconds"]


def trunk_state(model: StereoStudent) -> dict[str, torch.Tensor]:
    """The trunk's entries of ``model.state_dict()`` (keys under :data:`TRUNK_MODULES`)."""
    return {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in TRUNK_MODULES}


def trunk_recipe(
    config: StudentConfig, pretrain: StudentPretrainSettings, train: StudentTrainSettings
) -> dict[str, Any]:
    """What a trunk is made from, as plain data: the network, the pretraining settings and what it reads of
    ``student.train`` (the images the student sees). ``trunk.pt`` records it; a student loads a trunk only with
    the same recipe."""
    return {
        "config": to_dict(config),
        "pretrain": to_dict(pretrain),
        "images": {k: getattr(train, k) for k in ("image_scale", "flip_probability", "frame_limit")},
    }


def trunk_checkpoint(model: StereoStudent, recipe: dict[str, Any], epochs: int) -> dict[str, Any]:
    """What ``trunk.pt`` holds: the trunk's weights (none when ``epochs`` is 0) and its recipe."""
    return {"kind": MODEL_KIND, "model": trunk_state(model) if epochs > 0 else {}, **recipe}


def load_trunk(model: StereoStudent, path: str | Path, recipe: dict[str, Any]) -> None:
    """Load ``trunk.pt`` into ``model``'s trunk (:data:`TRUNK_MODULES`; the rest keeps its initial weights).

    The file must hold a trunk of ``recipe`` (:func:`trunk_recipe`), else an :class:`InputError` names the file
    and what differs.
    """
    if not Path(path).is_file():
        raise InputError(
            "no pretrained trunk: run `stereodistill pretrain-student` (or `dvc repro pretrain_student`), or set "
            "student.pretrain.epochs: 0 to train every student's trunk from scratch",
            path,
        )
    ckpt = load_checkpoint(path, MODEL_KIND)
    changed = [
        f"{section}.{key}"
        for section, values in recipe.items()
        for key in sorted(set(values) | set(ckpt.get(section, {})))
        if values.get(key) != ckpt.get(section, {}).get(key)
    ]
    if changed:
        raise InputError(
            f"this trunk was pretrained with other settings ({', '.join(changed)} differ); rerun "
            "`stereodistill pretrain-student`",
            path,
        )
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    trunk_missing = [k for k in missing if k.split(".", 1)[0] in TRUNK_MODULES]
    if trunk_missing or unexpected:
        raise InputError(
            f"not a trunk of this network: missing {trunk_missing[:3]}, unexpected {unexpected[:3]}", path
        )


def pretrain_trunk(
    grid: AnchorGrid,
    config: StudentConfig,
    pretrain: StudentPretrainSettings,
    train: StudentTrainSettings,
    train_split: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    restart_on_mismatch: bool = False,
) -> Path:
    """Pretrain the trunk of a ``config`` student on ``train_split``'s depth and return the path of ``trunk.pt``."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out_dir = Path(out_dir)
    torch.manual_seed(pretrain.seed)
    model = StereoStudent(config, grid)
    recipe = trunk_recipe(config, pretrain, train)
    if pretrain.epochs == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / TRUNK_NAME
        save_atomic(trunk_checkpoint(model, recipe, 0), path)
        return path
    if config.pretrained is not None:
        load_imagenet_weights(model.features.trunk, config.pretrained)
    model = model.to(device)
    trunk = torch.nn.ModuleList([getattr(model, name) for name in TRUNK_MODULES])
    split = PreparedSplit(train_split)
    frames = StudentFrames(
        split, train.flip_probability, train.image_scale, pretrain.seed, None, train.frame_limit, grid=grid
    )
    steps_per_epoch = max(1, -(-len(frames) // pretrain.batch_size))
    optimizer = torch.optim.AdamW(trunk.parameters(), lr=pretrain.lr, weight_decay=pretrain.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, pretrain)
    )
    identity = run_identity(
        grid, config, pretrain, __name__, split_fingerprint(split), images=recipe["images"]
    )
    run = TrainingRun(
        MODEL_KIND,
        out_dir,
        identity,
        model,
        optimizer,
        scheduler,
        pretrain.epochs,
        LOG_COLUMNS,
        stop_after_epoch=stop_after_epoch,
    )
    run.start(resume, restart_on_mismatch)
    for epoch in run.epochs():
        model.train()
        loader = epoch_loader(frames, epoch, pretrain.seed, pretrain.batch_size, train.num_workers)
        total = 0.0
        for samples in run.progress_bar(loader, epoch, progress):
            started = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            inputs = batch_inputs(
                [s.left for s in samples], [s.right for s in samples], [s.calib for s in samples], device
            )
            stereo = model.stereo(inputs.left, inputs.right, inputs.P2, inputs.baseline)
            target = batch_depth_targets([s.depth for s in samples], stereo.depth_logits, config)
            loss = depth_loss(stereo.depth_logits, target, model.plane_depths)
            run.step(loss, pretrain.grad_clip)
            error = depth_abs_error(
                soft_argmin_depth(stereo.depth_logits.detach(), model.plane_depths), target
            )
            total += float(loss.detach())
            run.log_rows.append(
                {
                    "step": scheduler.last_epoch,
                    "epoch": epoch,
                    "depth": f"{float(loss.detach()):.6f}",
                    "depth_abs_error": f"{error:.4f}",
                    "lr": f"{lr:.6g}",
                    "seconds": f"{time.perf_counter() - started:.3f}",
                }
            )
        run.end_epoch(epoch, f"trunk epoch {epoch}: depth loss {total / len(loader):.4f}")
    return run.finish(trunk_checkpoint(model, recipe, pretrain.epochs))


def depth_abs_error(depth: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error (metres) of ``depth (B, Hf, Wf)`` at the pixels with a target (``target > 0``)."""
    valid = target > 0
    return float((depth[valid] - target[valid]).abs().mean()) if bool(valid.any()) else 0.0


def trunk_path(params: Params) -> Path:
    """``{student.pretrain.out_dir}/trunk.pt``: the pretrained trunk every student starts from."""
    return Path(params.student.pretrain.out_dir) / TRUNK_NAME


def pretrain_trunk_from_params(
    params: Params, resume: bool = False, restart_on_mismatch: bool = False, progress: bool = True
) -> Path:
    """Pretrain the student's trunk on ``{data.prepared_dir}/train.h5`` into ``student.pretrain.out_dir``
    (what the `pretrain_student` stage and `stereodistill pretrain-student` run)."""
    student = params.student
    return pretrain_trunk(
        AnchorGrid.from_params(params.grid, params.source),
        student.model,
        student.pretrain,
        student.train,
        params.data.prepared_split("train"),
        student.pretrain.out_dir,
        resume=resume,
        restart_on_mismatch=restart_on_mismatch,
        device=default_device(),
        progress=progress,
    )
