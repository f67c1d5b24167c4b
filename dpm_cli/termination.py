"""SIGTERM, as a CI timeout, `docker stop`, `timeout` or Kubernetes sends it, stops dpm like Ctrl-C.

Python dies on SIGTERM without a word: a `dpm prune` stopped that way said nothing, left its locks, and
resumed from its last periodic checkpoint (a run stopped at step 45 resumed from step 0). The CLI
turns SIGTERM into `Terminated`, a KeyboardInterrupt, so the paths that keep a run's state on Ctrl-C
keep it here too. Within a training step the signal is held until the step is done, so the state
saved is that of a finished step (a transformers step takes seconds, and the grace period before
SIGKILL is 10-30 s); elsewhere it stops at once. Only the CLI installs the handler, and not under
torchrun: a library user's own process, and torchrun's agent, keep their own signal handling.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Iterator

EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM."""


_held = {"depth": 0, "pending": False, "received": False}


def received() -> bool:
    """Whether SIGTERM came while `sigterm_stops` was in force (Typer turns every KeyboardInterrupt
    into exit code 130, so the CLI asks here which it was)."""
    return _held["received"]


def _on_sigterm(signum: int, frame: Any) -> None:
    _held["received"] = True
    if _held["depth"] and not _held["pending"]:
        _held["pending"] = True  # the step finishes first; a second SIGTERM stops at once
        return
    raise Terminated()


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """Within this block SIGTERM raises Terminated (the CLI's main, in the main thread only). Not under
    torchrun: its agent sends SIGTERM to every rank when one fails, and a rank that stopped to save
    would leave the others waiting in a collective until the agent's SIGKILL."""
    if threading.current_thread() is not threading.main_thread() or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _held["received"] = False
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _held.update(depth=0, pending=False)  # `received` stays readable after the block


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold a SIGTERM that arrives within this block (a training step) until `stop_if_asked()`."""
    _held["depth"] += 1
    try:
        yield
    finally:
        _held["depth"] -= 1
    if not _held["depth"]:
        stop_if_asked()  # it came during the last step


def stop_if_asked() -> None:
    """Raise Terminated if a held SIGTERM came (between two training steps)."""
    if _held["pending"]:
        _held["pending"] = False
        raise Terminated()
