"""A Rich progress bar on stderr for evaluations over long data; off when not asked for (--json,
--markdown, or stderr not a terminal), so CI logs and machine-readable output stay clean."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def sample_progress(total: int, description: str, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield `advance(samples_done)`; draws a transient bar of samples when `enabled`."""
    if not enabled:
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)
