"""`DataBundle` and the shared path from in-memory tensors to a split, truncated bundle."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from ..errors import InputError
from .split import split_indices, truncate_indices


@dataclass(frozen=True)
class DataBundle:
    """Training and validation data plus what the rest of dpm needs to know about it.

    Samples are ``(x, y)`` when ``labeled`` and a bare tensor ``x`` when not (calibration data).
    """

    train: Dataset
    val: Dataset
    num_classes: int | None  # None when unlabeled or too costly to count
    input_shape: tuple[int, ...]  # one sample, no batch dimension
    labeled: bool
    description: str
    synthetic: bool = False  # True only for random data, so the CLI can warn that results mean nothing
    collate: Any = None  # the DataLoader's collate_fn (None: torch's default), e.g. trimming token padding
    next_token: bool = False  # a language model's text, labelled with its next tokens (data/next_token.py)


class InputsDataset(Dataset):
    """Unlabeled tensors; yields ``x`` alone so code never mistakes a 1-tuple for ``(x, y)``."""

    def __init__(self, inputs: torch.Tensor) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.inputs[index]


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def make_dataset(inputs: torch.Tensor, labels: torch.Tensor | None) -> Dataset:
    return InputsDataset(inputs) if labels is None else TensorDataset(inputs, labels)


def from_tensors(
    name: str,
    inputs: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    val_fraction: float,
    split_seed: int,
    num_samples: int | None,
    val_inputs: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    num_classes: int | None = None,
    synthetic: bool = False,
) -> DataBundle:
    """Split (unless a validation set is given), truncate the training part, wrap as datasets.

    Inputs and labels must already be validated: float32 inputs (N, ...), int64 labels (N,) >= 0.
    """
    if val_inputs is None:
        if len(inputs) < 2:
            raise InputError(
                f"{name}: holds {len(inputs)} sample(s);"
                " a train/validation split needs at least 2"
            )
        train_idx, val_idx = split_indices(len(inputs), val_fraction, split_seed, labels)
        val_inputs = inputs[val_idx]
        val_labels = None if labels is None else labels[val_idx]
        inputs = inputs[train_idx]
        labels = None if labels is None else labels[train_idx]
    if len(inputs) == 0 or len(val_inputs) == 0:
        part = "training" if len(inputs) == 0 else "validation"
        raise InputError(f"{name}: the {part} set is empty; provide more samples")
    total = len(inputs)
    if num_samples is not None and num_samples < total:
        keep = truncate_indices(total, num_samples, split_seed, labels)
        inputs = inputs[keep]
        labels = None if labels is None else labels[keep]
    labeled = labels is not None
    if labeled and num_classes is None:
        num_classes = int(torch.cat([labels, val_labels]).max()) + 1
    shape = tuple(inputs.shape[1:])
    train_text = f"{len(inputs)} train" + (f" (of {total})" if len(inputs) < total else "")
    description = f"{name}, {train_text} / {len(val_inputs)} val, {shape_text(shape)}, " + (
        f"{num_classes} classes" if labeled else "unlabeled"
    )
    return DataBundle(
        train=make_dataset(inputs, labels),
        val=make_dataset(val_inputs, val_labels),
        num_classes=num_classes if labeled else None,
        input_shape=shape,
        labeled=labeled,
        description=description,
        synthetic=synthetic,
    )


def cap_validation(bundle: DataBundle, keep: int | None, seed: int) -> DataBundle:
    """`bundle` with a seeded (class-balanced) part of `keep` validation samples (`data.val_samples`):
    every evaluation, before, during and after training and `dpm check` on the recipe's data, reads
    the same ones. A large file's 10% held out was 40,000 texts, evaluated for minutes each time."""
    total = len(bundle.val)
    if keep is None or keep >= total:
        return bundle
    idx = truncate_indices(total, keep, seed, class_labels(bundle.val))
    described, found = re.subn(r"/ (\d+) val\b", rf"/ {keep} val (of \1)", bundle.description, count=1)
    return dataclasses.replace(bundle, val=take(bundle.val, idx),
                               description=described if found else f"{bundle.description}, {keep} of {total} val")


def class_labels(dataset: Dataset) -> torch.Tensor | None:
    """One class index per sample, when the dataset holds them as a tensor (for balanced subsets)."""
    labels = getattr(dataset, "labels", None)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) > 1:
        labels = dataset.tensors[1]
    ok = torch.is_tensor(labels) and labels.dim() == 1 and not labels.is_floating_point()
    return labels if ok else None


def take(dataset: Dataset, idx: torch.Tensor) -> Dataset:
    """The samples `idx` of `dataset`, as the same kind of dataset where dpm built it (token texts stay
    token texts, which next-token labels and decoder inputs are made from)."""
    from .text import TokenDataset

    if isinstance(dataset, TokenDataset):
        labels = None if dataset.labels is None else dataset.labels[idx]  # a tensor: per text, word or position
        return TokenDataset({k: v[idx] for k, v in dataset.encoded.items()}, labels)
    if isinstance(dataset, InputsDataset):
        return InputsDataset(dataset.inputs[idx])
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[idx] for t in dataset.tensors))
    return Subset(dataset, idx.tolist())
