"""The `dpm` Typer application and its error handling.

Exit codes: 0 success, 1 runtime failure (or a failed `dpm check` gate), 2 bad input, 130 Ctrl-C,
143 SIGTERM.
Each command lives in its own module and registers itself on `app` below.
"""
from __future__ import annotations

import errno
import signal
import sys
import traceback

import typer

from ..errors import DpmError
from ..escaping import printable
from ..termination import EXIT_CODE as TERMINATED_EXIT, graceful_stop, received

app = typer.Typer(
    name="dpm",
    help=(
        "Decay Pruning Method: make a trained PyTorch model smaller and faster by letting redundant "
        "channels fade to zero during fine-tuning, then removing them.\n\n"
        "Exit codes: 0 success, 1 runtime failure or failed gate, 2 bad input, 130 Ctrl-C, 143 SIGTERM."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}
_STOPPED = {True: "terminated (SIGTERM)", False: "interrupted"}
# What a stopped command leaves: `dpm prune` keeps a run's state to resume, `dpm train` an unfinished run
# directory; every other command writes its outputs whole (atomically) or not at all.
_KEPT = {"prune": {True: "a dpm prune run keeps the state of its last finished step; continue it with the same "
                         "command and --resume",
                   False: "a dpm prune run keeps its state; continue it with the same command and --resume"},
         "train": dict.fromkeys((True, False), "dpm train wrote no model; start it again with --force (which "
                                               "replaces only dpm's files in the run directory)")}
_NOTHING_KEPT = "dpm {command} stopped; it writes files only whole, so none was left half-written"


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = debug


def _register_commands() -> None:
    # Imported here so that `dpm --help` stays fast and a broken optional command cannot
    # take the others down at import time.
    from . import commands  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turn dpm errors into one line and an exit code."""
    _register_commands()
    args = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in args
    command = next((str(a) for a in args if not str(a).startswith("-")), "")
    try:
        with graceful_stop():  # Ctrl-C, a CI timeout or docker stop: the step finishes, its state is kept
            code = app(args=argv, standalone_mode=False)
    except _click_errors("ClickException") as err:  # bad options or arguments: click's own message, exit 2
        err.show()
        raise SystemExit(2)
    except _click_errors("Abort"):  # click turns Ctrl-C (KeyboardInterrupt) into Abort
        _stopped(command)
    except DpmError as err:
        if debug:
            traceback.print_exc()
        # One line, whatever user text the message echoes (newlines, escape sequences are escaped).
        typer.secho(f"error: {printable(str(err), 2000)}", fg=typer.colors.RED, err=True)
        raise SystemExit(err.exit_code)
    except KeyboardInterrupt:
        _stopped(command)
    except SystemExit:
        raise
    except Exception as err:  # a bug or a torch failure: still one line unless --debug
        if debug:
            traceback.print_exc()
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):  # a log line's append
            typer.secho(f"error: no space left on device ({printable(str(err.filename or err), 500)}): free some "
                        "space or write elsewhere (--run-dir, -o); a dpm prune run keeps its last saved state for "
                        "--resume", fg=typer.colors.RED, err=True)
            raise SystemExit(1)
        typer.secho(f"error: {type(err).__name__}: {printable(str(err), 2000)} (rerun with --debug for the traceback)",
                    fg=typer.colors.RED, err=True)
        raise SystemExit(1)
    if code == 130:  # Typer turns Ctrl-C (KeyboardInterrupt) into Exit(130), which returns 130 here
        _stopped(command)
    if isinstance(code, int) and code:  # typer.Exit(code) returns its code when not standalone
        raise SystemExit(code)


def _stopped(command: str) -> None:
    """Ctrl-C (exit 130) or SIGTERM (exit 143), in one line that says what the stopped command left."""
    by_sigterm = received() == signal.SIGTERM
    kept = _KEPT.get(command, {}).get(by_sigterm) or _NOTHING_KEPT.format(command=printable(command or "", 40))
    typer.secho(f"{_STOPPED[by_sigterm]}: {kept}", err=True)
    raise SystemExit(TERMINATED_EXIT if by_sigterm else 130)


def _click_errors(name: str) -> tuple[type[BaseException], ...]:
    """Click's exception `name` from the click Typer bundles (typer._click) and the standalone one."""
    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)
