"""A lock file beside the store (``STORE.lock``): one writer job at a time.

Created with ``O_CREAT | O_EXCL``, holding ``host pid``. A lock left by a process that no longer runs on this
host is taken over; a lock held by a live process, or by another host, is refused with a message naming it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from stereodistill.errors import InputError
from stereodistill.files import pid_alive


def lock_path(store: str | Path) -> Path:
    store = Path(store)
    return store.with_name(store.name + ".lock")


class StoreLock:
    """Context manager holding ``STORE.lock`` for this process."""

    def __init__(self, store: str | Path) -> None:
        self.path = lock_path(store)
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._remove_if_stale()  # raises when the lock is held
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return
        raise InputError("could not take the lock (it keeps changing hands)", self.path)

    def _remove_if_stale(self) -> bool:
        """Remove a lock whose owner is dead on this host; raise if it is held. True when removed."""
        try:
            text = self.path.read_text().split()
        except FileNotFoundError:
            return True
        host, pid = (text[0], int(text[1])) if len(text) == 2 and text[1].isdigit() else ("?", -1)
        if host == socket.gethostname() and pid > 0 and not pid_alive(pid):
            self.path.unlink(missing_ok=True)
            return True
        raise InputError(
            f"another writer holds this cache (host {host}, pid {pid}); wait for it to finish, or delete "
            f"the lock file if that process is gone",
            self.path,
        )

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
