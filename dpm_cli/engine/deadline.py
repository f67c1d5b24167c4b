"""A time limit and a heartbeat for torch-pruning's graph building, which can run for minutes.

torch-pruning offers no callback inside its tracing and grouping, so the clock interrupts it from
outside without a thread: in the main thread an interval timer (SIGALRM) raises in whatever Python
code is running, and fires again every second after the limit (torch-pruning's trace retries a failed
forward inside a bare `except:`, so one interruption is not enough). Elsewhere (a worker thread, where
signals cannot be used) a profile hook counts calls and checks the clock every few thousand. The same
tick reports progress every `every_s` seconds, so a long build is never silent.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, Callable

from ..errors import GraphTimeoutError

Progress = Callable[[str], None]


class Deadline:
    """`with Deadline(300, "building ...", progress):` raises GraphTimeoutError after 300 s."""

    CHECK_EVERY_CALLS = 4096

    def __init__(self, limit_s: float | None, what: str, progress: Progress | None = None,
                 every_s: float = 10.0, hint: str = ""):
        self.limit_s, self.what, self.progress, self.every_s, self.hint = limit_s, what, progress, every_s, hint
        self.status = ""  # what the guarded code is doing now, shown in progress lines
        self._start = self._next_report = 0.0
        self._calls = 0
        self._expired = False
        self._saved: tuple[Any, Any] | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def __enter__(self) -> "Deadline":
        self._start = time.monotonic()
        self._next_report = self._start + self.every_s
        if threading.current_thread() is threading.main_thread():
            handler = signal.signal(signal.SIGALRM, self._on_alarm)
            self._saved = (handler, signal.setitimer(signal.ITIMER_REAL, 1.0, 1.0))
        else:
            sys.setprofile(self._on_call)
        return self

    def __exit__(self, *_: Any) -> bool:
        if self._saved is not None:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
            handler, (delay, interval) = self._saved
            signal.signal(signal.SIGALRM, handler)
            if delay:  # give the caller's own timer back what is left of it
                signal.setitimer(signal.ITIMER_REAL, max(delay - self.elapsed, 1e-3), interval)
        else:
            sys.setprofile(None)
        return False

    def _on_alarm(self, *_: Any) -> None:
        self._tick()

    def _on_call(self, _frame: Any, event: str, _arg: Any) -> None:
        if event == "call":
            self._calls += 1
            if self._calls % self.CHECK_EVERY_CALLS == 0:
                self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        if self.limit_s is not None and now - self._start > self.limit_s:
            self._expired = True
            raise GraphTimeoutError(
                f"{self.what} did not finish within {self.limit_s:g} s ({self.status or 'started'}); "
                f"raise graph_timeout_s (recipe: pruning.graph_timeout_s) to wait longer{self.hint}")
        if self.progress is not None and now >= self._next_report:
            self._next_report = now + self.every_s
            self.progress(f"{self.what}: {now - self._start:.0f} s" + (f", {self.status}" if self.status else ""))
