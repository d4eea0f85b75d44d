"""Saving and loading checkpoints: atomic writes, ``weights_only`` loads, clear errors."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from stereodistill.errors import InputError
from stereodistill.files import remove_stale_temp_files, temp_path
from stereodistill.head.anchors import AnchorGrid
from stereodistill.settings import to_dict


def default_device() -> torch.device:
    """Where the stages train and infer: the GPU when there is one (checkpoints load onto it)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary name in the same folder, then rename: a crash never leaves a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    tmp = temp_path(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_weights_only(
    path: str | Path, map_location: str | torch.device = "cpu", safe_globals: Sequence[Any] = ()
) -> Any:
    """``torch.load(path, weights_only=True)``: the one place the package unpickles a file.

    Tensors, containers, numbers and strings load, plus the constructors in ``safe_globals``; a file naming any
    other Python object (code a hostile pickle would run) is refused with its name and never executed. Every
    failure is an ``InputError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint is missing", path)
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        found = re.search(r"GLOBAL (\S+)", message)
        if found is None:  # not a pickle torch can read: keep the reason, not torch's advice
            reason = re.search(
                r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", message, re.S
            )
            detail = " ".join((reason.group(1) if reason else message).split())
            raise InputError(f"not a loadable checkpoint ({detail})", path) from None
        raise InputError(
            f"refusing to load: the file holds a Python object other than tensors, numbers and strings "
            f"({found.group(1)}). It is read with torch.load(weights_only=True), which never runs code from the "
            "file. If you trust the file, re-save only its tensors (state dicts) with torch.save",
            path,
        ) from None
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise InputError(f"not a loadable checkpoint ({type(err).__name__}: {err})", path) from None


def load_checkpoint(path: str | Path, kind: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True`` (:func:`load_weights_only`) and check it is a StereoDistill ``kind`` checkpoint."""
    ckpt = load_weights_only(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        found = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise InputError(f"expected a StereoDistill {kind} checkpoint, found {found!r}", path)
    return ckpt


class GridModel(Protocol):
    """A network built from an anchor grid and a settings class (the teacher and the student)."""

    grid: AnchorGrid
    config: Any

    def state_dict(self) -> dict[str, Any]: ...


def model_checkpoint(
    kind: str, model: GridModel, epoch: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a finished model file (``teacher.pt``, ``student.pt``) holds: ``kind``, weights, grid, network
    config and epoch, then ``extra`` (``settings`` ...)."""
    return {
        "kind": kind,
        "model": model.state_dict(),
        "grid": model.grid.to_dict(),
        "config": to_dict(model.config),
        "epoch": epoch,
        **(extra or {}),
    }


def load_model_checkpoint(
    path: str | Path, kind: str, grid: AnchorGrid | None = None
) -> tuple[dict[str, Any], AnchorGrid]:
    """A finished model file of ``kind`` and the grid it was trained on, checked against ``grid`` when given."""
    ckpt = load_checkpoint(path, kind)
    stored = AnchorGrid.from_dict(ckpt["grid"])
    if grid is not None:
        grid.check_compatible(stored, what=str(path))
    return ckpt, stored
