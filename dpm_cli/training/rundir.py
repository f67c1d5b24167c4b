"""The run directory: resolved recipe, metrics, events, decay norms and resumable state.

    RUN/recipe.yaml     the fully resolved recipe (every default filled in)
    RUN/metrics.jsonl   one line per logged step and per evaluation
    RUN/events.jsonl    selections, releases, replacements, suppressed releases, prunings
    RUN/norms.jsonl     joint norm of every decaying structure, every step of the decay phase
                        (every k-th step when the phase is long: at most ~200 lines)
    RUN/state.pt        resumable state (model, optimizer, scheduler, DPM, RNG, data position)
    RUN/.dpm-run        marks the folder as a dpm run directory (JSON: dpm version, creation time)
    RUN/.dpm-lock       the OS lock one run holds while it runs (it records the holder's pid)

Safety: `--force` replaces only a folder dpm marked as its run directory, and in it only dpm's own
files (those above, dense.pt, summary.json, and outputs its `.dpm-outputs.json` record lists); any
other folder is refused, as is one holding an input of the run. One process at a time holds the lock.

State is written atomically (temporary file + rename), so kill -9 at any moment leaves either the
previous state or the new one. On resume the logs are cut back to the resumed step, so that a
resumed run's logs equal an uninterrupted run's.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import __version__, owned
from ..checkpoint import write_atomically
from ..errors import CheckpointError, InputError
from ..escaping import printable
from ..filelock import RunLock
from ..outputs import inside_input_folder
from .resume import recipe_changes

MARKER = ".dpm-run"
LOCK = ".dpm-lock"
_HEADER = "# dpm recipe, fully resolved"  # dump_recipe's first line: how run folders without a marker are recognised


class RunDir:
    OWN = ("recipe.yaml", "metrics.jsonl", "events.jsonl", "norms.jsonl", "state.pt", "state.pending.pt", "dense.pt",
           "summary.json", "provenance.json")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.recipe = self.path / "recipe.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.events = self.path / "events.jsonl"
        self.norms = self.path / "norms.jsonl"
        self.state = self.path / "state.pt"
        self.pending = self.path / "state.pending.pt"  # a periodic state awaiting the next step's loss
        self.marker = self.path / MARKER
        self.changes: list[str] = []  # recipe keys a resume changed, e.g. "training.optimizer.lr 1e6 -> 0.01"
        self._lock = RunLock(self.path / LOCK, str(self.path), "choose another --run-dir")
        self._prepared = False
        self._new = False  # prepared for a new run (not a resume) by this process

    @property
    def name(self) -> str:
        return printable(self.path)

    def is_run(self) -> bool:
        """A folder dpm made: it has the marker, or (older dpm) a resolved recipe beside a run's files."""
        if self.marker.is_file():
            return True
        try:
            head = self.recipe.read_text(encoding="utf-8", errors="replace")[: len(_HEADER)] if self.recipe.is_file() else ""
        except OSError:
            return False
        return head == _HEADER and (self.state.is_file() or self.metrics.is_file())

    def _occupied(self) -> bool:
        # Lock files (this run's and an output base's) say nothing about what the folder holds.
        return self.path.is_dir() and any(not p.name.endswith(LOCK) for p in self.path.iterdir())

    def check(self, *, resume: bool, force: bool, inputs: Sequence[str | Path | None] = ()) -> None:
        """Fail early, changing nothing (but taking the lock of an existing run), when the folder cannot be used."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.name}: run directory is a file; choose another --run-dir")
        holder = inside_input_folder(self.path, [Path(p) for p in inputs if p is not None])
        if holder is not None:
            raise InputError(f"{self.name} is inside {printable(holder)}, an input folder: dpm never writes into its "
                             "inputs (the folder's provenance hash would change with it); choose a --run-dir outside it")
        if resume:
            if not self.is_run():
                raise InputError(f"{self.name}: no resumable state (no dpm run here); "
                                 "run without --resume to start a new run")
            self._lock.acquire()
            return
        if not self._occupied():
            return
        if not self.is_run():
            raise InputError(f"{self.name} is not a dpm run directory: choose a new or empty one "
                             "(dpm never deletes files it did not write, even with --force)")
        if not force:
            raise InputError(f"{self.name} already holds a run: pass --resume to continue it, "
                             "--force to start over, or choose another --run-dir")
        inside = self._inputs_inside(inputs)
        if inside:
            raise InputError(f"{self.name} holds {printable(inside)}, an input of this run; --force would start "
                             "over there: choose another --run-dir")
        self._lock.acquire()

    def _inputs_inside(self, inputs: Sequence[str | Path | None]) -> Path | None:
        root = self.path.resolve()
        for item in inputs:
            if item is None:
                continue
            path = Path(item).resolve()
            if path == root or root in path.parents:
                return Path(item)
        return None

    def prepare(self, *, resume: bool, force: bool, recipe_text: str,
                inputs: Sequence[str | Path | None] = ()) -> None:
        """Create (or clear) the folder for a new run, or check it holds a run to resume. Idempotent.

        Holds the run's lock from here on; `release()` (or the process's end) lets go of it."""
        if self._prepared:
            return
        self._prepared = True
        if resume:
            self.check(resume=True, force=False)
            if self.recipe.is_file():
                self.changes = recipe_changes(self.recipe.read_text(encoding="utf-8", errors="replace"),
                                              recipe_text, self.name)
                if self.changes:
                    self.write_text(self.recipe, recipe_text)
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"{self.name}: cannot create the run directory ({err.strerror})") from err
        if self._occupied():  # checked again under the lock: another process may have got here first
            self.check(resume=False, force=force, inputs=inputs)
        self._lock.acquire()
        if self._occupied():
            self._clear()
        stamp = {"dpm": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.write_text(self.marker, json.dumps(stamp) + "\n")
        self.write_text(self.recipe, recipe_text)
        self._new = True

    def discard_unstarted(self) -> None:
        """Undo `prepare` for a new run refused before it wrote anything of its own (the preflight, a
        decay phase longer than training, heads a folder cannot record: refusals that need the built
        pruner). Its marker and recipe alone would make the next run here need --force. A run that
        wrote logs, state or a dense model keeps everything."""
        written_first = ("recipe.yaml", "provenance.json")
        if not self._new or any((self.path / name).exists() for name in self.OWN if name not in written_first):
            return
        for name in written_first:
            (self.path / name).unlink(missing_ok=True)
        self.marker.unlink(missing_ok=True)
        self._new = False

    def _clear(self) -> None:
        """Delete dpm's own files (and the temporary files of interrupted writes), nothing else."""
        for name in self.OWN + (MARKER,):
            (self.path / name).unlink(missing_ok=True)
        for name in self.OWN + (MARKER, owned.RECORD):
            for tmp in self.path.glob(f".{name}.tmp.*"):
                tmp.unlink(missing_ok=True)
        owned.remove_owned(self.path)

    def release(self) -> None:
        self._lock.release()

    def write_text(self, path: Path, text: str) -> None:
        write_atomically(path, lambda tmp: tmp.write_text(text))

    def append(self, path: Path, record: dict[str, Any]) -> None:
        with path.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def save_state(self, state: dict[str, Any]) -> None:
        write_atomically(self.state, lambda tmp: torch.save(state, tmp))

    def save_pending(self, state: dict[str, Any]) -> None:
        write_atomically(self.pending, lambda tmp: torch.save(state, tmp))

    def promote_pending(self) -> None:
        if self.pending.is_file():
            self.pending.replace(self.state)

    def discard_pending(self) -> None:
        self.pending.unlink(missing_ok=True)

    def save_state_file(self, path: Path, obj: Any) -> None:
        write_atomically(path, lambda tmp: torch.save(obj, tmp))

    def load_state(self) -> dict[str, Any]:
        try:
            return torch.load(self.state, map_location="cpu", weights_only=True)
        except Exception as err:  # a torn or foreign file
            raise CheckpointError(f"{self.state}: cannot read the resumable state ({err}); "
                                  "start over with --force") from err

    def truncate_logs(self, step: int) -> None:
        """Drop log lines written after `step` (they will be written again)."""
        for path in (self.metrics, self.events, self.norms):
            if path.is_file():
                kept = [line for line in path.read_text().splitlines()
                        if line.strip() and _kept(json.loads(line), step)]
                self.write_text(path, "".join(line + "\n" for line in kept))


def _kept(record: dict[str, Any], step: int) -> bool:
    # Dense pre-training's evals are not redone on resume (its model is cached): keep them.
    return record.get("phase") == "pretrain" or record.get("step", 0) <= step
