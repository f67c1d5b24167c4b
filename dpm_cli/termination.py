"""SIGTERM (a CI timeout, `docker stop`, `timeout`, Kubernetes) and Ctrl-C stop dpm after the step.

Python dies on SIGTERM without a word: a `dpm prune` stopped that way said nothing, left its locks, and
resumed from its last periodic checkpoint (a run stopped at step 45 resumed from step 0). Ctrl-C in the
middle of a step (most of the time) kept nothing either. The CLI turns SIGTERM into `Terminated`, a
KeyboardInterrupt, so the paths that keep a run's state on Ctrl-C keep it here too. Within a training
step either signal is held until the step is done, so the state saved is that of a finished step (a
transformers step takes seconds, and the grace period before SIGKILL is 10-30 s); a second signal, or
one outside a step, stops at once. Only the CLI installs the handler, and not under
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


_state: dict[str, Any] = {"depth": 0, "pending": None, "received": None}
_SAYS = {signal.SIGINT: b"\ninterrupt: stopping after this training step (Ctrl-C again: at once)\n",
         signal.SIGTERM: b"\nSIGTERM: stopping after this training step\n"}


def received() -> int | None:
    """The last stop signal (SIGINT, SIGTERM) that came while `graceful_stop` was in force, or None:
    Typer turns every KeyboardInterrupt into exit code 130, so the CLI asks here which it was."""
    return _state["received"]


def _stop(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_signal(signum: int, frame: Any) -> None:
    _state["received"] = signum
    if _state["depth"] and _state["pending"] is None:
        _state["pending"] = signum  # the step finishes first; a second signal stops at once
        try:
            os.write(2, _SAYS[signum])  # a plain write(2): no Python buffer to re-enter
        except OSError:
            pass
        return
    raise _stop(signum)


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
    """Within this block SIGTERM raises Terminated and Ctrl-C KeyboardInterrupt, each held until the
    training step in progress is done (the CLI's main, in the main thread only). Not under torchrun:
    its agent signals every rank, and a rank that finished its step to save would leave the others
    waiting in a collective until the agent's SIGKILL."""
    if threading.current_thread() is not threading.main_thread() or os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
        yield
        return
    # a signal the process was started ignoring (nohup, a script's background job) stays ignored
    previous = {s: signal.signal(s, _on_signal) for s in _SAYS if signal.getsignal(s) is not signal.SIG_IGN}
    _state["received"] = None
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.update(depth=0, pending=None)  # `received` stays readable after the block


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold a stop signal that arrives within this block (training steps) until `stop_if_asked()`."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    if not _state["depth"]:
        stop_if_asked()  # it came during the last step


def stop_if_asked() -> None:
    """Raise Terminated or KeyboardInterrupt if a held signal came (between two training steps)."""
    if (signum := _state["pending"]) is not None:
        _state["pending"] = None
        raise _stop(signum)
