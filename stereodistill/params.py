"""Reading ``params.yaml``, the single source of truth for every tunable.

Stages and CLI commands call :func:`load_params` and pick their own section; nothing reads a setting
that is not in the file. :func:`load_params` checks the whole file against :data:`SCHEMA` first (unknown
keys, wrong types, each named by its dotted key), so a typo fails every command before it does any work;
the settings classes then check values (ranges, choices) as they are built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stereodistill.errors import InputError

SECTIONS = ("data", "grid", "teacher", "cache", "student", "distill", "evaluate")


# ------------------------------------------------------------------------------------------ the file's layout
@dataclass(frozen=True)
class ListOf:
    """A YAML list of ``item`` values (``length`` of them when given)."""

    item: Any
    length: int | None = None


@dataclass(frozen=True)
class MapOf:
    """A YAML mapping with free (string) keys and ``value`` values, e.g. per-class counts."""

    value: Any


@dataclass(frozen=True)
class OneOf:
    """Any one of ``options`` (``None`` among them: the key may be null)."""

    options: tuple[Any, ...]


# A spec is a type (int, float, str, bool), Any (not checked here), None (null), a ListOf / MapOf / OneOf, or a
# dict of key -> spec (a mapping with exactly those keys, each optional). Mirrors the settings classes
# (TeacherConfig, TeacherTrainSettings, CacheSettings, StudentConfig, StudentTrainSettings, DistillSettings,
# DecodeSettings); tests/reliability/test_bad_input.py checks it against their fields and type hints.
_DECODE = {
    "score_threshold": float,
    "pre_nms_top_k": int,
    "nms_iou_threshold": float,
    "post_nms_top_k": int,
    "class_agnostic": bool,
}
SCHEMA: dict[str, Any] = {
    "data": {
        "root": str,
        "split_dir": str,
        "prepared_dir": str,
        "splits": ListOf(str),
        "synth": {"out": str, "preset": str, "frames": int, "val_fraction": float, "seed": int},
    },
    "grid": Any,  # AnchorGrid.from_params checks every key and type itself, naming grid.classes[i].<field>
    "teacher": {
        "out_dir": str,
        "model": {
            "point_features": int,
            "voxel_size": ListOf(float, 3),
            "max_points_per_voxel": int,
            "max_voxels": int,
            "sparse_channels": ListOf(int),
            "sparse_out_channels": int,
            "bev_channels": ListOf(int, 2),
            "bev_layers": ListOf(int, 2),
            "bev_upsample_channels": int,
            "sparse_extra_z_voxels": int,
            "last_down_z_padding": int,
        },
        "train": {
            "epochs": int,
            "batch_size": int,
            "lr": float,
            "weight_decay": float,
            "pct_start": float,
            "div_factor": float,
            "grad_clip": float,
            "seed": int,
            "num_workers": int,
            "loss_weights": MapOf(float),
            "augment": OneOf(
                (
                    None,
                    {
                        "flip_probability": float,
                        "rotation": ListOf(float, 2),
                        "scale": ListOf(float, 2),
                        "gt_sampling": OneOf((None, MapOf(int))),
                        "gt_sampling_min_points": int,
                    },
                )
            ),
        },
        "decode": _DECODE,
    },
    "cache": {
        "store": str,
        "split": str,
        "views": ListOf(str),
        "batch_size": int,
        "frames_per_shard": int,
        "logit_step": float,
        "codec": str,
        "codec_level": int,
        "coverage": OneOf((None, {"iou_floor": float, "score_floor": float, "capacity": int})),
    },
    "student": {
        "out_dir": str,
        "model": {
            "backbone_channels": ListOf(int),
            "backbone_strides": ListOf(int),
            "backbone_blocks": ListOf(int),
            "stereo_channels": int,
            "semantic_channels": int,
            "cost_volume": str,
            "gwc_groups": int,
            "depth_min": float,
            "depth_max": float,
            "num_planes": int,
            "cost_channels": int,
            "voxel_z": int,
            "z_pool": int,
            "volume_channels": int,
            "bev_channels": int,
            "norm_groups": int,
            "box_tower_negative_slope": float,
        },
        "train": {
            "epochs": int,
            "batch_size": int,
            "lr": float,
            "weight_decay": float,
            "warmup_epochs": float,
            "warmup_factor": float,
            "schedule": str,
            "step_epochs": ListOf(int),
            "step_gamma": float,
            "min_lr_ratio": float,
            "grad_clip": float,
            "seed": int,
            "num_workers": int,
            "flip_probability": float,
            "image_scale": int,
            "frame_limit": int,
            "regression_warmup_epochs": float,
            "loss_weights": MapOf(float),
        },
        "decode": _DECODE,
    },
    "distill": {
        "xgd": OneOf(
            (
                None,
                {
                    "mode": str,
                    "split": str,
                    "iou": str,
                    "thresholds": OneOf((ListOf(float), MapOf(ListOf(float)))),
                    "beta": float,
                    "weight": float,
                },
            )
        ),
        "cld": OneOf(
            (
                None,
                {
                    "mode": str,
                    "temperature": float,
                    "region": OneOf((str, ListOf(str))),
                    "confident_threshold": float,
                    "weight": float,
                },
            )
        ),
    },
    "evaluate": {
        "split": str,
        "classes": ListOf(str),
        "teacher_predictions": str,
        "teacher_metrics": str,
        "student_predictions": str,
        "student_metrics": str,
    },
}


def _describe(spec: Any) -> str:
    if spec is None:
        return "null"
    if spec is bool:
        return "true or false"
    if spec is int:
        return "an integer"
    if spec is float:
        return "a number"
    if spec is str:
        return "a string"
    if isinstance(spec, ListOf):
        count = f"{spec.length} " if spec.length is not None else ""
        return f"a list of {count}{_plural(spec.item)}"
    if isinstance(spec, MapOf):
        return f"a mapping of name -> {_describe(spec.value)}"
    if isinstance(spec, OneOf):
        return " or ".join(_describe(option) for option in spec.options)
    return "a mapping"


def _plural(spec: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(spec, _describe(spec))


def _problem(value: Any, spec: Any, where: str) -> str | None:
    """Why ``value`` does not fit ``spec`` (``"dotted.key: ..."``), or None when it fits."""
    if spec is Any:
        return None
    if spec is None:
        return None if value is None else f"{where}: expected null"
    if spec in (int, float, str, bool):
        fits = {
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, int | float) and not isinstance(value, bool),
            str: isinstance(value, str),
            bool: isinstance(value, bool),
        }[spec]
        if fits:
            return None
        hint = ""
        if spec in (int, float) and isinstance(value, str):
            try:
                float(value)
                hint = " (YAML reads a number in exponent form without a decimal point as a string: write 1.0e-3, not 1e-3)"
            except ValueError:
                pass
        return f"{where}: expected {_describe(spec)}, got {value!r} ({type(value).__name__}){hint}"
    if isinstance(spec, OneOf):
        problems = [_problem(value, option, where) for option in spec.options]
        if all(problems):
            # The option of the value's shape (a list for a list, a mapping for a mapping) has the useful message.
            shaped = [
                problem
                for option, problem in zip(spec.options, problems, strict=True)
                if (isinstance(option, ListOf) and isinstance(value, list))
                or (isinstance(option, dict | MapOf) and isinstance(value, Mapping))
            ]
            if len(shaped) == 1:
                return shaped[0]
            return f"{where}: expected {_describe(spec)}, got {value!r} ({type(value).__name__})"
        return None
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            return f"{where}: expected {_describe(spec)}, got {value!r} ({type(value).__name__})"
        if spec.length is not None and len(value) != spec.length:
            return f"{where}: expected {_describe(spec)}, got {len(value)}: {value!r}"
        for i, item in enumerate(value):
            if problem := _problem(item, spec.item, f"{where}[{i}]"):
                return problem
        return None
    if not isinstance(value, Mapping):
        return f"{where}: expected {_describe(spec)}, got {value!r} ({type(value).__name__})"
    if isinstance(spec, MapOf):
        for key, item in value.items():
            if problem := _problem(item, spec.value, f"{where}.{key}"):
                return problem
        return None
    unknown = [str(key) for key in value if key not in spec]
    if unknown:
        return f"unknown field(s) {', '.join(f'{where}.{key}' for key in unknown)}"
    for key, item in value.items():
        if problem := _problem(item, spec[key], f"{where}.{key}"):
            return problem
    return None


def check_params(params: Mapping[str, Any], path: str | Path = "params.yaml") -> None:
    """Raise ``InputError`` naming the first unknown key or wrongly typed value (``student.train.epochs``).

    Keys are optional here (a command that needs one says so with :func:`require`); a top-level section that is
    not a mapping is left to :func:`section`.
    """
    for name, spec in SCHEMA.items():
        value = params.get(name)
        if isinstance(value, Mapping) and (problem := _problem(value, spec, name)):
            raise InputError(problem, path)


# ------------------------------------------------------------------------------------------ loading
def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Parse ``path``, check its top level is a mapping of known sections and check it (:func:`check_params`)."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError("params file is missing", path) from None
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        raise InputError(f"not valid YAML: {err}", path, None if line is None else line + 1) from None
    if not isinstance(params, dict):
        raise InputError("expected a mapping of sections at the top level", path)
    unknown = sorted(set(params) - set(SECTIONS))
    if unknown:
        raise InputError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}", path)
    check_params(params, path)
    return params


def section(params: dict[str, Any], name: str, path: str | Path = "params.yaml") -> dict[str, Any]:
    """``params[name]``, or a clear error naming the missing section."""
    value = params.get(name)
    if not isinstance(value, dict):
        raise InputError(f"section '{name}' is missing or not a mapping", path)
    return value


def require(mapping: dict[str, Any], key: str, where: str, path: str | Path = "params.yaml") -> Any:
    """``mapping[key]``, or an error naming the dotted field (``where.key``)."""
    if key not in mapping:
        raise InputError(f"missing field '{where}.{key}'", path)
    return mapping[key]
