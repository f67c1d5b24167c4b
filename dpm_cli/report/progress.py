"""A Rich progress bar on stderr for evaluations over long data, when asked for (a terminal, no --json
or --markdown). Elsewhere (a CI log) an evaluation that runs past half a minute says how far it is, a
plain line on stderr every half minute: a short one prints nothing, and stdout stays machine-readable."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LINE_EVERY_S = 30.0


@contextmanager
def sample_progress(total: int, description: str, *, enabled: bool,
                    lines: bool = False) -> Iterator[Callable[[int], None]]:
    """Yield `advance(samples_done)`; draws a transient bar of samples when `enabled`, else with `lines`
    prints where it is every LINE_EVERY_S seconds."""
    if not enabled:
        yield _lines(total, description) if lines else (lambda done: None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


def _lines(total: int, description: str) -> Callable[[int], None]:
    start = last = time.monotonic()

    def advance(done: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= LINE_EVERY_S and done < total:
            last = now
            print(f"{description}: {done:,} of {total:,} samples ({now - start:.0f} s)", file=sys.stderr, flush=True)
    return advance
