"""The run directory: resolved recipe, metrics, events, decay norms and resumable state.

    RUN/recipe.yaml     the fully resolved recipe (every default filled in)
    RUN/metrics.jsonl   one line per logged step and per evaluation
    RUN/events.jsonl    selections, releases, replacements, suppressed releases, prunings
    RUN/norms.jsonl     joint norm of every decaying structure, every step of the decay phase
                        (every k-th step when the phase is long: at most ~200 lines)
    RUN/state.pt        resumable state (model, optimizer, scheduler, DPM, RNG, data position)

State is written atomically (temporary file + rename), so kill -9 at any moment leaves either the
previous state or the new one. On resume the logs are cut back to the resumed step, so that a
resumed run's logs equal an uninterrupted run's.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import write_atomically
from ..errors import CheckpointError, InputError


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.recipe = self.path / "recipe.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.events = self.path / "events.jsonl"
        self.norms = self.path / "norms.jsonl"
        self.state = self.path / "state.pt"

    def check(self, *, resume: bool, force: bool) -> None:
        """Fail early, changing nothing, when the folder cannot be used as asked."""
        if resume and not self.state.is_file():
            raise InputError(f"{self.path}: no resumable state (state.pt) to resume from; "
                             "run without --resume to start a new run")
        if not resume and not force and self.path.exists() and any(self.path.iterdir()):
            raise InputError(f"{self.path} already holds a run: pass --resume to continue it, "
                             "--force to start over, or choose another --run-dir")
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path}: run directory is a file; choose another --run-dir")

    def prepare(self, *, resume: bool, force: bool, recipe_text: str) -> None:
        """Create the folder for a new run, or check it holds a run to resume. Idempotent."""
        if getattr(self, "_prepared", False):
            return
        self._prepared = True
        if resume:
            if not self.state.is_file():
                raise InputError(f"{self.path}: no resumable state (state.pt) to resume from; "
                                 "run without --resume to start a new run")
            if self.recipe.is_file() and self.recipe.read_text() != recipe_text:
                raise InputError(f"{self.path}: the recipe differs from the one this run started with; "
                                 "resume with the same recipe and overrides")
            return
        if self.path.exists() and any(self.path.iterdir()):
            if not force:
                raise InputError(f"{self.path} already holds a run: pass --resume to continue it, "
                                 "--force to start over, or choose another --run-dir")
            shutil.rmtree(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"{self.path}: cannot create the run directory ({err.strerror})") from err
        self.write_text(self.recipe, recipe_text)

    def write_text(self, path: Path, text: str) -> None:
        write_atomically(path, lambda tmp: tmp.write_text(text))

    def append(self, path: Path, record: dict[str, Any]) -> None:
        with path.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def save_state(self, state: dict[str, Any]) -> None:
        write_atomically(self.state, lambda tmp: torch.save(state, tmp))

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
                        if line.strip() and json.loads(line).get("step", 0) <= step]
                self.write_text(path, "".join(line + "\n" for line in kept))
