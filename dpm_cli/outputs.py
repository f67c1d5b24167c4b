"""Writing the compact model: a module for torch.load, a pickle-free artifact, a torch.export program.

All outputs are checked before any training starts (exists without --force, folder writable, would
overwrite the input) and written atomically at the end. `--force` overwrites only files dpm wrote
(see `dpm_cli.owned`), never an input; a lock beside the outputs keeps two runs from writing them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import os

from . import owned
from .artifact import Provenance, make_artifact
from .checkpoint import atomic_save, write_atomically
from .errors import CheckpointError, InputError
from .escaping import printable
from .filelock import RunLock

SUFFIXES = {"module": ".pt", "artifact": ".dpm.pt", "export": ".pt2"}


@dataclass
class OutputPlan:
    base: Path  # e.g. runs/demo/model -> model.pt, model.dpm.pt, model.pt2
    formats: list[str]
    force: bool = False
    _lock: RunLock | None = field(default=None, repr=False, compare=False)

    hf: bool = False  # also a Hugging Face folder, BASE-hf/

    def path(self, fmt: str) -> Path:
        return self.base.with_name(self.base.name + SUFFIXES[fmt])

    def hf_path(self) -> Path:
        return self.base.with_name(self.base.name + "-hf")

    def check(self, inputs: list[Path]) -> None:
        """Fail before any work when an output cannot or must not be written."""
        _check_folder(self.base.parent)
        resolved_inputs = {p.resolve() for p in inputs if p is not None}
        holder = inside_input_folder(self.base.parent, inputs)
        if holder is not None:
            raise InputError(f"{printable(self.base)} is inside {printable(holder)}, an input folder: dpm never writes "
                             "into its inputs (the folder's provenance hash would change with it); choose an --output (or a "
                             "--run-dir, which holds the outputs by default) outside it")
        for fmt in self.formats:
            path = self.path(fmt)
            shown = printable(path)
            if path.resolve() in resolved_inputs:
                raise InputError(f"{shown} is the input checkpoint; dpm never overwrites its input: choose another --output")
            if path.is_dir():
                raise InputError(f"{shown} is a folder; choose another --output")
            if path.exists() or path.is_symlink():
                if not self.force:
                    raise InputError(f"{shown} exists: choose another --output or pass --force to overwrite it")
                if not owned.wrote(path):
                    raise InputError(f"{shown} exists and dpm did not write it (or it changed since): dpm never "
                                     "overwrites such a file, even with --force; move it or choose another --output")
        if self.hf:
            self._check_hf_folder(resolved_inputs)

    def _check_hf_folder(self, resolved_inputs: set[Path]) -> None:
        """BASE-hf/ is replaced whole, so only one that dpm wrote (its config.json is in dpm's record)."""
        folder, shown = self.hf_path(), printable(self.hf_path())
        if folder.resolve() in resolved_inputs or any(folder.resolve() in p.parents for p in resolved_inputs):
            raise InputError(f"{shown} holds an input; dpm never overwrites its input: choose another --output")
        if folder.exists() or folder.is_symlink():
            if not self.force:
                raise InputError(f"{shown} exists: choose another --output or pass --force to overwrite it")
            if not folder.is_dir() or not owned.wrote(folder / "config.json"):
                raise InputError(f"{shown} exists and dpm did not write it (or it changed since): dpm never "
                                 "replaces such a folder, even with --force; move it or choose another --output")

    def lock(self) -> None:
        """Create the output folder and hold a lock on this output base until `release()`."""
        folder = self.base.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"{printable(folder)}: cannot create the output folder ({err.strerror})") from None
        if self._lock is None:
            self._lock = RunLock(folder / f".{self.base.name}.dpm-lock", f"output {self.base}",
                                 "choose another --output")
        self._lock.acquire()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()


