"""The one loader of settings: a frozen dataclass built from a YAML mapping through its type hints.

Each settings class declares its fields once (name, type hint, default). :func:`load_settings` checks a mapping
against them, naming the dotted key of the first problem:

- unknown keys: ``unknown field(s) student.train.epochz``;
- wrong types: ``student.train.lr: expected a number, got '1e-3' (str)`` (with a hint for YAML's ``1e-3``);
- lists become tuples for tuple fields (``tuple[float, float]`` checks the length), mappings become nested
  settings classes (``null`` for a nested class: its defaults), ``X | None`` takes ``null``, ``dict[str, X]``
  and unions are checked item by item.

Value checks (ranges, choices) live in each class's ``__post_init__`` and call :func:`fail` with the field's
name; the loader turns that into an :class:`~stereodistill.errors.InputError` naming the dotted key and the file
read. :func:`to_dict` is the inverse: field order, tuples as lists, nested classes as plain dicts (a field marked
:data:`OMIT_AT_DEFAULT` is left out while at its default).

Values are kept as YAML gives them (an integer in a float field stays an integer), so a dict saved in a
checkpoint is the one the file describes. Imports no torch: every stage reads its settings before any work.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from stereodistill.errors import InputError, StereoDistillError

T = TypeVar("T")

# Field metadata: to_dict() leaves the field out while it is at its default (a field added after the first
# checkpoints were written, so dicts stored before it existed still compare equal).
OMIT_AT_DEFAULT = {"omit_at_default": True}


class SettingsError(StereoDistillError):
    """A settings value out of range, raised by a settings class for one of its own ``field`` s.

    It names the field only; :func:`load_settings` turns it into an ``InputError`` naming the dotted key and file.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def fail(field: str, message: str) -> NoReturn:
    """Refuse the value of ``field`` (the caller's own field name; the loader adds the section and file)."""
    raise SettingsError(field, message)


def load_settings(
    cls: type[T], data: Mapping[str, Any] | None, where: str, path: str | Path | None = None
) -> T:
    """``cls`` built from ``data`` (``None``: the defaults); errors name ``where.<key>`` and ``path``."""
    if data is None:
        data = {}
    return _build(cls, data, where, path)


def to_dict(settings: Any) -> dict[str, Any]:
    """The settings as plain data in field order: nested classes as dicts, tuples as lists."""
    return {
        f.name: _plain(getattr(settings, f.name))
        for f in dataclasses.fields(settings)
        if not (f.metadata.get("omit_at_default") and getattr(settings, f.name) == f.default)
    }


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------------------------------ building
def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type[T], data: Mapping[str, Any], where: str, path: str | Path | None) -> T:
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(str(key) for key in data if key not in names)
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(_join(where, key) for key in unknown)}", path)
    hints = _hints(cls)
    values = {key: _convert(value, hints[key], _join(where, key), path) for key, value in data.items()}
    try:
        return cls(**values)
    except SettingsError as err:
        raise InputError(f"{_join(where, err.field)}: {err.message}", path) from None


class _Mismatch(Exception):
    """A value that does not fit a type hint (internal: becomes an InputError, or tries the next union option)."""


def _convert(value: Any, hint: Any, where: str, path: str | Path | None) -> Any:
    try:
        return _fit(value, hint, where, path)
    except _Mismatch as err:
        raise InputError(str(err), path) from None


def _fit(value: Any, hint: Any, where: str, path: str | Path | None) -> Any:
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _fit_union(value, args, hint, where, path)
    if dataclasses.is_dataclass(hint):
        if value is None:
            return hint()
        if not isinstance(value, Mapping):
            raise _Mismatch(_expected(value, hint, where))
        return _build(hint, value, where, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Mismatch(_expected(value, hint, where))
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise _Mismatch(f"{where}: expected {_describe(hint)}, got {len(value)}: {list(value)!r}")
        items = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        return tuple(
            _fit(v, item, f"{where}[{i}]", path) for i, (v, item) in enumerate(zip(value, items, strict=True))
        )
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch(_expected(value, hint, where))
        return {k: _fit(v, args[1], _join(where, k), path) for k, v in value.items()}
    if hint is type(None):
        if value is not None:
            raise _Mismatch(f"{where}: expected null")
        return None
    fits = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
        bool: isinstance(value, bool),
    }
    if hint not in fits:
        raise TypeError(f"settings type {hint!r} of {where} is not supported")
    if not fits[hint]:
        raise _Mismatch(_expected(value, hint, where) + _exponent_hint(value, hint))
    return value


def _fit_union(value: Any, options: tuple[Any, ...], hint: Any, where: str, path: str | Path | None) -> Any:
    if value is None and type(None) in options:
        return None
    problems = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _fit(value, option, where, path)
        except _Mismatch as err:
            problems.append((option, str(err)))
    # The option of the value's shape (a list for a list, a mapping for a mapping) has the useful message.
    shaped = [problem for option, problem in problems if _same_shape(value, option)]
    if len(shaped) == 1:
        raise _Mismatch(shaped[0])
    raise _Mismatch(_expected(value, hint, where))


def _same_shape(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if isinstance(value, list | tuple):
        return origin is tuple
    if isinstance(value, Mapping):
        return origin is dict or dataclasses.is_dataclass(hint)
    return False


def _expected(value: Any, hint: Any, where: str) -> str:
    return f"{where}: expected {_describe(hint)}, got {value!r} ({type(value).__name__})"


def _exponent_hint(value: Any, hint: Any) -> str:
    if hint in (int, float) and isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads a number in exponent form without a decimal point as a string: write 1.0e-3, not 1e-3)"
    return ""


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def _describe(hint: Any) -> str:
    if hint in _NAMES:
        return _NAMES[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in args)
    if origin is tuple:
        count = "" if args[-1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{_PLURALS.get(args[0], _describe(args[0]))}"
    if origin is dict:
        return f"a mapping of name -> {_describe(args[1])}"
    return "a mapping"
