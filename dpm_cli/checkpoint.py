"""Loading models from checkpoints and saving compact models, safely.

Three kinds of checkpoint come in:
- a state_dict (loaded with ``weights_only=True``) plus a model factory ``package.module:callable``;
- a dpm artifact (what ``dpm prune`` writes): factory, factory kwargs, example input shape (or, for
  token models, the example inputs themselves), the torch-pruning history and the weights; rebuilt
  without unpickling any code, and its factory runs only when `dpm_cli.trust` allows it (an
  allow-listed builder, the factory the caller named, or trust);
- a whole pickled module (``torch.save(model)``): loading it runs code from the file, so it is
  refused unless the caller passes ``trust=True`` (``--trust-checkpoint`` on the CLI).

A load goes one way: checkpoint -> artifact -> trust. Every decision about what may be imported, called or
unpickled is made in `dpm_cli.trust`.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .artifact import (  # noqa: F401  (ARTIFACT_*, is_artifact, load_state_dict_strict: re-exported)
    ARTIFACT_FORMAT, ARTIFACT_VERSION, Provenance, is_artifact, load_state_dict_strict, parse_artifact,
    rebuild_artifact,
)
from .errors import CheckpointError, DpmError, OutOfSpaceError
from .trust import (PickledCode, build_from_factory, check_file, read_weights_only, resolve_factory,  # noqa: F401
                    unpickle)


@dataclass
class LoadedModel:
    """A model and, when known, how to rebuild its architecture without pickle (see artifact.py)."""

    model: nn.Module
    kind: str  # "state_dict" | "artifact" | "module"
    provenance: Any = None  # artifact.Provenance or None
    note: str | None = None  # how the checkpoint's keys were read, when not as they were


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
    """Like `load_model`, also returning the checkpoint kind and the architecture's provenance.

    `factory` is the one the caller named: it builds a state_dict's model, and an artifact naming exactly
    it may run it. `trust` allows pickled modules and any factory an artifact names.
    """
    path = Path(path)
    check_file(path)
    obj = read_weights_only(path)
    if isinstance(obj, PickledCode):
        obj = unpickle(path, trust, obj)  # with trust only: a module, or a dict with objects among its tensors
        held = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj, dict) and isinstance(obj.get(k), nn.Module)), None)
        if isinstance(obj, nn.Module) or held is not None:  # torch.save(model) or torch.save({"model": model, ...})
            return LoadedModel(obj if held is None else held, "module")
    if is_artifact(obj):
        provenance = parse_artifact(obj, str(path))
        model = rebuild_artifact(obj, source=str(path), factory=factory, factory_kwargs=factory_kwargs, trust=trust)
        return LoadedModel(model, "artifact", provenance)
    obj, wrapper = unwrapped(obj)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if factory is None:
            raise CheckpointError(
                f"{path} holds a state_dict: name the architecture with a model factory "
                "(recipe model.factory, e.g. 'dpm_cli.models:resnet56')"
            )
        model = build_from_factory(factory, factory_kwargs)
        obj, prefix = without_prefix(obj, list(model.state_dict()))
        load_state_dict_strict(model, obj, source=str(path))
        notes = [f"read the weights under the checkpoint's {wrapper!r} key"] if wrapper not in (None, "state_dict") else []
        notes += [f"the checkpoint's keys carry the prefix {prefix!r} (the attribute a LightningModule, DataParallel "
                  "or torch.compile held the model in): read without it"] if prefix else []
        note = "; ".join(notes) or None
        return LoadedModel(model, "state_dict", Provenance(factory, dict(factory_kwargs or {}), input_shape), note)
    raise CheckpointError(f"{path}: holds {type(obj).__name__}, not a state_dict, a dpm artifact or a module")


# Where training scripts put the weights beside their epoch and optimizer: Lightning and timm
# "state_dict", PyTorch's own checkpoint tutorial "model_state_dict", DeiT/MAE/detectron-style "model".
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")


def unwrapped(obj: Any) -> tuple[Any, str | None]:
    """The state dict inside a training checkpoint dict, and the key it was under (None: `obj` itself)."""
    if not isinstance(obj, dict) or all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner, key
    return obj, None


def without_prefix(state: dict[str, Any], own: list[str]) -> tuple[dict[str, Any], str | None]:
    """`state` with the one prefix every key carries removed, when the keys are then exactly the model's
    (`model.` of a Lightning checkpoint's state_dict, `module.` of DataParallel, `_orig_mod.` of
    torch.compile); else `state` as it is. Only an exact match is taken: no key is guessed."""
    if not own or set(state) == set(own):
        return state, None
    first = next(iter(state))
    for key in own:
        if first.endswith(key) and first != key:
            prefix = first[: -len(key)]
            if all(k.startswith(prefix) for k in state) and {k[len(prefix):] for k in state} == set(own):
                return {k[len(prefix):]: v for k, v in state.items()}, prefix
    return state, None


def atomic_save(obj: Any, path: str | os.PathLike, *, force: bool = False) -> Path:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves half a file."""
    path = Path(path)
    if path.exists() and not force:
        raise CheckpointError(f"{path} exists: choose another output or pass --force to overwrite it")
    write_atomically(path, lambda tmp: torch.save(obj, tmp))
    return path


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary path in the target folder, then rename it onto `path`.

    The temporary name keeps the target's suffix (torch.export insists on '.pt2'). The file gets the
    mode any new file gets (0666 less the umask), not mkstemp's private 0600: outputs are meant to be shared.
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
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except Exception as err:
        raise out_of_space(err, path, folder) or err
    finally:
        if tmp.exists():
            tmp.unlink()


# Less than this free after a failed write means the disk filled up: torch.save then fails with
# "[enforce fail at inline_container.cc] unexpected pos ...", not with ENOSPC, and safetensors with its
# own SafetensorError ("I/O error: No space left on device (os error 28)").
NEARLY_FULL = 16 * 2**20


def out_of_space(err: BaseException, path: Path, folder: Path) -> OutOfSpaceError | None:
    """The one line to give when writing `path` failed because its disk is full, else None. Asked
    before the partial file is removed, while it still holds the space it took."""
    if isinstance(err, DpmError):  # dpm's own finding (a folder that does not verify) says it better
        return None
    full = (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        any(s in str(err) for s in ("No space left on device", "os error 28", "Disk quota exceeded"))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if not (full or free < NEARLY_FULL):
        return None
    from .limits import human_bytes

    return OutOfSpaceError(f"no space left to write {path} ({human_bytes(free)} free on its disk): free some space "
                           "or write elsewhere (--run-dir, -o); the file was not written and any earlier one is "
                           f"unchanged ({type(err).__name__}: {str(err)[:200]})")


def current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def share_tree(folder: Path) -> None:
    """Give a folder built in a private temporary directory (mkdtemp: 0700) and its contents the modes
    new files and folders get (0777/0666 less the umask): a release step reading it as another user
    failed on the folder, while every other output was readable."""
    mask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