def inside_input_folder(path: Path, inputs: list[Path]) -> Path | None:
    """The input folder (a Hugging Face model's) that `path` is or lies in, or None."""
    where = path.resolve()
    for item in inputs:
        if item is not None and Path(item).is_dir():
            folder = Path(item).resolve()
            if where == folder or folder in where.parents:
                return Path(item)
    return None


def _check_folder(folder: Path) -> None:
    """The folder exists and is writable, or can be created: its nearest existing parent is a writable folder."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{printable(probe)}: output location is not a folder; choose another --output")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{printable(probe)}: output folder is not writable; choose another --output")


def unpicklable(model: nn.Module) -> str | None:
    """The first module torch.save cannot pickle, or None: torch refuses parametrized modules (Wav2Vec2's
    and HuBERT's positional convolution is weight_norm'ed). Their state_dict saves, so the artifact, the
    .pt2 program and a Hugging Face folder hold such a model; the pickled module (`module`) cannot."""
    from torch.nn.utils import parametrize

    return next((name for name, m in model.named_modules() if parametrize.is_parametrized(m)), None)


MODULE_SKIPPED = ("the pickled module (output.formats: module) is not written: torch cannot pickle {name}, a "
                  "parametrized module (weight_norm); the other formats hold the model")


@dataclass
class Written:
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def write_outputs(model: nn.Module, example_inputs: Any, plan: OutputPlan,
                  provenance: Provenance | None, metadata: dict[str, Any]) -> Written:
    plan.check([])  # again: during a long run someone may have put their own file there
    plan.base.parent.mkdir(parents=True, exist_ok=True)
    written = Written()
    model = model.eval()
    for fmt in plan.formats:
        path = plan.path(fmt)
        if fmt == "module":
            name = unpicklable(model)
            if name is not None:
                written.notes.append(MODULE_SKIPPED.format(name=name))
                continue
            atomic_save(model, path, force=plan.force)
        elif fmt == "artifact":
            if provenance is None and _is_hf(model):  # the reason is a note from loading the model
                written.notes.append("artifact not written: this Hugging Face model cannot be rebuilt from "
                                     "its config (see the note above); a .pt2 program (output.formats: export) "
                                     "holds it without pickle")
                continue
            if provenance is None:
                written.notes.append("artifact not written: the model came from a pickled module, so dpm "
                                     "knows no factory to rebuild it from; give model.factory with a state_dict")
                continue
            atomic_save(make_artifact(model, provenance, metadata), path, force=plan.force)
        elif fmt == "export":
            note = _write_export(model, example_inputs, path, plan.force)
            if note:
                written.notes.append(note)
                continue
        written.files[fmt] = str(path)
    owned.record([Path(p) for p in written.files.values()])  # so that a later --force may replace them
    return written


def _is_hf(model: nn.Module) -> bool:
    return hasattr(model, "save_pretrained") and hasattr(getattr(model, "config", None), "to_dict")


def _write_export(model: nn.Module, example_inputs: Any, path: Path, force: bool) -> str | None:
    if path.exists() and not force:
        raise CheckpointError(f"{path} exists: choose another output or pass --force to overwrite it")
    # Export with a dynamic batch dimension; an example batch of 2 keeps it from specialising to 1.
    try:
        if not torch.is_tensor(example_inputs):  # keyword or several inputs: exported as given
            args, kwargs = ((), example_inputs) if isinstance(example_inputs, dict) else (tuple(example_inputs), {})
            program = torch.export.export(model, args, kwargs=kwargs)
            write_atomically(path, lambda tmp: torch.export.save(program, str(tmp)))
            return None
    except Exception as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        return f"torch.export program not written: the model does not export ({first})"
    example = example_inputs[:1].repeat(2, *([1] * (example_inputs.dim() - 1)))
    try:
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        except Exception:  # some models pin the batch size (e.g. a reshape to a fixed size)
            program = torch.export.export(model, (example_inputs,))
    except Exception as err:  # export support varies by model and torch version
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        return f"torch.export program not written: the model does not export ({first})"
    write_atomically(path, lambda tmp: torch.export.save(program, str(tmp)))
    return None
