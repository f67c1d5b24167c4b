"""Loading models from checkpoints and saving compact models, safely.

Three kinds of checkpoint come in:
- a state_dict (loaded with ``weights_only=True``) plus a model factory ``package.module:callable``;
- a dpm artifact (what ``dpm prune`` writes): factory, factory kwargs, example input shape, the
  torch-pruning history and the weights; rebuilt without unpickling any code;
- a whole pickled module (``torch.save(model)``): loading it runs code from the file, so it is
  refused unless the caller passes ``trust=True`` (``--trust-checkpoint`` on the CLI).
"""
from __future__ import annotations

import importlib
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .errors import CheckpointError, ConfigError

ARTIFACT_FORMAT = "dpm-artifact"
ARTIFACT_VERSION = 1


def resolve_factory(path: str) -> Callable[..., Any]:
    """Import ``package.module:callable`` and return the callable."""
    if not isinstance(path, str) or ":" not in path:
        raise ConfigError(f"factory {path!r} is not of the form 'package.module:callable'")
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"factory {path!r}: cannot import module {module_name!r} ({err})") from err
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"factory {path!r}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"factory {path!r} is not callable")
    return target


def build_from_factory(factory: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    fn = resolve_factory(factory)
    try:
        model = fn(**(kwargs or {}))
    except TypeError as err:
        raise ConfigError(f"factory {factory!r} rejected its arguments {kwargs or {}}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ConfigError(f"factory {factory!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _read_weights_only(path: Path) -> Any:
    """Load with weights_only=True; None when the file holds pickled code (a whole module)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # A whole module fails on its classes ("Unsupported global"); anything else is a broken file.
        if "Unsupported global" in str(err):
            return None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (the file is corrupt or not "
                              "written by torch.save)") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_short(err)})") from err


def _short(err: BaseException) -> str:
    return str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__


def is_artifact(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == ARTIFACT_FORMAT


@dataclass
class LoadedModel:
    """A model and, when known, how to rebuild its architecture without pickle (see artifact.py)."""

    model: nn.Module
    kind: str  # "state_dict" | "artifact" | "module"
    provenance: Any = None  # artifact.Provenance or None


def load_model(
    path: str | os.PathLike,
    *,
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    trust: bool = False,
) -> nn.Module:
    """Load a model from any supported checkpoint kind; see the module docstring."""
    return load_checkpoint(path, factory=factory, factory_kwargs=factory_kwargs, trust=trust).model


def load_checkpoint(
    path: str | os.PathLike,
    *,
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    trust: bool = False,
    input_shape: list[int] | None = None,
) -> LoadedModel:
    """Like `load_model`, also returning the checkpoint kind and the architecture's provenance."""
    from .artifact import Provenance, provenance_of, rebuild_artifact

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    obj = _read_weights_only(path)
    if obj is None:
        return LoadedModel(_load_pickled_module(path, trust), "module")
    if is_artifact(obj):
        return LoadedModel(rebuild_artifact(obj, source=str(path)), "artifact", provenance_of(obj))
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # a common training-script wrapper
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if factory is None:
            raise CheckpointError(
                f"{path} holds a state_dict: name the architecture with a model factory "
                "(recipe model.factory, e.g. 'dpm_cli.models:resnet56')"
            )
        model = build_from_factory(factory, factory_kwargs)
        load_state_dict_strict(model, obj, source=str(path))
        return LoadedModel(model, "state_dict", Provenance(factory, dict(factory_kwargs or {}), input_shape))
    raise CheckpointError(f"{path}: holds {type(obj).__name__}, not a state_dict, a dpm artifact or a module")


def _load_pickled_module(path: Path, trust: bool) -> nn.Module:
    if not trust:
        raise CheckpointError(
            f"{path} is a pickled module: loading it runs code from the file. "
            "Pass --trust-checkpoint if you trust its source, or save a state_dict instead"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # any unpickling failure: missing class, corrupt file
        raise CheckpointError(f"{path}: cannot unpickle the module ({_short(err)})") from err
    if not isinstance(obj, nn.Module):
        raise CheckpointError(f"{path}: unpickled a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, turning torch's long mismatch report into one line that names the first problem."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(
            f"{source} does not fit the model factory: {detail} "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys); check model.factory and model.kwargs"
        )
    for key, tensor in state.items():
        if own[key].shape != tensor.shape:
            raise CheckpointError(
                f"{source} does not fit the model factory: {key} has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(own[key].shape)}; check model.kwargs"
            )
    # assign: take the loaded tensors as they are instead of copying 100 MB into fresh ones; only
    # when the dtypes agree, so that a half-precision checkpoint is still cast to the model's dtype
    same_dtypes = all(state[k].dtype == own[k].dtype for k in state)
    model.load_state_dict(state, assign=same_dtypes)


def atomic_save(obj: Any, path: str | os.PathLike, *, force: bool = False) -> Path:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves half a file."""
    path = Path(path)
    if path.exists() and not force:
        raise CheckpointError(f"{path} exists: choose another output or pass --force to overwrite it")
    write_atomically(path, lambda tmp: torch.save(obj, tmp))
    return path


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary path in the target folder, then rename it onto `path`.

    The temporary name keeps the target's suffix (torch.export insists on '.pt2').
    """
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: output folder does not exist")
    if not os.access(folder, os.W_OK):
        raise CheckpointError(f"{folder}: output folder is not writable")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp.", suffix=path.suffix, dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
