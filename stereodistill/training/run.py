"""One resumable training run: what the teacher's and the student's trainers share around their epoch loop.

A run lives in ``out_dir``: ``checkpoint.pt`` (after every epoch: model, optimizer, scheduler, the weight average
when there is one, epoch and the run's identity), ``loss_log.csv`` (rows kept by the trainer, rewritten after every epoch) and, once the last epoch is
done, the finished model ``<model kind>.pt``. Under torchrun only the lead rank writes.

The identity (grid, network and training settings, code and data fingerprints ...) is what a resume compares:
a checkpoint written under another one is refused with an :class:`InputError` naming what changed, or, with
``restart_on_mismatch`` (the DVC stages, whose out_dir persists between runs), ignored for a fresh start.
Because sample order and augmentation depend only on (seed, epoch, frame), a resumed run trains on exactly what
an uninterrupted one would.

``ema_decay > 0`` keeps an exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel`` with
``get_ema_multi_avg_fn``; buffers averaged too), updated after every optimiser step, saved in the checkpoint and
restored on resume; :attr:`TrainingRun.final_model` is then the average, the model a trainer saves and evaluates.
The average smooths out where the last steps happen to leave the weights: with decay ``d`` it spans about
``1 / (1 - d)`` steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from stereodistill.checkpoints import load_checkpoint, save_atomic
from stereodistill.errors import InputError
from stereodistill.fingerprint import code_fingerprint
from stereodistill.settings import to_dict
from stereodistill.training.loss_log import read_loss_log, write_loss_log

if TYPE_CHECKING:
    from stereodistill.cache.ranks import Ranks
    from stereodistill.head.anchors import AnchorGrid

CHECKPOINT_NAME = "checkpoint.pt"
LOSS_LOG_NAME = "loss_log.csv"


def run_identity(
    grid: AnchorGrid, config: Any, settings: Any, trainer: str, data: str, **more: Any
) -> dict[str, Any]:
    """What a resume compares: the grid, the network ``config`` and training ``settings`` (as plain data), the
    fingerprint of the code the ``trainer`` module imports, the training split's fingerprint ``data``, and
    ``more`` (e.g. the distillation settings and the teacher cache's identity)."""
    return {
        "grid": grid.to_dict(),
        "config": to_dict(config),
        "settings": to_dict(settings),
        **{key: to_dict(value) if dataclasses.is_dataclass(value) else value for key, value in more.items()},
        "code": code_fingerprint(trainer),
        "data": data,
    }


class TrainingRun:
    """The run of ``model`` (with its ``optimizer`` and ``scheduler``) over ``epochs`` epochs in ``out_dir``.

    A trainer builds it once its model, optimizer and scheduler exist, calls :meth:`start`, appends its rows to
    :attr:`log_rows`, calls :meth:`end_epoch` after each epoch of :meth:`epochs` and returns :meth:`finish`.
    ``stop_after_epoch`` ends the run early (for tests of resume). ``ranks`` is given under torchrun.
    ``ema_decay`` (0: none) keeps the weight average of the module docstring; pass the unwrapped model, not its
    DistributedDataParallel wrapper.
    """

    def __init__(
        self,
        model_kind: str,
        out_dir: str | Path,
        identity: dict[str, Any],
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        epochs: int,
        log_columns: list[str],
        stop_after_epoch: int | None = None,
        ranks: Ranks | None = None,
        ema_decay: float = 0.0,
    ) -> None:
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
        self.model_kind = model_kind
        self.out_dir = Path(out_dir)
        self.identity = identity
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.num_epochs = epochs
        self.log_columns = log_columns
        self.stop_after_epoch = stop_after_epoch
        self.ranks = ranks
        self.lead = ranks is None or ranks.rank == 0
        self.start_epoch = 0
        self.log_rows: list[dict[str, Any]] = []
        self.averaged = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            if ema_decay > 0
            else None
        )

    @property
    def final_model(self) -> torch.nn.Module:
        """The weights the run saves and evaluates: the moving average when there is one, else the model."""
        return self.model if self.averaged is None else self.averaged.module

    @property
    def checkpoint_kind(self) -> str:
        return f"{self.model_kind}-training"

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOSS_LOG_NAME

    def say(self, message: str) -> None:
        """Print ``message`` above the progress bar (lead rank only)."""
        if self.lead:
            tqdm.write(message)

    def start(self, resume: bool, restart_on_mismatch: bool) -> None:
        """Resume from the checkpoint when ``resume`` and it has this run's identity, then read the loss log up
        to the epoch resumed from. Creates ``out_dir`` only now, so a refused run leaves nothing behind.

        The checkpoint is read to CPU: loading copies the weights to the model's device and the optimizer moves
        its state next to each parameter, except AdamW's ``step`` counts, which stay on CPU as in a fresh run
        (on a GPU they would cost a host sync per parameter and step)."""
        path = self.checkpoint_path
        if resume and path.exists():
            ckpt = load_checkpoint(path, self.checkpoint_kind, map_location="cpu")
            changed = [key for key in self.identity if ckpt.get(key) != self.identity[key]]
            what = f"the {self.model_kind}'s {', '.join(changed)}"
            if not changed:
                self.model.load_state_dict(ckpt["model"])
                if self.averaged is not None:
                    self.averaged.load_state_dict(ckpt["averaged"])
                self.optimizer.load_state_dict(ckpt["optimizer"])
                self.scheduler.load_state_dict(ckpt["scheduler"])
                self.start_epoch = int(ckpt["epoch"])
                self.say(f"resuming the {self.model_kind} after epoch {self.start_epoch} from {path}")
            elif restart_on_mismatch:  # every rank reads the same checkpoint, so every rank starts over
                self.say(f"not resuming from {path}: {what} changed; starting over")
            else:
                raise InputError(
                    f"cannot resume: {what} changed since this checkpoint was written (delete it to start over)",
                    path,
                )
        self.log_rows = read_loss_log(self.log_path, self.start_epoch)
        if self.lead:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def epochs(self) -> range:
        """The epochs (1-based) this run trains: from the one after the resumed epoch to the last, or to the
        first epoch at or after ``stop_after_epoch``."""
        last = self.num_epochs
        if self.stop_after_epoch is not None:
            last = min(last, max(self.stop_after_epoch, self.start_epoch + 1))
        return range(self.start_epoch + 1, last + 1)

    def progress_bar(self, batches: Iterable[Any], epoch: int, progress: bool) -> tqdm:
        """``batches`` of ``epoch`` behind a progress bar on stderr (when ``progress``, on a terminal, lead rank)."""
        return tqdm(
            batches,
            desc=f"{self.model_kind} epoch {epoch}/{self.num_epochs}",
            unit="batch",
            disable=None if progress and self.lead else True,
            leave=False,
        )

    def step(self, loss: torch.Tensor, grad_clip: float) -> None:
        """One optimiser step on ``loss``: gradients clipped to norm ``grad_clip``, one scheduler step, then the
        weight average's update."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)

    def end_epoch(self, epoch: int, summary: str) -> None:
        """After ``epoch``: write the loss log and the checkpoint, then print ``summary`` (lead rank)."""
        if not self.lead:
            return
        write_loss_log(self.log_path, self.log_rows, self.log_columns)
        state = {
            "kind": self.checkpoint_kind,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            **self.identity,
        }
        if self.averaged is not None:
            state["averaged"] = self.averaged.state_dict()
        save_atomic(state, self.checkpoint_path)
        tqdm.write(summary)

    def finish(self, model_checkpoint: dict[str, Any]) -> Path:
        """Save the finished model (lead rank) and return its path; a run stopped early by
        ``stop_after_epoch`` saves nothing and returns the checkpoint's path."""
        if self.epochs().stop <= self.num_epochs:
            return self.checkpoint_path
        path = self.out_dir / f"{self.model_kind}.pt"
        if self.lead:
            save_atomic(model_checkpoint, path)
        if self.ranks is not None:
            self.ranks.barrier()
        return path
