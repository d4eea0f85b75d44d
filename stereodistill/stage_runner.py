"""Running a DVC stage script: user errors become one line on stderr and exit status 1."""

from __future__ import annotations

import sys
from collections.abc import Callable

from stereodistill.errors import StereoDistillError


def run_stage(main: Callable[[], None]) -> None:
    try:
        main()
    except StereoDistillError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
