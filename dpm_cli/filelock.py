"""One process per run directory (and per output base): an advisory OS lock held for the whole run.

`fcntl.flock` is released by the kernel when its holder dies, so a lock left by a killed run never
blocks `--resume`; the file of a killed run stays (it only records the last holder's pid, for messages).
A run that ends removes its lock file, still holding the lock, so that no hidden `.NAME.dpm-lock` is
left beside the outputs a release step publishes. A process that locked a file just removed that way
sees that the path no longer names it and locks the path afresh (the usual lock-file protocol), so two
runs can never both believe they hold the lock. Without fcntl (Windows) runs are not locked.
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
        while True:  # again when the file we locked was removed by the run that held it before
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"pid {holder}" if holder else "a process whose pid is unknown"
                raise InputError(f"{printable(self.what)} is in use by another dpm run ({who}); wait for it to "
                                 f"finish or {self.fix}") from None
            if self._names(fd):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            if self._names(self._fd):
                self.path.unlink(missing_ok=True)  # while still holding the lock: see the module's docstring
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise InputError(f"{printable(self.path)}: cannot create the lock file ({err.strerror}); "
                             f"{self.fix}") from None

    def _names(self, fd: int) -> bool:
        """Whether self.path is still the file open as `fd`."""
        try:
            on_disk = os.stat(self.path)
        except OSError:
            return False
        mine = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
