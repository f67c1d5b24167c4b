"""The data `dpm check` evaluates on: the recipe's validation data, or `--data`.

`--data` takes what a recipe's data section names, through `dpm_cli.data` (no second reader):
- a `.pt`/`.pth`/`.npz` file: its `val_inputs`/`val_labels` when it has them, else every sample in it
  (a file given to a check is evaluation data; with validation arrays, the rest was for training);
- a source name (`mnist`, `digits`, `random`): its validation split, with the recipe's split settings;
- `package.module:callable`: the validation dataset the factory returns (with the recipe's data.kwargs
  when the recipe names the same factory).
Without `--data`, the recipe's data section is loaded as `dpm prune` loads it and its validation part
is used, so the numbers match the "after" accuracy `dpm prune` reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError

_FILE_SUFFIXES = (".pt", ".pth", ".npz")


@dataclass
class EvalData:
    dataset: Dataset
    description: str
    labeled: bool

    @property
    def samples(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def loader(self, batch_size: int) -> DataLoader:
        return DataLoader(self.dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def resolve_eval_data(data: str | None, recipe: Any | None) -> EvalData | None:
    """`--data` if given, else the recipe's validation data, else None (no data to evaluate on)."""
    from ..data import SOURCES, load_data

    section = recipe.data if recipe is not None else None
    split = {"val_fraction": section.val_fraction, "split_seed": section.split_seed} if section else {}
    if data is None:
        if section is None:
            return None
        bundle = load_data(section.source, path=section.path, factory=section.factory, kwargs=dict(section.kwargs),
                           num_samples=section.num_samples, **split)
        return _val_part(bundle, "the recipe's data")
    text = str(data).strip()
    if text.lower().endswith(_FILE_SUFFIXES) or Path(text).is_file():
        return _file(Path(text))
    if text.lower() in SOURCES:
        if text.lower() == "tensors":
            raise ConfigError("--data tensors: give the .pt or .npz file itself as --data")
        kwargs = dict(section.kwargs) if section is not None and section.source == text.lower() else None
        return _val_part(load_data(text.lower(), kwargs=kwargs if text.lower() == "random" else None, **split),
                         f"--data {text}")
    if ":" in text:
        kwargs = dict(section.kwargs) if section is not None and section.factory == text else {}
        return _val_part(load_data("factory", factory=text, kwargs=kwargs), f"--data {text}")
    raise ConfigError(f"--data {text!r}: no such file; give a .pt/.npz file, a data source "
                      f"({', '.join(s for s in SOURCES if s != 'tensors')}) or 'package.module:callable'")


def _val_part(bundle: Any, origin: str) -> EvalData:
    note = " (RANDOM data: the numbers mean nothing)" if bundle.synthetic else ""
    return EvalData(bundle.val, f"validation part of {bundle.description}{note}", bundle.labeled)


def _file(path: Path) -> EvalData:
    from ..data.bundle import make_dataset, shape_text
    from ..data.files import read_tensors

    x, y, vx, vy = read_tensors(path)
    if vx is not None:
        x, y, part = vx, vy, "val_inputs"
    else:
        part = "all samples"
    labels = f"{int(y.max()) + 1} classes" if y is not None and len(y) else "unlabeled"
    return EvalData(make_dataset(x, y), f"tensors {path.name} ({part}), {shape_text(tuple(x.shape[1:]))}, {labels}",
                    y is not None)
