"""Turning what the user typed into things to measure: shapes, counts, and the model to load.

Every problem is an `InputError`/`ConfigError` with one line saying what is wrong and how to fix it.
"""
from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..escaping import printable
from ..limits import check_example_shape

_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)\s*$", re.IGNORECASE)


def parse_shape(text: str, option: str = "--input-shape") -> tuple[int, ...]:
    """'1,3,32,32' (or '1x3x32x32') -> (1, 3, 32, 32); batch first, every dimension positive."""
    parts = [p.strip() for p in re.split(r"[,x×]", str(text).strip().strip("[]()")) if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"{option} {text!r} is not a shape: give positive integers, batch first, e.g. 1,3,32,32")
    return tuple(int(p) for p in parts)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,32' -> (1, 32)."""
    return parse_shape(text, "--batch-sizes")


def parse_count(text: str | float | int, option: str) -> float:
    """'125M' -> 125e6; accepts plain numbers, 1.2e8 and the suffixes K, M, G, T (powers of 1000)."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _COUNT.match(str(text))
        if not match:
            raise ConfigError(f"{option} {text!r} is not a count: give e.g. 125000000, 125M or 1.2G")
        value = float(match.group(1)) * _SUFFIXES[match.group(2).lower()]
    if value <= 0:
        raise ConfigError(f"{option} must be positive, got {text!r}")
    return value


@dataclass
class ModelSetup:
    """What is needed to load and run a model: its input shape and, for state_dicts, its factory."""

    input_shape: tuple[int, ...] | None
    factory: str | None = None
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  # the recipe's model.checkpoint, used when no MODEL is given
    hf_task: str = "auto"  # Hugging Face folders: the Auto class (recipe model.hf.task; auto: config.json's)
    seq_len: int = 128  # token models: the example is one sequence of this many tokens (recipe model.seq_len)


def resolve_setup(input_shape: str | None, recipe: str | Path | None, factory: str | None,
                  overrides: Sequence[str] = (), model_folder: str | Path | None = None) -> ModelSetup:
    """Merge --input-shape/--factory with the recipe's model section (after `overrides`, KEY.PATH=VALUE);
    options given win. `model_folder`: a Hugging Face folder on the command line, the recipe's
    model.hf.path when it names no model (`recipe.load_recipe`)."""
    if overrides and recipe is None:
        raise ConfigError(f"{overrides[0]}: KEY.PATH=VALUE overrides change a recipe; pass --recipe r.yaml")
    setup = ModelSetup(None)
    if recipe is not None:
        setup = _from_recipe(recipe, overrides, model_folder)
    if input_shape is not None:
        setup.input_shape = parse_shape(input_shape)
        check_example_shape(setup.input_shape, f"--input-shape {input_shape}")  # before loading anything
    if factory is not None:
        setup.factory = factory
    return setup


def require_shape(setup: ModelSetup, *artifact_shapes: Any) -> Any:
    """--input-shape or the recipe's, else the one a dpm artifact recorded (or the token inputs of a
    Hugging Face folder or its artifact, a dict). Token inputs given a shape (batch, tokens) are cut or
    tiled to it: `dpm report FOLDER --input-shape 1,512` built a float tensor of that shape, which no
    embedding takes ("Expected tensor for argument #1 'indices' to have one of the following scalar types")."""
    tokens = next((s for s in artifact_shapes if isinstance(s, dict)), None)
    if tokens is not None and (setup.input_shape is None or token_ids_only(tokens)):
        return tokens if setup.input_shape is None else resized_tokens(tokens, setup.input_shape)
    shape = setup.input_shape or next((s for s in artifact_shapes if s is not None and len(s)), None)
    if isinstance(shape, dict):
        return shape
    if shape is None:
        raise ConfigError("no input shape: pass --input-shape (batch first, e.g. 1,3,32,32) "
                          "or a --recipe with model.input_shape")
    check_example_shape(shape, f"input shape {','.join(map(str, shape))}")  # before allocating the example
    return tuple(shape)


def token_ids_only(inputs: dict) -> bool:
    """Inputs that are all (batch, tokens) integer tensors: ids, masks, types (not audio features)."""
    return all(torch.is_tensor(v) and v.dim() == 2 and not v.is_floating_point() for v in inputs.values())


def resized_tokens(inputs: dict, shape: tuple[int, ...]) -> dict:
    """Token inputs tiled or cut to `shape` = (batch, tokens): their MACs are those of that shape."""
    if len(shape) != 2:
        raise ConfigError(f"--input-shape {','.join(map(str, shape))}: a token model's input shape is "
                          "batch,tokens (e.g. 1,128)")
    batch, length = shape
    resized = {}
    for name, value in inputs.items():
        value = value.repeat(1, -(-length // value.shape[1]))[:, :length]
        resized[name] = value.repeat(-(-batch // value.shape[0]), 1)[:batch]
    return resized


def _from_recipe(path: str | Path, overrides: Sequence[str] = (), model_folder: str | Path | None = None) -> ModelSetup:
    try:  # imported here: the recipe package is optional for measuring
        from ..recipe import load_recipe
    except ImportError as err:
        raise ConfigError(f"--recipe needs dpm_cli.recipe, which cannot be imported ({err}); "
                          "use --input-shape and --factory instead") from err
    # the data files a recipe names are not needed to measure the model
    kwargs = {"check_files": False} if "check_files" in inspect.signature(load_recipe).parameters else {}
    if model_folder is not None:
        kwargs["model_folder"] = model_folder
    model = load_recipe(path, overrides, **kwargs).model
    shape = getattr(model, "input_shape", None)
    hf = getattr(model, "hf", None)
    return ModelSetup(
        input_shape=tuple(int(d) for d in shape) if shape else None,
        factory=getattr(model, "factory", None),
        factory_kwargs=dict(getattr(model, "kwargs", None) or {}),
        checkpoint=getattr(model, "checkpoint", None) or getattr(hf, "path", None),
        hf_task=getattr(hf, "task", "auto"),
        seq_len=getattr(model, "seq_len", 128),
    )


def resolve_package(path: str | Path | None) -> str | Path | None:
    """A 'package:NAME/dir' argument (the form recipes take for a model shipped with pip) as the folder it
    names; any other path as given."""
    from ..errors import CheckpointError
    from ..recipe.loader import PACKAGE_PREFIX, package_folder

    if path is None or not str(path).startswith(PACKAGE_PREFIX):
        return path
    folder = package_folder(str(path))
    if folder is None:
        name = str(path)[len(PACKAGE_PREFIX):].partition("/")[0]
        raise CheckpointError(f"{printable(path)}: no installed package {name!r}; install it or give a folder path")
    return folder


def check_exists(*paths: str | Path | None) -> None:
    """Each given path (MODEL, --baseline) is there, and no other framework's file or a folder's weights
    file: said before anything is read for them (the data)."""
    from ..errors import CheckpointError
    from ..hub_ids import hub_id_hint
    from ..trust import check_file

    for path in paths:
        if path is not None and not Path(resolve_package(path)).exists():
            raise CheckpointError(f"{printable(path)}: no such checkpoint file or model folder{hub_id_hint(path)}")
        if path is not None and Path(resolve_package(path)).is_file():
            check_file(Path(resolve_package(path)))


def load_for_measuring(path: str | Path, setup: ModelSetup, trust: bool = False) -> tuple[nn.Module, Any]:
    """Load a checkpoint the way every dpm command does (see `dpm_cli.checkpoint`); also return the
    input shape a dpm artifact recorded (None for other checkpoints), or the token inputs it stored. A
    Hugging Face folder gives its model and, in place of a shape, ready token inputs: its tokenizer's
    sample at `setup.seq_len` tokens (a vision or speech folder, with no tokenizer: an input shaped from
    its config, unless --input-shape is given)."""
    from .. import checkpoint
    from ..hf import is_hf_folder

    path = resolve_package(path)
    if is_hf_folder(path):
        from ..hf import folder_example, load_hf
        from .forward import max_positions
        from ..hf.inputs import reads_tokens

        loaded = load_hf(path, setup.hf_task)
        longest = max_positions(loaded.model.config) or setup.seq_len
        if (loaded.tokenizer is None or not reads_tokens(loaded.model)) and setup.input_shape:
            return loaded.model, None  # --input-shape (require_shape): the model's first input, that shape
        example = folder_example(loaded.model, loaded.tokenizer, min(setup.seq_len, longest))
        if example is None:
            raise ConfigError(f"{path} has no tokenizer and its config gives no input size, so dpm cannot "
                              "build an example input: pass --input-shape (e.g. 1,3,224,224)")
        return loaded.model, example

    kwargs = dict(factory=setup.factory, factory_kwargs=setup.factory_kwargs, trust=trust)
    if not hasattr(checkpoint, "load_checkpoint"):  # older checkpoint module: no provenance
        return checkpoint.load_model(path, **kwargs), None
    loaded = checkpoint.load_checkpoint(path, **kwargs)
    if getattr(loaded, "note", None):  # stderr: --json on stdout stays machine-readable
        sys.stderr.write(f"note: {loaded.note}\n")
    inputs = getattr(loaded.provenance, "example_inputs", None)
    if isinstance(inputs, dict):  # a token model's artifact: its stored inputs, at the length it was pruned at
        return loaded.model, inputs
    shape = getattr(loaded.provenance, "input_shape", None)
    return loaded.model, tuple(int(d) for d in shape) if shape else None


def model_path(model: str | None, setup: ModelSetup) -> str:
    """The MODEL argument, else the recipe's model.checkpoint."""
    path = model or setup.checkpoint
    if not path:
        raise ConfigError("no model given: pass a checkpoint file as MODEL (or a --recipe with model.checkpoint)")
    return str(path)


