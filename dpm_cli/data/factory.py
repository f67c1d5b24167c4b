"""Data from the user's own code: ``package.module:callable`` returning train and validation data.

The callable gets ``**kwargs`` and returns ``(train_dataset, val_dataset)`` or
``(train_loader, val_loader)``. From loaders dpm keeps only ``.dataset``: it re-batches every
dataset with its own batch size and seeded sampler, so runs stay repeatable and can be sharded
across ranks. Loaders with a custom sampler or collate_fn are refused, because dropping those
would silently change which samples are used or how they are batched.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import (BatchSampler, DataLoader, Dataset, IterableDataset, RandomSampler,
                              SequentialSampler, Subset, TensorDataset, default_collate)

from ..trust import resolve_factory
from ..errors import ConfigError, DpmError, InputError
from .bundle import DataBundle, shape_text
from .split import truncate_indices

# Counting classes means reading every label; beyond this many samples it is not worth the wait.
MAX_SCAN = 100_000


def _short(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _dataset_of(item: Any, role: str, name: str) -> Dataset:
    if isinstance(item, DataLoader):
        default_sampling = isinstance(item.sampler, (SequentialSampler, RandomSampler))
        if not default_sampling or type(item.batch_sampler) is not BatchSampler:
            raise InputError(
                f"data factory {name!r}: the {role} loader uses a custom sampler; dpm re-batches the dataset "
                "with its own sampler, so return the (Subset) datasets instead"
            )
        if item.collate_fn is not default_collate:
            raise InputError(
                f"data factory {name!r}: the {role} loader has a custom collate_fn, which dpm would drop; "
                "return datasets whose samples are (x, y) tensors instead"
            )
        item = item.dataset
    if isinstance(item, torch.Tensor):
        raise InputError(
            f"data factory {name!r}: the {role} data is a tensor; return datasets, e.g. "
            "(TensorDataset(x_train, y_train), TensorDataset(x_val, y_val))"
        )
    if isinstance(item, IterableDataset) or not isinstance(item, Dataset):
        raise InputError(
            f"data factory {name!r}: the {role} data is a {type(item).__name__}; "
            "expected a map-style torch Dataset (with __len__ and __getitem__) or a DataLoader over one"
        )
    try:
        size = len(item)  # type: ignore[arg-type]
    except TypeError as err:
        raise InputError(
            f"data factory {name!r}: the {role} dataset has no len();"
            " dpm needs map-style datasets"
        ) from err
    if size == 0:
        raise InputError(f"data factory {name!r}: the {role} dataset is empty")
    return item


def _split_sample(sample: Any, name: str) -> tuple[Any, Any]:
    """(x, y) for a labeled sample, (x, None) for a bare input."""
    if isinstance(sample, (tuple, list)):
        if len(sample) == 2:
            return sample[0], sample[1]
        if len(sample) == 1:
            return sample[0], None
        raise InputError(f"data factory {name!r}: samples are {len(sample)}-tuples; expected (x, y) or x")
    return sample, None


def _label_value(y: Any) -> int | None:
    """The class index of one label, or None if it is not an integer class index."""
    if isinstance(y, np.generic):
        y = y.item()
    elif isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if isinstance(y, torch.Tensor):
        if y.ndim != 0 or y.dtype == torch.bool or torch.is_floating_point(y) or torch.is_complex(y):
            return None
        return int(y)
    return y if isinstance(y, int) and not isinstance(y, bool) else None


def _labels_of(ds: Dataset) -> torch.Tensor | None:
    """All labels, without decoding inputs, when the dataset exposes them (.targets, TensorDataset)."""
    if isinstance(ds, Subset):
        inner = _labels_of(ds.dataset)
        return None if inner is None else inner[torch.as_tensor(ds.indices, dtype=torch.long)]
    if isinstance(ds, TensorDataset) and len(ds.tensors) == 2:
        return ds.tensors[1]
    targets = getattr(ds, "targets", None)
    if targets is not None:
        try:
            return torch.as_tensor(targets)
        except (TypeError, ValueError, RuntimeError):
            return None
    return None


def _count_classes(ds: Dataset, name: str) -> int | None:
    labels = _labels_of(ds)
    if labels is None:
        if len(ds) > MAX_SCAN:  # type: ignore[arg-type]
            return None
        values = [_label_value(_split_sample(ds[i], name)[1]) for i in range(len(ds))]  # type: ignore[arg-type]
        if None in values:
            bad = values.index(None)
            raise InputError(
                f"data factory {name!r}: sample {bad} has no integer class label;"
                " every sample needs one"
            )
        labels = torch.tensor(values)
    if len(labels) and int(labels.min()) < 0:
        raise InputError(
            f"data factory {name!r}: labels contain negative value {int(labels.min())};"
            " class indices must be >= 0"
        )
    return int(labels.max()) + 1


def load_factory(
    name: str | None, kwargs: dict[str, Any] | None, *, split_seed: int, num_samples: int | None
) -> DataBundle:
    if not name:
        raise ConfigError(
            ""
            "data source 'factory' needs a factory 'package.module:callable' (recipe data.factory)"
        )
    fn = resolve_factory(name)
    try:
        result = fn(**(kwargs or {}))
    except DpmError:
        raise
    except TypeError as err:
        raise ConfigError(
            ""
            f"data factory {name!r} rejected its arguments {kwargs or {}}: {_short(err)}"
        ) from err
    except Exception as err:  # the user's code failed, e.g. a missing data folder: one line, not a traceback
        raise InputError(f"data factory {name!r} failed: {type(err).__name__}: {_short(err)}") from err
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise InputError(
            f"data factory {name!r} returned {type(result).__name__}; "
            "it must return (train_dataset, val_dataset) or (train_loader, val_loader)"
        )
    train, val = (_dataset_of(item, role, name) for item, role in zip(result, ("train", "val")))
    if train is val:
        raise InputError(
            f"data factory {name!r} returned the same dataset for train and val;"
            " return separate splits"
        )

    x, y = _split_sample(train[0], name)
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise InputError(
            f"data factory {name!r}: inputs are {type(x).__name__}, not tensors; "
            "add a transform that converts them (e.g. torchvision transforms.ToTensor())"
        )
    shape = tuple(int(d) for d in x.shape)
    labeled = y is not None
    if labeled and _label_value(y) is None:
        raise InputError(
            f"data factory {name!r}: labels are {type(y).__name__} {y!r};"
            " expected integer class indices"
        )
    num_classes = _count_classes(train, name) if labeled else None

    total = len(train)  # type: ignore[arg-type]
    if num_samples is not None and num_samples < total:
        # Labels are used only when cheap to get, to keep a class-sorted dataset balanced.
        train = Subset(train, truncate_indices(total, num_samples, split_seed, _labels_of(train)).tolist())
    kept = len(train)  # type: ignore[arg-type]
    train_text = f"{kept} train" + (f" (of {total})" if kept < total else "")
    classes = "unlabeled" if not labeled else f"{num_classes} classes" if num_classes else "classes not counted"
    return DataBundle(
        train=train, val=val, num_classes=num_classes, input_shape=shape, labeled=labeled,
        description=f"factory {name}, {train_text} / {len(val)} val, "  # type: ignore[arg-type]
                    f"{shape_text(shape)}, {classes}",
    )
