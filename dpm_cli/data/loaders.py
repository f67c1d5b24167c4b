"""DataLoaders whose sample order is a function of (seed, epoch) only, optionally sharded across ranks.

``num_workers=0`` everywhere: data here is small and in memory, and worker processes would add
start-up cost and another source of non-determinism for no gain.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from ..errors import ConfigError, InputError
from .bundle import DataBundle


class SeededSampler(Sampler[int]):
    """Shuffles with ``torch.Generator`` seeded ``seed + epoch``: the order of epoch k never depends
    on how many epochs ran before (so a resumed run sees the same order). This is DistributedSampler's
    rule too, so one process and a world of size 1 see the same order.

    The epoch advances by itself after each pass, so a trainer that forgets ``set_epoch`` still
    reshuffles; calling ``set_epoch`` (as DDP requires anyway) pins it explicitly.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator()
        gen.manual_seed(self.seed + self.epoch)
        self.epoch += 1
        return iter(torch.randperm(self.size, generator=gen).tolist())


def _positive_int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def make_loaders(
    bundle: DataBundle,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    shuffle: bool = True,
    drop_last: bool = True,
    distributed: tuple[int, int] | None = None,
) -> tuple[DataLoader, DataLoader]:
    """Return (train_loader, val_loader).

    With ``distributed=(rank, world_size)`` the training set is sharded with DistributedSampler
    (equal, disjoint shards; the remainder is dropped so ranks stay in step). The validation loader
    is never sharded: every rank evaluates the whole set, so metrics are exact, not padded.
    A training set (or shard) smaller than one batch becomes a single batch rather than nothing.
    """
    batch_size = _positive_int(batch_size, "batch_size")
    eval_batch_size = _positive_int(eval_batch_size, "eval_batch_size")
    train: Dataset = bundle.train
    size = len(train)  # type: ignore[arg-type]
    sampler: Sampler[int]
    if distributed is not None:
        rank, world = distributed
        if not (isinstance(world, int) and isinstance(rank, int) and world >= 1 and 0 <= rank < world):
            raise ConfigError(
                "distributed must be (rank, world_size) with 0 <= rank < world_size,"
                f" got {distributed!r}"
            )
        if size < world:
            raise InputError(
                f"the training set has {size} samples, fewer than the {world} ranks;"
                " use more data or fewer ranks"
            )
        sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=shuffle, seed=int(seed),
                                     drop_last=True)
    elif shuffle:
        sampler = SeededSampler(size, seed)
    else:
        sampler = SequentialSampler(train)
    per_rank = len(sampler)  # type: ignore[arg-type]
    if per_rank == 0:
        raise InputError("the training set is empty; provide at least one sample")
    train_loader = DataLoader(train, batch_size=min(batch_size, per_rank), sampler=sampler,
                              drop_last=drop_last, num_workers=0, collate_fn=bundle.collate)
    val_loader = DataLoader(bundle.val, batch_size=eval_batch_size, shuffle=False, drop_last=False,
                            num_workers=0, collate_fn=bundle.collate)
    return train_loader, val_loader


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the shuffling epoch of a training loader from `make_loaders`, single-process or distributed."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)  # type: ignore[union-attr]


def check_labels_fit(bundle: DataBundle, num_outputs: int, hf: bool = False) -> None:
    """Fail early when labels exceed the model's logits (cross-entropy would crash mid-run otherwise)."""
    if bundle.labeled and bundle.num_classes is not None and bundle.num_classes > num_outputs:
        fix = ("a task head with that many labels (num_labels in the folder's config.json)" if hf
               else "a model built for this data (e.g. model.kwargs num_classes)")
        raise InputError(f"data has {bundle.num_classes} classes but the model outputs {num_outputs} logits; "
                         f"use {fix} or other data")
