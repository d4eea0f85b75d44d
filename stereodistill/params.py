"""Reading ``params.yaml``, the single source of truth for every tunable.

:func:`load_params` parses the file and builds the whole of it into :class:`Params`, a tree of the settings
classes (:mod:`stereodistill.settings` checks every key, type and value, each error naming its dotted key and the
file), so a typo anywhere fails every command before it does any work. Stages and CLI commands then read typed
settings. The ``grid`` section is kept as the file gives it: :meth:`AnchorGrid.from_params` checks it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stereodistill.cache.schema import CacheSettings
from stereodistill.data.settings import DataSettings
from stereodistill.distill.settings import DistillSettings
from stereodistill.errors import InputError
from stereodistill.settings import load_settings
from stereodistill.student.settings import StudentSettings
from stereodistill.teacher.settings import TeacherSettings

SECTIONS = ("data", "grid", "teacher", "cache", "student", "distill", "evaluate")


@dataclass(frozen=True)
class EvaluateSettings:
    """The ``evaluate`` section: scoring on a prepared split with the official KITTI protocol."""

    split: str = "val"
    classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
    teacher_predictions: str = "outputs/teacher_val"  # KITTI result files, one per frame
    teacher_metrics: str = "metrics/teacher_val.json"
    teacher_breakdown: str = "metrics/teacher_val_breakdown.json"  # where it errs (evaluation/breakdown.py)
    student_predictions: str = "outputs/student_val"
    student_metrics: str = "metrics/student_val.json"
    student_breakdown: str = "metrics/student_val_breakdown.json"


@dataclass(frozen=True)
class Params:
    """The whole params file; ``source`` is the file it was read from (``None``: built from a mapping)."""

    data: DataSettings = DataSettings()
    grid: Any = None  # the ``grid`` mapping as written; AnchorGrid.from_params(params.grid, params.source)
    teacher: TeacherSettings = TeacherSettings()
    cache: CacheSettings = CacheSettings()
    student: StudentSettings = StudentSettings()
    distill: DistillSettings = DistillSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    source: Path | None = None


def parse_params(params: Any, path: str | Path | None = None) -> Params:
    """``params`` (the parsed YAML mapping of ``path``) checked and built into :class:`Params`."""
    if not isinstance(params, Mapping):
        raise InputError("expected a mapping of sections at the top level", path)
    unknown = sorted(str(key) for key in set(params) - set(SECTIONS))
    if unknown:
        raise InputError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}", path)
    built = load_settings(Params, params, "", path)
    return dataclasses.replace(built, source=None if path is None else Path(path))


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading booleans as YAML 1.2 does: only ``true`` / ``false``.

    DVC writes params files with ruamel (YAML 1.2), so ``dvc exp run -S distill.xgd.mode=off`` leaves a bare
    ``mode: off``; YAML 1.1 (PyYAML's default) would read that as ``False``.
    """


ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_params_yaml(text: str) -> Any:
    """A params file's YAML text as plain data (:class:`ParamsLoader`)."""
    return yaml.load(text, Loader=ParamsLoader)  # noqa: S506 - a SafeLoader subclass


def load_params(path: str | Path = "params.yaml") -> Params:
    """Parse ``path`` (errors with line numbers) and build it (:func:`parse_params`)."""
    path = Path(path)
    try:
        params = read_params_yaml(path.read_text())
    except FileNotFoundError:
        raise InputError("params file is missing", path) from None
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        raise InputError(f"not valid YAML: {err}", path, None if line is None else line + 1) from None
    return parse_params(params, path)