def distinct_labels(*paths: str) -> list[str]:
    """Short names for the models in tables: file names, or full paths when the names clash."""
    names = [Path(p).name for p in paths]
    if len(set(names)) == len(names):
        return names
    if len(set(paths)) == len(paths):
        return list(paths)
    return [f"{name} ({i + 1})" for i, name in enumerate(names)]


def read_check_json(path: str | Path) -> dict[str, Any]:
    """A `dpm check --json` result, to show its gates in a report."""
    import json

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"--gates {path}: cannot read it ({err.strerror}); give the file `dpm check --json` wrote") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"--gates {path}: not JSON; give the file `dpm check --json` wrote") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("gates"), list):
        raise ConfigError(f"--gates {path}: no \"gates\" list in it; give the file `dpm check --json` wrote")
    return doc


RUN_FILES = ("recipe.yaml", "metrics.jsonl", "events.jsonl", "norms.jsonl", "summary.json", "state.pt")


def check_html_path(path: Path, inputs: list[str | Path], run: Path | None = None) -> None:
    """Fail before measuring anything when --html cannot be written or would overwrite an input."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--html {path} is a folder: give the HTML file to write, e.g. {path / 'report.html'}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"--html {path}: the folder {folder} does not exist; create it first")
    protected = [Path(p) for p in inputs] + ([run / name for name in RUN_FILES] if run is not None else [])
    if any(path.resolve() == p.resolve() for p in protected):
        raise ConfigError(f"--html {path} is one of the inputs; choose another file name")
