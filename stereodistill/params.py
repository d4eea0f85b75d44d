"""Reading ``params.yaml``, the single source of truth for every tunable.

Stages and CLI commands call :func:`load_params` and pick their own section; nothing reads a setting
that is not in the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stereodistill.errors import InputError

SECTIONS = ("data", "grid", "teacher", "cache", "student", "distill", "evaluate")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Parse ``path`` and check its top level is a mapping of known sections."""
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
