"""Helpers shared by the commands: recipe + overrides from the command line, JSON output, formatting."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..errors import InputError
from ..recipe import Recipe, load_recipe

EXIT_CODES = "Exit codes: 0 success, 1 runtime failure, 2 bad input, 130 Ctrl-C, 143 SIGTERM (state kept: --resume)."


def split_args(args: list[str] | None) -> tuple[str | None, list[str]]:
    """Positional arguments: at most one MODEL path, any number of key.path=value overrides. A MODEL
    `package:NAME/dir` (a model shipped inside an installed package, as recipes, `dpm report` and
    `dpm check` take it) is the folder it names."""
    from ..report.inputs import resolve_package

    paths = [a for a in args or [] if "=" not in a]
    overrides = [a for a in args or [] if "=" in a]
    if len(paths) > 1:
        raise InputError(f"expected one MODEL and key.path=value overrides, got {len(paths)} paths: "
                         f"{' '.join(paths)}")
    return (str(resolve_package(paths[0])) if paths else None), overrides


def read_recipe(recipe: Path | None, overrides: list[str], model: str | Path | None = None) -> Recipe:
    """The recipe with its overrides. A MODEL that is a Hugging Face folder is its model.hf.path when it
    names no model, so one recipe serves every folder (`dpm prune FOLDER -r r.yaml` with text data was
    refused: "set model.hf.path")."""
    if recipe is None:
        raise InputError("no recipe: pass --recipe r.yaml (see recipes/ for examples)")
    return load_recipe(recipe, overrides, model_folder=hf_folder(model))


def hf_folder(*paths: str | Path | None) -> str | Path | None:
    """The first of `paths` that is a Hugging Face model folder, or None."""
    from ..hf.load import is_hf_folder

    return next((p for p in paths if p is not None and is_hf_folder(p)), None)


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=float))


def human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"
