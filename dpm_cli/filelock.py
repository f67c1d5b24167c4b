"""One process per run directory (and per output base): an advisory OS lock held for the whole run.

`fcntl.flock` is released by the kernel when its holder dies, so a lock left by a killed run never
blocks `--resume`; the lock file itself stays (it only records the last holder's pid, for messages).
Without fcntl (Windows) runs are not locked.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError
from .escaping import printable

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """An exclusive, non-blocking lock on `path` (created if missing); `what` names it in messages."""

    def __init__(self, path: Path, what: str, fix: str) -> None:
        self.path, self.what, self.fix = Path(path), what, fix
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None or fcntl is None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise InputError(f"{printable(self.path)}: cannot create the lock file ({err.strerror}); "
                             f"{self.fix}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "a process whose pid is unknown"
            raise InputError(f"{printable(self.what)} is in use by another dpm run ({who}); wait for it to "
                             f"finish or {self.fix}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
