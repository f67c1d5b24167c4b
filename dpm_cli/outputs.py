"""Writing the compact model: a module for torch.load, a pickle-free artifact, a torch.export program.

All outputs are checked before any training starts (exists without --force, folder writable, would
overwrite the input) and written atomically at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .artifact import Provenance, make_artifact
from .checkpoint import atomic_save, write_atomically
from .errors import CheckpointError, InputError

SUFFIXES = {"module": ".pt", "artifact": ".dpm.pt", "export": ".pt2"}


@dataclass
class OutputPlan:
    base: Path  # e.g. runs/demo/model -> model.pt, model.dpm.pt, model.pt2
    formats: list[str]
    force: bool = False

    hf: bool = False  # also a Hugging Face folder, BASE-hf/

    def path(self, fmt: str) -> Path:
        return self.base.with_name(self.base.name + SUFFIXES[fmt])

    def hf_path(self) -> Path:
        return self.base.with_name(self.base.name + "-hf")

    def check(self, inputs: list[Path]) -> None:
        """Fail before any work when an output cannot or must not be written."""
        folder = self.base.parent
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: output location is not a folder")
        resolved_inputs = {p.resolve() for p in inputs if p is not None}
        for path in [self.path(fmt) for fmt in self.formats] + ([self.hf_path()] if self.hf else []):
            if path.resolve() in resolved_inputs:
                raise InputError(f"{path} is the input checkpoint; dpm never overwrites its input: choose another --output")
            if path.exists() and not self.force:
                raise InputError(f"{path} exists: choose another --output or pass --force to overwrite it")


@dataclass
class Written:
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def write_outputs(model: nn.Module, example_inputs: Any, plan: OutputPlan,
                  provenance: Provenance | None, metadata: dict[str, Any]) -> Written:
    plan.base.parent.mkdir(parents=True, exist_ok=True)
    written = Written()
    model = model.eval()
    for fmt in plan.formats:
        path = plan.path(fmt)
        if fmt == "module":
            atomic_save(model, path, force=plan.force)
        elif fmt == "artifact":
            if provenance is None and _is_hf(model):
                written.notes.append("artifact not written: a Hugging Face model has no dpm factory; "
                                     "set output.hf: true for a folder that from_pretrained loads")
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
