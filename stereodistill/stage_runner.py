"""Running a DVC stage script: user errors become one line on stderr and exit status 1."""

from __future__ import annotations

import sys
from collections.abc import Callable

from stereodistill.errors import StereoDistillError
from stereodistill.files import disk_full_message, is_disk_full


def run_stage(main: Callable[[], None]) -> None:
    try:
        main()
    except StereoDistillError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        if not is_disk_full(err):
            raise
        print(f"error: {disk_full_message(err)}", file=sys.stderr)
        sys.exit(1)
