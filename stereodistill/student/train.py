"""Training the stereo student (stage two: the `train_student` stage and `stereodistill train-student`).

Per batch the student sums the GT detection losses, LIGA's depth loss and, when ``distill`` turns them on, XGD
and CLD against the teacher cache (:mod:`stereodistill.student.losses`). AdamW, a linear warm-up from
``lr * warmup_factor`` over ``warmup_epochs``, then cosine decay to ``lr * min_lr_ratio`` or step decay (x
``step_gamma`` at each of ``step_epochs``) (:mod:`stereodistill.student.schedule`), gradient-norm clipping and
a per-step loss log (:mod:`stereodistill.student.loss_log`); resume, checkpoints and the finished
``student.pt`` are the shared run's (:mod:`stereodistill.training.run`). Sample order and flips depend only on
``(seed, epoch, frame)``, so ``resume=True`` trains on exactly what an uninterrupted run would.

Under ``torchrun --nproc_per_node N`` the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on
CUDA): every rank draws the same epoch permutation and takes every N-th frame of it (the last few repeated so
the ranks take equal steps, :mod:`stereodistill.student.ranks`), ``batch_size`` is per rank, and rank 0 alone
writes the log (loss terms averaged over ranks) and the checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from stereodistill.cache.ranks import current_ranks
from stereodistill.data.prepared import PreparedSplit, split_fingerprint
from stereodistill.distill.cld import CLD_MODES, CldOptions
from stereodistill.distill.pilots import SPLITS
from stereodistill.distill.xgd import DEFAULT_THRESHOLDS, XgdOptions
from stereodistill.errors import InputError
from stereodistill.fingerprint import code_fingerprint
from stereodistill.head.anchors import AnchorGrid
from stereodistill.head.assigner import TargetAssigner
from stereodistill.student.checkpoint import MODEL_KIND, student_model_checkpoint
from stereodistill.student.config import StudentConfig
from stereodistill.student.dataset import StudentFrames, collate_samples
from stereodistill.student.loss_log import log_columns, step_row
from stereodistill.student.losses import LOSS_TERMS, student_losses
from stereodistill.student.model import StereoStudent
from stereodistill.student.ranks import epoch_indices, rank_mean
from stereodistill.student.schedule import lr_factor, regression_factor
from stereodistill.student.teacher_cache import open_cache
from stereodistill.training.run import TrainingRun

SCHEDULES = ("cosine", "step")
XGD_MODES = ("xgd", "whole_box", "off")
CLD_REGIONS = ("gt_boxes", "confident", "all")


def _unknown(values: Mapping[str, Any], known: Any, where: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(f'{where}.{k}' for k in unknown)}", "params.yaml")


def _fail(field_name: str, message: str) -> None:
    raise InputError(f"{field_name}: {message}", "params.yaml")


@dataclass(frozen=True)
class StudentTrainSettings:
    """The ``student.train`` section of params.yaml."""

    epochs: int = 60
    batch_size: int = 1
    lr: float = 0.001
    weight_decay: float = 0.0001
    warmup_epochs: float = 1.0
    warmup_factor: float = 0.1  # the warm-up starts at lr * warmup_factor
    schedule: str = "step"  # step | cosine
    step_epochs: tuple[int, ...] = (50,)
    step_gamma: float = 0.1
    min_lr_ratio: float = 0.0  # cosine ends at lr * min_lr_ratio
    grad_clip: float = 10.0
    seed: int = 0
    num_workers: int = 0
    flip_probability: float = 0.5
    image_scale: int = 1  # integer image downsampling (P2/P3 scaled consistently), see student/dataset.py
    frame_limit: int = 0  # > 0: train on the first that many frames only (smoke runs)
    regression_warmup_epochs: float = 0.0  # loc and XGD weights ramp 0 -> 1 over these epochs (0: no ramp)
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"cls": 1.0, "loc": 0.5, "dir": 0.2, "depth": 1.0}
    )

    def __post_init__(self) -> None:
        w = "student.train"
        if self.epochs < 1:
            _fail(f"{w}.epochs", f"must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            _fail(f"{w}.batch_size", f"must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            _fail(f"{w}.lr", f"must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            _fail(f"{w}.schedule", f"expected one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 <= self.flip_probability <= 1.0:
            _fail(f"{w}.flip_probability", f"must lie in [0, 1], got {self.flip_probability}")
        if not isinstance(self.image_scale, int) or self.image_scale < 1:
            _fail(f"{w}.image_scale", f"must be a positive integer, got {self.image_scale!r}")
        if not self.regression_warmup_epochs >= 0:
            _fail(f"{w}.regression_warmup_epochs", f"must be >= 0, got {self.regression_warmup_epochs}")
        if self.warmup_epochs < 0 or not 0 < self.warmup_factor <= 1:
            _fail(f"{w}.warmup_epochs", "need warmup_epochs >= 0 and 0 < warmup_factor <= 1")
        if set(self.loss_weights) != {"cls", "loc", "dir", "depth"}:
            _fail(f"{w}.loss_weights", f"needs exactly cls, loc, dir, depth; got {sorted(self.loss_weights)}")

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> StudentTrainSettings:
        values = dict(section)
        _unknown(values, cls.__dataclass_fields__, "student.train")
        if "step_epochs" in values:
            values["step_epochs"] = tuple(int(v) for v in values["step_epochs"])
        if "loss_weights" in values:
            values["loss_weights"] = {k: float(v) for k, v in dict(values["loss_weights"]).items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["step_epochs"] = list(self.step_epochs)
        return d


@dataclass(frozen=True)
class XgdSettings:
    """``distill.xgd``: ``mode`` xgd | whole_box | off; thresholds per class in grid order (or per component)."""

    mode: str = "xgd"
    split: str = "groups"
    iou: str = "3d"
    thresholds: Any = DEFAULT_THRESHOLDS
    beta: float = 1.0 / 9.0
    weight: float = 1.0

    def __post_init__(self) -> None:
        w = "distill.xgd"
        if self.mode not in XGD_MODES:
            _fail(f"{w}.mode", f"expected one of {', '.join(XGD_MODES)}, got {self.mode!r}")
        if self.split not in SPLITS:
            _fail(f"{w}.split", f"expected one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.iou not in ("3d", "bev"):
            _fail(f"{w}.iou", f"expected 3d or bev, got {self.iou!r}")
        if self.mode == "whole_box" and isinstance(self.thresholds, Mapping):
            _fail(f"{w}.thresholds", "whole_box needs one threshold per class, not per component")
        try:
            self.options()
        except ValueError as err:
            _fail(f"{w}.thresholds", str(err))

    def options(self) -> XgdOptions:
        return XgdOptions(split=self.split, iou=self.iou, thresholds=self.thresholds, beta=self.beta)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def num_classes(self) -> int:
        from stereodistill.distill.xgd import threshold_table

        return threshold_table(self.thresholds, self.split).shape[1]


@dataclass(frozen=True)
class CldSettings:
    """``distill.cld``: ``mode`` diagonal | all | per_class | off; ``region`` a list of gt_boxes/confident/all."""

    mode: str = "diagonal"
    temperature: float = 1.0
    region: tuple[str, ...] = ("gt_boxes", "confident")
    confident_threshold: float = 0.1
    weight: float = 1.0

    def __post_init__(self) -> None:
        w = "distill.cld"
        if self.mode not in (*CLD_MODES, "off"):
            _fail(f"{w}.mode", f"expected one of {', '.join((*CLD_MODES, 'off'))}, got {self.mode!r}")
        if not self.temperature > 0:
            _fail(f"{w}.temperature", f"must be > 0, got {self.temperature}")
        bad = [r for r in self.region if r not in CLD_REGIONS]
        if bad or not self.region:
            _fail(
                f"{w}.region",
                f"expected a non-empty list of {', '.join(CLD_REGIONS)}, got {list(self.region)}",
            )
        if not 0 < self.confident_threshold < 1:
            _fail(f"{w}.confident_threshold", f"must lie in (0, 1), got {self.confident_threshold}")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def options(self) -> CldOptions:
        return CldOptions(mode=self.mode, temperature=self.temperature)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DistillSettings:
    """The ``distill`` section of params.yaml: ``xgd`` and ``cld``."""

    xgd: XgdSettings = XgdSettings()
    cld: CldSettings = CldSettings()

    @property
    def enabled(self) -> bool:
        return self.xgd.enabled or self.cld.enabled

    @classmethod
    def from_params(cls, section: Mapping[str, Any] | None) -> DistillSettings:
        values = dict(section or {})
        _unknown(values, cls.__dataclass_fields__, "distill")
        xgd = dict(values.get("xgd") or {})
        _unknown(xgd, XgdSettings.__dataclass_fields__, "distill.xgd")
        if isinstance(xgd.get("thresholds"), list):
            xgd["thresholds"] = tuple(float(v) for v in xgd["thresholds"])
        elif isinstance(xgd.get("thresholds"), Mapping):
            xgd["thresholds"] = {k: tuple(float(x) for x in v) for k, v in xgd["thresholds"].items()}
        cld = dict(values.get("cld") or {})
        _unknown(cld, CldSettings.__dataclass_fields__, "distill.cld")
        if "region" in cld:
            region = cld["region"]
            cld["region"] = (region,) if isinstance(region, str) else tuple(region)
        return cls(XgdSettings(**xgd), CldSettings(**cld))

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            return value

        return {"xgd": plain(asdict(self.xgd)), "cld": plain(asdict(self.cld))}


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
        "config": config.to_dict(),
        "settings": settings.to_dict(),
        "distill": distill.to_dict(),
        "code": code_fingerprint(__name__),
        "data": data_digest,
        "cache": None if cache is None else cache.identity,
    }
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
    )
    run.start(resume, restart_on_mismatch, device)

    for epoch in run.epochs():
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
            disable=None if progress and run.lead else True,
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
    extra = {"settings": settings.to_dict(), "distill": distill.to_dict()}
    return run.finish(student_model_checkpoint(model, settings.epochs, extra))
