"""Saving and loading checkpoints: atomic writes, ``weights_only`` loads, clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from stereodistill.errors import InputError
from stereodistill.files import remove_stale_temp_files, temp_path


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


def load_checkpoint(path: str | Path, kind: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True`` and check it is a StereoDistill checkpoint of ``kind``."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint is missing", path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise InputError(f"not a loadable checkpoint ({type(err).__name__}: {err})", path) from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        found = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise InputError(f"expected a StereoDistill {kind} checkpoint, found {found!r}", path)
    return ckpt
