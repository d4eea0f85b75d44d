"""Errors raised on bad user input.

Every error names what is wrong and where (file, line, frame or field), so the CLI can print it and
exit non-zero without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class StereoDistillError(Exception):
    """Base class for errors the CLI reports as a one-line message with a non-zero exit."""


class InputError(StereoDistillError):
    """A user-supplied file or value is malformed.

    The message is formatted as ``"{path}:{line}: {message}"`` (line omitted when unknown), the
    convention compilers use, so editors can jump to the spot.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.line = line
        self.reason = message
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class OutputError(StereoDistillError):
    """Writing an output failed (a full disk, a quota); the message says what was kept and how to go on."""

    def __init__(self, message: str, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {message}")


def read_text_file(path: Path, kind: str) -> str:
    """The text of a user-supplied file; ``InputError`` ("``kind`` file is missing" / "is not text") otherwise."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise InputError(f"{kind} file is missing", path) from None
    except UnicodeDecodeError:
        raise InputError(f"{kind} file is not text", path) from None
