"""What the user sees while a run goes: a Rich progress bar on a terminal, plain log lines otherwise.

Everything goes to stderr, so that `--json` output on stdout stays machine-readable.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter(Protocol):
    def start(self, total: int, description: str, done: int = 0) -> None: ...
    def update(self, step: int, fields: dict[str, Any]) -> None: ...
    def log(self, message: str) -> None: ...
    def stop(self) -> None: ...


def refresh(reporter: Reporter, step: int, fields: dict[str, Any]) -> None:
    """Redraw a live display with new fields (an eval that finished after the step's log line).
    Line-based reporters have already printed the eval and need nothing."""
    if isinstance(reporter, RichReporter):
        reporter.update(step, fields)


def format_fields(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)


class RichReporter:
    """A live bar: step, loss, accuracy, MACs kept, structures decaying / released / pruned."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task = None

    def start(self, total: int, description: str, done: int = 0) -> None:
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                  console=self.console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=done, info="")

    def update(self, step: int, fields: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=format_fields(fields))

    def log(self, message: str) -> None:
        (self._progress.console if self._progress else self.console).print(message, highlight=False)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class PlainReporter:
    """One line per logged step, for CI logs and pipes."""

    def __init__(self, stream: Any = None, every_seconds: float = 0.0):
        self.stream = stream or sys.stderr
        self.every_seconds = every_seconds
        self._total, self._last, self._desc = 0, 0.0, ""

    def start(self, total: int, description: str, done: int = 0) -> None:
        self._total, self._desc = total, description
        self.log(f"{description}: {total} steps" + (f", resuming at step {done}" if done else ""))

    def update(self, step: int, fields: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_seconds or step == self._total:
            self._last = now
            self.log(f"[{self._desc}] step {step}/{self._total}  {format_fields(fields)}")

    def log(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def stop(self) -> None:
        return None


class SilentReporter:
    def start(self, total: int, description: str, done: int = 0) -> None: ...
    def update(self, step: int, fields: dict[str, Any]) -> None: ...
    def log(self, message: str) -> None: ...
    def stop(self) -> None: ...


def make_reporter(quiet: bool = False) -> Reporter:
    if quiet:
        return SilentReporter()
    return RichReporter() if sys.stderr.isatty() else PlainReporter()
