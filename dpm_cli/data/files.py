"""Tensors from a ``.pt`` or ``.npz`` file, read without unpickling any code.

Accepted contents:
- ``.pt`` (``torch.load(weights_only=True)``): a dict with ``inputs``/``x``, optional ``labels``/``y``
  and optional ``val_inputs``/``val_x`` + ``val_labels``/``val_y``; a tuple/list ``(inputs, labels)``
  or ``(inputs,)``; or a bare inputs tensor.
- ``.npz`` (``np.load(allow_pickle=False)``): arrays under the same names.
Without ``labels`` the data is unlabeled calibration data. Without validation arrays the file is
split with ``val_fraction``.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .bundle import DataBundle, from_tensors

_ALIASES = {
    "inputs": ("inputs", "x"),
    "labels": ("labels", "y"),
    "val_inputs": ("val_inputs", "val_x"),
    "val_labels": ("val_labels", "val_y"),
}
_KNOWN = sorted(name for names in _ALIASES.values() for name in names)


_KINDS = {"U": "strings", "S": "bytes", "O": "Python objects", "M": "dates", "m": "time spans", "c": "complex numbers",
          "V": "raw records"}


def _short(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _read(path: Path) -> Any:
    from ..foreign import foreign_format, is_lfs_pointer

    if is_lfs_pointer(path):
        raise InputError(f"{path} is {foreign_format(path)}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise InputError(f"{path}: not a readable .npz file of plain arrays ({_short(err)})") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch reports refused classes as "Unsupported global"; anything else is a damaged file.
        if "global" not in str(err).lower():
            raise InputError(
                ""
                f"{path}: not a readable PyTorch file (corrupt or not written by torch.save)"
            ) from err
        raise InputError(
            f"{path}: holds pickled objects other than tensors; save a dict of tensors "
            "{'inputs': x, 'labels': y} instead"
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: not a readable PyTorch file ({_short(err)})") from err


def _named(obj: Any, path: Path) -> dict[str, Any]:
    """Map the file's contents onto the canonical names inputs/labels/val_inputs/val_labels."""
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return {"inputs": obj}
    if isinstance(obj, (tuple, list)):
        if len(obj) not in (1, 2):
            raise InputError(
                f"{path}: holds a sequence of {len(obj)} items;"
                " expected (inputs, labels) or (inputs,)"
            )
        return dict(zip(("inputs", "labels"), obj))
    if not isinstance(obj, dict):
        raise InputError(f"{path}: holds {type(obj).__name__}; expected a dict {{'inputs': x, 'labels': y}}")
    # Unknown keys are refused: a typo such as 'label' would otherwise silently drop the labels.
    unknown = sorted(str(k) for k in obj if k not in _KNOWN)
    if unknown:
        raise InputError(f"{path}: unknown keys {unknown}; expected some of {_KNOWN}")
    named: dict[str, Any] = {}
    for canonical, names in _ALIASES.items():
        present = [n for n in names if n in obj]
        if len(present) > 1:
            raise InputError(f"{path}: has both {present[0]!r} and {present[1]!r}; keep one")
        if present:
            named[canonical] = obj[present[0]]
    if "inputs" not in named:
        raise InputError(f"{path}: no 'inputs' (or 'x') entry; found keys {sorted(map(str, obj))}")
    return named


def _as_tensor(value: Any, what: str, path: Path) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":  # strings, bytes, objects, dates, complex: not model inputs or labels
            raise InputError(f"{path}: {what} have dtype {value.dtype} ({_KINDS.get(value.dtype.kind, 'not numbers')}); "
                             "save numeric arrays, e.g. np.asarray(x, dtype=np.float32)")
        try:
            value = torch.from_numpy(value)
        except (TypeError, ValueError) as err:  # e.g. a big-endian array
            raise InputError(f"{path}: {what} cannot become a tensor ({_short(err)}); save them with "
                             "np.ascontiguousarray(x, dtype=np.float32) (or int64 for labels)") from err
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{path}: {what} is a {type(value).__name__}, not a tensor or array")
    return value


def _check_inputs(value: Any, what: str, path: Path) -> torch.Tensor:
    x = _as_tensor(value, what, path)
    if not torch.is_floating_point(x):
        raise InputError(
            f"{path}: {what} have dtype {x.dtype}; dpm needs float inputs, so convert and normalise "
            "them before saving (e.g. x.float() / 255)"
        )
    if x.dim() < 2:
        raise InputError(
            f"{path}: {what} have shape {tuple(x.shape)};"
            " expected a batch dimension first, e.g. (N, 1, 28, 28)"
        )
    if not torch.isfinite(x).all():
        raise InputError(f"{path}: {what} contain NaN or infinite values")
    # Models are float32; float64 or float16 inputs would fail in the first layer.
    return x.to(torch.float32).contiguous()


def _check_labels(value: Any, what: str, n: int, path: Path) -> torch.Tensor:
    y = _as_tensor(value, what, path)
    if y.dtype == torch.bool or torch.is_floating_point(y) or torch.is_complex(y):
        raise InputError(f"{path}: {what} have dtype {y.dtype}; expected integer class indices")
    if y.dim() != 1:
        raise InputError(
            f"{path}: {what} have shape {tuple(y.shape)};"
            " expected one class index per sample (N,)"
        )
    if len(y) != n:
        raise InputError(f"{path}: {what} hold {len(y)} entries for {n} inputs; they must have the same length")
    if len(y) and int(y.min()) < 0:
        raise InputError(f"{path}: {what} contain negative value {int(y.min())}; class indices must be >= 0")
    return y.to(torch.int64)


def load_tensors(
    path: str | Path, *, val_fraction: float, split_seed: int, num_samples: int | None
) -> DataBundle:
    path = Path(path)
    x, y, vx, vy = read_tensors(path)
    return from_tensors(f"tensors {path.name}", x, y, val_inputs=vx, val_labels=vy,
                        val_fraction=val_fraction, split_seed=split_seed, num_samples=num_samples)


def read_tensors(
    path: str | Path,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The file's checked (inputs, labels, val_inputs, val_labels), unsplit; absent parts are None."""
    path = Path(path)
    if path.suffix.lower() not in (".pt", ".pth", ".npz"):
        raise InputError(
            f"{path}: unsupported extension {path.suffix!r};"
            " save tensors as .pt (torch.save) or .npz (np.savez)"
        )
    if not path.is_file():
        raise InputError(f"{path}: no such data file")
    named = _named(_read(path), path)
    x = _check_inputs(named["inputs"], "inputs", path)
    y = _check_labels(named["labels"], "labels", len(x), path) if "labels" in named else None
    vx = vy = None
    if "val_inputs" in named:
        vx = _check_inputs(named["val_inputs"], "val_inputs", path)
        if vx.shape[1:] != x.shape[1:]:
            raise InputError(
                f"{path}: val_inputs samples have shape {tuple(vx.shape[1:])},"
                f" inputs {tuple(x.shape[1:])}"
            )
        if (y is None) != ("val_labels" not in named):
            raise InputError(f"{path}: give labels and val_labels together, or neither")
        vy = None if y is None else _check_labels(named["val_labels"], "val_labels", len(vx), path)
    elif "val_labels" in named:
        raise InputError(f"{path}: has val_labels but no val_inputs")
    return x, y, vx, vy
