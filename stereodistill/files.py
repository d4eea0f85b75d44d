"""Writing outputs safely: the temporary files of writers that died, and disk-full errors.

Outputs are written to a hidden temporary name and renamed into place (``.OUT.tmp-<pid>``), so a killed writer never
leaves something a reader or DVC could take as complete; what it does leave is removed by the next writer.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def temp_path(out_path: Path) -> Path:
    """This process's temporary name for ``out_path`` (same directory, so the final rename is atomic)."""
    return out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")


def remove_stale_temp_files(out_path: Path) -> list[Path]:
    """Delete ``.OUT.tmp-<pid>`` files beside ``out_path`` whose writer is no longer running; return them."""
    removed = []
    for path in out_path.parent.glob(f".{out_path.name}.tmp-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def is_disk_full(err: BaseException) -> bool:
    """An ``OSError`` saying the device, the quota or the file-size limit is exhausted."""
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS


def disk_full_message(err: OSError) -> str:
    """One line for a disk-full ``OSError``: the file, the reason, and that the output was not finished."""
    where = f"{err.filename}: " if err.filename else ""
    return (
        f"{where}{err.strerror or err} — the output was not finished; free space and rerun the same command"
    )
