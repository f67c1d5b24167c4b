"""The one place that decides what dpm may import, call or unpickle.

Every model load (CLI `prune`, `plan`, `report`, `check`, the pipeline, `dpm_cli.load`) goes through here:

- A factory the USER names (recipe `model.factory`/`data.factory`, `--factory`, `factory=`) is code the
  user chose to run: `resolve_factory` imports it.
- A factory read from a dpm ARTIFACT is data from whoever sent the file. `artifact_builder` returns a
  callable only when (a) it is an allow-listed model builder (`dpm_cli.models` builders, `torchvision.models`
  builders, `timm:create_model`, `dpm_cli.models.hf_config:from_config`), named by module and ONE
  attribute, (b) it equals the factory the user named, or (c) the caller trusts the file (`trust=True`,
  `--trust-checkpoint`). Its kwargs must be plain data that names no file, URL or download. Otherwise it
  raises `CheckpointError` without importing anything.
- A pickled module or object (`torch.load(weights_only=False)`) is unpickled only with trust (`unpickle`).
- Everything else is read with `torch.load(weights_only=True)` (`read_weights_only`).
"""
from __future__ import annotations

import importlib
import inspect
import math
import os
import pickle
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .errors import CheckpointError, ConfigError
from .hub_ids import hub_id_hint

TRUST_FLAG = "--trust-checkpoint"
_TRUST_HINT = f"pass {TRUST_FLAG} (trust=True in Python) only if you trust the file's source"

# (module, attribute) of the allow-listed builders that are not in dpm_cli.models.__all__.
_TIMM = ("timm", "create_model")
_HF = ("dpm_cli.models.hf_config", "from_config")
# kwargs that make a builder read a file, fetch weights or run remote code: refused unless None/False.
LOAD_KEYS = frozenset({
    "weights", "weights_backbone", "pretrained", "pretrained_backbone", "checkpoint_path", "checkpoint",
    "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "pretrained_model_name_or_path", "file", "path",
    "url", "trust_remote_code", "auto_map", "local_files_only",
})
# A string value that could name a file, a URL or a hub repo ("hf-hub:org/x", "local-dir:/x", "a/b.pt").
_PATHLIKE = re.compile(r"[/\\:~]|\.(pt|pth|bin|safetensors|pkl|pickle|ckpt|npz|npy|json|ya?ml|onnx|h5)$", re.I)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

MAX_DEPTH, MAX_NODES, MAX_STR, MAX_INT = 16, 10_000, 1_000, 2**31


def show(value: Any, limit: int = 120) -> str:
    """A value for a one-line message: repr escapes newlines and control characters; long ones are cut."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


# --- factories the user named: their code, their choice --------------------------------------------------

def resolve_factory(path: str) -> Callable[..., Any]:
    """Import a factory the USER named, ``package.module:callable``, and return the callable."""
    if not isinstance(path, str) or ":" not in path:
        raise ConfigError(f"factory {show(path)} is not of the form 'package.module:callable'")
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"factory {show(path)}: cannot import module {module_name!r} ({err})") from err
    target: Any = module
    for part in attr.split("."):  # the user may name a classmethod: Class.build
        if not hasattr(target, part):
            raise ConfigError(f"factory {show(path)}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"factory {show(path)} is not callable")
    return target


def build_from_factory(factory: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build a model with a factory the USER named (a recipe, `--factory`)."""
    return call_builder(resolve_factory(factory), factory, kwargs or {})


def call_builder(fn: Callable[..., Any], factory: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        model = fn(**kwargs)
    except TypeError as err:
        raise ConfigError(f"factory {show(factory)} rejected its arguments {show(kwargs)}: {_short(err)}") from err
    if not isinstance(model, nn.Module):
        raise ConfigError(f"factory {show(factory)} returned {type(model).__name__}, not a torch.nn.Module")
    return model


# --- factories read from an artifact: data, so allow-listed ----------------------------------------------

def artifact_builder(factory: str, kwargs: dict[str, Any], *, named: str | None = None,
                     named_kwargs: dict[str, Any] | None = None, trust: bool = False,
                     source: str = "<artifact>") -> Callable[..., Any]:
    """The callable an artifact's `factory` may run with `kwargs`, or CheckpointError.

    `named`/`named_kwargs` are the factory and kwargs the user gave. Decides from the strings alone first,
    so a refused factory imports nothing.
    """
    check_plain(kwargs, f"{source}: factory_kwargs")
    if trust:
        return resolve_factory(factory)
    refusal = f"{source}: the artifact names factory {show(factory)}"
    is_named = named is not None and factory.strip() == str(named).strip()
    key = None if is_named else _allow_listed_name(factory)
    if key is None and not is_named:
        raise CheckpointError(f"{refusal}, which is not an allowed model builder (dpm_cli.models, "
                              "torchvision.models, timm:create_model, dpm_cli.models.hf_config:from_config) nor the "
                              "factory you named; " + _TRUST_HINT)
    # The user's own factory with the user's own kwargs may read what they name; artifact kwargs may not.
    why = None if is_named and kwargs == (named_kwargs or {}) else load_in_kwargs(kwargs)
    if why:
        raise CheckpointError(f"{refusal} with {why}, which could load or download another file; " + _TRUST_HINT)
    if is_named:
        return resolve_factory(factory)
    if key == _HF:
        _check_hf_kwargs(kwargs, refusal)
    try:
        fn = _allowed_builder(*key)
    except ImportError as err:  # e.g. a torchvision built for another torch: still one line, exit 2
        raise CheckpointError(f"{refusal}, whose package cannot be imported here ({_short(err)})") from err
    if fn is None:
        raise CheckpointError(f"{refusal}, which is not a model builder of its module; " + _TRUST_HINT)
    if key == _TIMM:
        _check_timm_name(kwargs, refusal)
    default = _default_that_loads(fn, kwargs)
    if default:
        raise CheckpointError(f"{refusal}, whose default {default} would load pretrained weights; an artifact "
                              f"must set it to null, or " + _TRUST_HINT)
    return fn


def _default_that_loads(fn: Callable[..., Any], kwargs: dict[str, Any]) -> str | None:
    """A loading parameter the kwargs leave at a default that loads (torchvision's weights_backbone)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read: nothing known to default to a download
        return None
    for p in params:
        if p.name in LOAD_KEYS and p.name not in kwargs and p.default not in (None, False, inspect.Parameter.empty):
            return f"{p.name}={show(p.default, 60)}"
    return None


def _allow_listed_name(factory: str) -> tuple[str, str] | None:
    """(module, attribute) when the string has an allow-listed shape: never an attribute chain."""
    if factory in ("timm.create_model", "timm:create_model"):
        return _TIMM
    module, sep, attr = factory.partition(":")
    if not sep or not _MODULE.fullmatch(module) or not _IDENT.fullmatch(attr) or attr.startswith("_"):
        return None
    if (module, attr) == _HF:
        return _HF
    top = module.split(".")
    if top[:2] in (["dpm_cli", "models"], ["torchvision", "models"]):
        return module, attr
    return None


def _allowed_builder(module_name: str, attr: str) -> Callable[..., Any] | None:
    """Import the allow-listed package (never a module named by the artifact) and return the builder itself."""
    if (module_name, attr) == _TIMM:
        return _import("timm").create_model
    if (module_name, attr) == _HF:
        return _import("dpm_cli.models.hf_config").from_config
    package = _import(".".join(module_name.split(".")[:2]))  # dpm_cli.models or torchvision.models
    module = sys.modules.get(module_name)  # a submodule the package itself loaded, else refused
    fn = vars(module).get(attr) if module is not None else None  # no getattr: no module __getattr__ hooks
    if fn is None:
        return None
    if package.__name__ == "dpm_cli.models":
        builders = {id(getattr(package, n)) for n in package.__all__ if n != "MODELS"}
    else:
        builders = {id(package.get_model_builder(n)) for n in package.list_models()}
    return fn if id(fn) in builders else None


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as err:  # torchvision fails with RuntimeError when built for another torch
        raise ImportError(f"{name}: {_short(err)}") from err


def _check_timm_name(kwargs: dict[str, Any], refusal: str) -> None:
    name = kwargs.get("model_name")
    if not isinstance(name, str) or name not in _import("timm").list_models():
        raise CheckpointError(f"{refusal} with model_name {show(name)}, which is not one of timm's "
                              "architectures (timm.list_models()); " + _TRUST_HINT)


def _check_hf_kwargs(kwargs: dict[str, Any], refusal: str) -> None:
    """A transformers class name (one identifier: the builder looks it up in `transformers` only) and a
    config with no file, hub or remote-code keys; checked before transformers is imported."""
    from .models.hf_config import config_problem

    name = kwargs.get("architecture")
    if not isinstance(name, str) or not _IDENT.fullmatch(name) or name.startswith("_"):
        raise CheckpointError(f"{refusal} with architecture {show(name, 60)}, which is not a transformers model "
                              "class name (e.g. 'BertModel'); " + _TRUST_HINT)
    why = config_problem(kwargs.get("config"))
    if why:
        raise CheckpointError(f"{refusal}, whose {why}; " + _TRUST_HINT)


def load_in_kwargs(kwargs: Any, where: str = "") -> str | None:
    """Why these kwargs could make a builder load a file or download, or None."""
    if isinstance(kwargs, dict):
        for k, v in kwargs.items():
            if str(k) in LOAD_KEYS and v not in (None, False):
                return f"{where}{k}={show(v, 60)}"
            why = load_in_kwargs(v, f"{where}{k}.")
            if why:
                return why
    elif isinstance(kwargs, list):
        for i, v in enumerate(kwargs):
            why = load_in_kwargs(v, f"{where}[{i}].")
            if why:
                return why
    elif isinstance(kwargs, str) and _PATHLIKE.search(kwargs):
        return f"{where.rstrip('.')}={show(kwargs, 60)} (a path, URL or hub name)"
    return None


def check_plain(value: Any, what: str) -> None:
    """str/int/float/bool/None, lists and str-keyed dicts of them; bounded depth, size and values."""
    nodes = 0

    def walk(v: Any, depth: int) -> None:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            raise CheckpointError(f"{what} is too large or too deeply nested (at most {MAX_NODES} values, "
                                  f"{MAX_DEPTH} levels)")
        if v is None or isinstance(v, bool):
            return
        if isinstance(v, int):
            if abs(v) > MAX_INT:
                raise CheckpointError(f"{what}: integer {show(v, 40)} is out of range (|n| <= 2**31)")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise CheckpointError(f"{what}: {v} is not a finite number")
        elif isinstance(v, str):
            if len(v) > MAX_STR:
                raise CheckpointError(f"{what}: a string of {len(v)} characters is too long")
        elif isinstance(v, (list, tuple)):
            for item in v:
                walk(item, depth + 1)
        elif isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str) or len(k) > MAX_STR:
                    raise CheckpointError(f"{what}: key {show(k, 40)} is not a short string")
                walk(item, depth + 1)
        else:
            raise CheckpointError(f"{what} holds a {type(v).__name__}: only strings, numbers, booleans, "
                                  "None, lists and mappings are allowed")

    walk(value, 0)


# --- reading files --------------------------------------------------------------------------------------

@dataclass
class PickledCode:
    """What torch.load(weights_only=True) refused to import: the first class or function the file names."""

    name: str


def read_weights_only(path: Path) -> Any:
    """torch.load with weights_only=True; PickledCode when the file holds pickled code (a whole module,
    or an object among its tensors, such as a Lightning checkpoint's hyper_parameters Namespace)."""
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 128" on a mangled file: the error says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # A whole module fails on its classes ("Unsupported global"); anything else is a broken file.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found or "Unsupported global" in str(err):
            return PickledCode(found.group(1)[:120] if found else "an object")
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (the file is corrupt or not "
                              "written by torch.save)") from err
    except Exception as err:  # torch raises IndexError, RuntimeError, EOFError, ... on random bytes
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (the file is corrupt or not "
                              "written by torch.save)") from err


def unpickle(path: Path, trust: bool, code: PickledCode | None = None) -> Any:
    """The only `torch.load(weights_only=False)` in dpm: it runs code from the file, so only with trust."""
    if not trust:
        what = f" ({code.name})" if code is not None else ""
        raise CheckpointError(
            f"{path} is a pickled module or holds pickled objects{what}: loading it runs code from the file. "
            f"Pass {TRUST_FLAG} if you trust its source, or save a state_dict instead (torch.save(model.state_dict(), "
            "path); from a Lightning checkpoint: torch.save(ckpt['state_dict'], path))"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # any unpickling failure: missing class, corrupt file
        raise CheckpointError(f"{path}: cannot unpickle the module ({_short(err)})") from err


def check_file(path: Path) -> None:
    if path.is_dir():
        if (path / "adapter_config.json").is_file():  # what load_hf says of a folder that has no config.json
            from .hf.load import check_folder

            check_folder(path)
        raise CheckpointError(f"{path} is a directory, not a checkpoint file: name the .pt or .dpm.pt file in it, "
                              "or give a Hugging Face model folder (config.json, model.safetensors)")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file{hub_id_hint(path)}")
    if not path.is_file():  # a FIFO or a device would block or never end
        raise CheckpointError(f"{path} is not a regular file: name a checkpoint file")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: checkpoint file is not readable")
    from .foreign import foreign_format, folder_of_weights

    if (other := foreign_format(path)) is not None:
        raise CheckpointError(f"{path} is {other}")
    if (folder := folder_of_weights(path)) is not None:  # read as a bare state_dict, it needed a factory
        raise CheckpointError(f"{path} is the weights of the Hugging Face model folder {folder}: give the folder "
                              "itself (config.json and the tokenizer are read from it)")


def _short(err: BaseException) -> str:
    return str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
